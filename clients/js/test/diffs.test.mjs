// applyDiff: each op, never changing its argument, sharing what did not change; and, on random
// values, exactly the server's diff semantics (its `diff(old, new)` applied to `old` gives `new`).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { promisify } from "node:util";

import { applyDiff, applyDiffs, HeadwaterError } from "../dist/index.js";
import { PYTHON } from "./server.mjs";

/** `value` frozen all the way down: applying a diff to it throws if anything tries to change it. */
function frozen(value) {
  if (value && typeof value === "object") {
    for (const child of Object.values(value)) frozen(child);
    Object.freeze(value);
  }
  return value;
}

test("each op, on a frozen value", () => {
  const room = frozen({ scores: { ann: 5, 7: 1 }, tags: ["x"], chat: ["a", "b", "c"], title: "t" });
  assert.deepEqual(applyDiff(room, { op: "put", path: ["scores", "bo"], value: 3 }).scores, { ann: 5, bo: 3, 7: 1 });
  assert.deepEqual(applyDiff(room, { op: "put", path: ["scores", 7], value: 2 }).scores, { ann: 5, 7: 2 });
  assert.deepEqual(applyDiff(room, { op: "remove", path: ["scores", "ann"] }).scores, { 7: 1 });
  assert.equal("title" in applyDiff(room, { op: "remove", path: ["title"] }), false);
  assert.deepEqual(applyDiff(room, { op: "add", path: ["tags"], element: "y" }).tags, ["x", "y"]);
  assert.deepEqual(applyDiff(room, { op: "add", path: ["tags"], element: "x" }).tags, ["x"]);
  assert.deepEqual(applyDiff(room, { op: "discard", path: ["tags"], element: "x" }).tags, []);
  assert.deepEqual(applyDiff(room, { op: "discard", path: ["tags"], element: "z" }).tags, ["x"]);
  assert.deepEqual(applyDiff(room, { op: "append", path: ["chat"], values: ["d", "e"] }).chat, ["a", "b", "c", "d", "e"]);
  assert.deepEqual(applyDiff(room, { op: "truncate", path: ["chat"], length: 1 }).chat, ["a"]);
  assert.deepEqual(applyDiff(room, { op: "put", path: ["chat", -1], value: "z" }).chat, ["a", "b", "z"]);
  assert.deepEqual(applyDiff(room, { op: "put", path: [], value: 1 }), 1);
  assert.deepEqual(applyDiff(room, { op: "resync", value: { title: "u" } }), { title: "u" });
  assert.deepEqual(applyDiff([[1, "a"]], { op: "discard", path: [], element: [1, "a"] }), []); // tuple elements
});

test("a new object on the changed path, the same objects elsewhere", () => {
  const room = frozen({ scores: { ann: 5 }, chat: ["a"], deep: { x: { y: 1 } } });
  const after = applyDiff(room, { op: "put", path: ["deep", "x", "y"], value: 2 });
  assert.notEqual(after, room);
  assert.notEqual(after.deep, room.deep);
  assert.notEqual(after.deep.x, room.deep.x);
  assert.equal(after.scores, room.scores);
  assert.equal(after.chat, room.chat);
  // One commit's diffs copy each container once, and still leave the value before untouched.
  const commit = applyDiffs(room, [{ op: "append", path: ["chat"], values: ["b"] },
    { op: "append", path: ["chat"], values: ["c"] }, { op: "put", path: ["scores", "bo"], value: 1 }]);
  assert.deepEqual(commit, { scores: { ann: 5, bo: 1 }, chat: ["a", "b", "c"], deep: { x: { y: 1 } } });
  assert.equal(commit.deep, room.deep);
});

test("a diff that does not fit is a diff_error", () => {
  for (const [value, diff] of [
    [null, { op: "put", path: ["a"], value: 1 }],
    [{ a: 1 }, { op: "add", path: ["a"], element: 1 }],
    [{ a: {} }, { op: "append", path: ["a"], values: [1] }],
    [{ a: [1] }, { op: "put", path: ["a", 3], value: 1 }],
    [{ a: [1] }, { op: "put", path: ["a", "x"], value: 1 }],
    [{}, { op: "truncate", path: ["missing"], length: 0 }],
  ]) {
    assert.throws(() => applyDiff(frozen(value), diff), (e) => e instanceof HeadwaterError && e.code === "diff_error",
      JSON.stringify(diff));
  }
});

test("random values: the server's diffs from old to new, applied here to old, give new", async () => {
  const script = fileURLToPath(new URL("./random_diffs.py", import.meta.url));
  const cwd = fileURLToPath(new URL("../../../", import.meta.url));
  const { stdout } = await promisify(execFile)(PYTHON, [script, "20251204", "500"], { cwd, maxBuffer: 16 * 1024 * 1024 });
  const cases = stdout.trim().split("\n").map((line) => JSON.parse(line));
  assert.equal(cases.length, 500);
  let fine = 0;
  for (const { old, new: expected, diffs } of cases) {
    const before = JSON.stringify(old);
    const whole = applyDiffs(old, diffs);
    const oneByOne = diffs.reduce((value, diff) => applyDiff(value, diff), old);
    assert.deepEqual(unordered(whole), unordered(expected), JSON.stringify({ old, diffs }));
    assert.deepEqual(unordered(oneByOne), unordered(expected));
    assert.equal(JSON.stringify(old), before, "the value before was changed");
    if (diffs.some((diff) => diff.path.length > 0)) fine++;
  }
  assert.ok(fine > 100, `only ${fine} cases had element diffs`);
});

/** Sets (only ever under a "tags" key in the random values) compared without their order. */
function unordered(value) {
  if (Array.isArray(value)) return value.map(unordered);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, child]) =>
      [key, key === "tags" && Array.isArray(child) ? [...child].sort() : unordered(child)]));
  }
  return value;
}
