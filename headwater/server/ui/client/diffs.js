/**
 * Diffs: what changed in a watched PState value, element by element, as the watch socket sends
 * them (`path` is relative to the watched path: map keys, record fields and list indexes):
 *
 * - `{op: "put", path, value}`: the value at `path` is now `value`;
 * - `{op: "remove", path}`: the map entry or record field at `path` is gone;
 * - `{op: "add" | "discard", path, element}`: the set at `path` gained / lost `element`;
 * - `{op: "append", path, values}`: the list at `path` grew by `values` at its end;
 * - `{op: "truncate", path, length}`: the list at `path` now has its first `length` elements;
 * - `{op: "resync", value}`: start again from `value`.
 *
 * Values are in the API's JSON encoding: a map is an object (its keys strings, `{"1": 100}`), a
 * record an object, a list an array, a set an array of its elements. `applyDiff` is the
 * server's `headwater.pstate.diffs.apply`, except that it never changes its argument: it returns
 * a new value that shares whatever did not change, so a UI framework that compares by identity
 * sees every change.
 */
import { HeadwaterError } from "./errors.js";
/** `value` with `diff` applied, as a new value; `value` itself is left as it was. */
export function applyDiff(value, diff) {
    return applyDiffs(value, [diff]);
}
/**
 * `value` with `diffs` applied in order (a commit's diffs), as a new value; `value` is left as
 * it was. Each container on a changed path is copied at most once, however many diffs touch it.
 * A diff that does not fit the value (its parent missing, an op on the wrong kind of
 * collection) throws a `HeadwaterError` with code `diff_error`.
 */
export function applyDiffs(value, diffs) {
    const copies = new WeakSet(); // the containers made for this call: safe to change in place
    for (const diff of diffs)
        value = applyOne(value, diff, copies);
    return value;
}
function applyOne(value, diff, copies) {
    if (diff.op === "resync")
        return diff.value;
    const path = diff.path ?? [];
    if (diff.op === "put" && path.length === 0)
        return diff.value;
    if (diff.op === "put" || diff.op === "remove") {
        if (path.length === 0)
            throw misfit(diff, "a remove needs a path");
        const [root, parent] = writable(value, path.slice(0, -1), diff, copies);
        const last = path[path.length - 1];
        if (Array.isArray(parent)) {
            const index = listIndex(parent, last, diff);
            if (diff.op === "put")
                parent[index] = diff.value;
            else
                parent.splice(index, 1);
        }
        else if (diff.op === "put") {
            parent[objectKey(last)] = diff.value;
        }
        else {
            delete parent[objectKey(last)];
        }
        return root;
    }
    const [root, target] = writable(value, path, diff, copies);
    if (!Array.isArray(target))
        throw misfit(diff, "the target is not a set or list (a JSON array)");
    switch (diff.op) {
        case "add":
            if (!target.some((e) => sameElement(e, diff.element)))
                target.push(diff.element);
            break;
        case "discard": {
            const index = target.findIndex((e) => sameElement(e, diff.element));
            if (index >= 0)
                target.splice(index, 1);
            break;
        }
        case "append":
            target.push(...diff.values);
            break;
        case "truncate":
            if (diff.length < target.length)
                target.length = diff.length;
            break;
        default:
            throw misfit(diff, `unknown op ${JSON.stringify(diff.op)}`);
    }
    return root;
}
/** A copy of `value` in which every container along `path` is this call's own; the root and the end. */
function writable(value, path, diff, copies) {
    const root = own(value, diff, copies);
    let node = root;
    for (const step of path) {
        const key = Array.isArray(node) ? listIndex(node, step, diff) : objectKey(step);
        const child = own(node[key], diff, copies);
        node[key] = child;
        node = child;
    }
    return [root, node];
}
function own(value, diff, copies) {
    if (value === null || typeof value !== "object") {
        throw misfit(diff, `the path reaches ${value === undefined ? "nothing" : JSON.stringify(value)}, not a collection`);
    }
    if (copies.has(value))
        return value;
    const copy = Array.isArray(value) ? value.slice() : { ...value };
    copies.add(copy);
    return copy;
}
/** A map key or record field as the JSON object key the server writes (numbers as their digits). */
function objectKey(step) {
    if (typeof step === "string")
        return step;
    if (typeof step === "number")
        return String(step);
    return JSON.stringify(step);
}
function listIndex(list, step, diff) {
    if (typeof step !== "number" || !Number.isInteger(step)) {
        throw misfit(diff, `a list index must be an integer, not ${JSON.stringify(step)}`);
    }
    const index = step < 0 ? list.length + step : step; // negative like Python
    if (index < 0 || index >= list.length)
        throw misfit(diff, `list index ${step} is out of range (length ${list.length})`);
    return index;
}
function sameElement(a, b) {
    // Set elements are keys: scalars, or tuples of them (arrays), so their JSON says whether they are equal.
    return a === b || (typeof a === "object" && typeof b === "object" && JSON.stringify(a) === JSON.stringify(b));
}
function misfit(diff, why) {
    return new HeadwaterError("diff_error", `cannot apply ${JSON.stringify(diff)}: ${why}`);
}
