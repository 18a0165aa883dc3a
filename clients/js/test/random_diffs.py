"""Random (old, new) value pairs and the diffs the server computes between them, as JSON lines.

`python random_diffs.py SEED COUNT` prints COUNT lines `{"old", "new", "diffs"}`: the values in the
API's JSON encoding (a set only ever under a map key "tags", so the JavaScript test knows to
compare it unordered) and `headwater.pstate.diffs.diff(old, new)` encoded as the watch socket
sends it. The JavaScript client must turn `old` into `new` by applying `diffs`.
"""

import random
import sys

import msgspec

from headwater.pstate.diffs import diff
from headwater.server.watch import encode_diff


def scalar(rng: random.Random) -> object:
    return rng.choice([rng.randint(-5, 5), rng.choice(["a", "b", "c"]), None, True, 1.5])


def value(rng: random.Random, depth: int) -> object:
    kind = rng.choice(["scalar", "map", "int_map", "list", "record"] if depth else ["scalar"])
    if kind == "scalar":
        return scalar(rng)
    if kind == "map":
        return {rng.choice("pqrs"): value(rng, depth - 1) for _ in range(rng.randint(0, 3))}
    if kind == "int_map":
        return {rng.randint(0, 20): value(rng, depth - 1) for _ in range(rng.randint(0, 3))}
    if kind == "list":
        return [value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {"title": scalar(rng), "tags": {rng.choice("xyzw") for _ in range(rng.randint(0, 3))},
            "chat": [rng.choice("mn") for _ in range(rng.randint(0, 3))]}


def mutated(rng: random.Random, old: object, depth: int) -> object:
    """`old` with a few changes deep inside, so the diffs are element diffs and not one put."""
    if rng.random() < 0.2 or depth == 0:
        return value(rng, depth)
    if isinstance(old, dict):
        new = dict(old)
        for key in list(new):
            if rng.random() < 0.3:
                del new[key]
            elif rng.random() < 0.5:
                new[key] = mutated(rng, new[key], depth - 1)
        if rng.random() < 0.5 and not isinstance(old.get("tags"), set):
            int_keys = any(isinstance(k, int) for k in old)
            new[rng.randint(0, 20) if int_keys else rng.choice("pqrs")] = value(rng, depth - 1)
        return new
    if isinstance(old, list):
        new = [mutated(rng, item, depth - 1) if rng.random() < 0.3 else item for item in old]
        return new[: rng.randint(0, len(new))] if rng.random() < 0.3 else new + [value(rng, 0)] * rng.randint(0, 2)
    if isinstance(old, set):
        return {e for e in old if rng.random() < 0.6} | {rng.choice("xyzw") for _ in range(rng.randint(0, 2))}
    return value(rng, depth)


def main() -> None:
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    encoder = msgspec.json.Encoder()
    for _ in range(count):
        old = value(rng, 3)
        new = mutated(rng, old, 3)
        changes = [encode_diff(change) for change in diff(old, new)]
        sys.stdout.write(encoder.encode({"old": old, "new": new, "diffs": changes}).decode() + "\n")


if __name__ == "__main__":
    main()
