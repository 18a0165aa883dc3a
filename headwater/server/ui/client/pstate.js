/**
 * `client.pstate(module, name)`: a path into a PState, built step by step (`.at(...steps)`,
 * `.key(k)`), and the reads the HTTP API offers at its end. A step is a map key, a record field
 * or a list index, in the API's JSON encoding (a UUID or a datetime as its string, a tuple as an
 * array); the server converts each to the type its schema declares.
 */
import { q } from "./client.js";
import { Subscription } from "./watch.js";
/** The navigators of the HTTP API, for `select` and `selectOne`. */
export const Nav = {
    ALL: { nav: "all" },
    MAP_KEYS: { nav: "map_keys" },
    MAP_VALS: { nav: "map_vals" },
    FIRST: { nav: "first" },
    LAST: { nav: "last" },
    SIZE: { nav: "size" },
    nth: (index) => ({ nav: "nth", index }),
    must: (key) => ({ nav: "must", key }),
    range: (options = {}) => ({ nav: "range", ...options }),
};
/** The most elements one answer holds (the server's page size). */
export const READ_PAGE_MAX = 10_000;
export class PStateView {
    client;
    module;
    pstate;
    task;
    path;
    base;
    constructor(client, module, pstate, task, path) {
        this.client = client;
        this.module = module;
        this.pstate = pstate;
        this.task = task;
        this.path = path;
        this.base = `/api/modules/${q(module)}/pstates/${q(pstate)}`;
    }
    /** The view further down `steps` (map keys, record fields, list indexes); this one is unchanged. */
    at(...steps) {
        return new PStateView(this.client, this.module, this.pstate, this.task, [...this.path, ...steps]);
    }
    /** The view one step down: `view.key(k)` is `view.at(k)`. */
    key(step) {
        return this.at(step);
    }
    /** The value at the path, or `undefined` when nothing is there. A collection of more than 10,000 elements throws `read_too_large`: page it with `keys`/`items`/`slice`. */
    async get() {
        const answer = await this.read("get");
        return answer.found === false ? undefined : answer.value;
    }
    /** Whether anything is at the path. */
    async exists() {
        return (await this.read("exists")).value;
    }
    /** The number of elements of the map, set or list at the path. */
    async size() {
        return (await this.read("size")).value;
    }
    /** A map's keys (or a set's elements) in key order, from `start` up to `stop`, following pages. */
    async keys(options = {}) {
        return (await this.range("keys", options));
    }
    /** A map's values in key order. */
    async values(options = {}) {
        return (await this.range("values", options));
    }
    /** A map's `[key, value]` pairs in key order. */
    async items(options = {}) {
        return (await this.range("items", options));
    }
    /** A list's elements from index `start` to `stop` (negative like Python), following pages. */
    async slice(start, stop) {
        const found = [];
        for (;;) {
            const answer = await this.read("slice", { start, stop });
            found.push(...answer.value);
            if (!answer.next || answer.next.start === undefined)
                return found;
            start = answer.next.start;
        }
    }
    /** Whether the set (or map) at the path holds `element`. */
    async contains(element) {
        return (await this.read("contains", { element: JSON.stringify(element) })).value;
    }
    /** The values the navigators (`Nav`, or plain keys) reach from the path (at most 10,000). */
    async select(...navigators) {
        return (await this.read("select", {}, [...this.path, ...navigators])).value;
    }
    /** The one value the navigators reach (or null). */
    async selectOne(...navigators) {
        return (await this.read("select_one", {}, [...this.path, ...navigators])).value;
    }
    /**
     * Watch the value at the path: resolves once the first value arrived (or rejects with the
     * server's error, e.g. `path_error`), then keeps `subscription.value` up to date with each
     * commit's diffs; see `Subscription`.
     */
    watch(options = {}) {
        const url = this.client.socketUrl(`${this.base}/watch`, { path: JSON.stringify(this.path), task: this.task });
        return Subscription.open(this.client.WebSocket, url, `${this.module}.${this.pstate} at ${JSON.stringify(this.path)}`, options);
    }
    async range(op, options) {
        let { start, stop } = options;
        const found = [];
        while (options.limit === undefined || found.length < options.limit) {
            const page = options.limit === undefined ? READ_PAGE_MAX : Math.min(READ_PAGE_MAX, options.limit - found.length);
            const answer = await this.read(op, {
                start: start === undefined ? undefined : JSON.stringify(start),
                stop: stop === undefined ? undefined : JSON.stringify(stop),
                limit: page,
                reverse: options.reverse ? "true" : "false",
            });
            found.push(...answer.value);
            if (!answer.next)
                break;
            if ("start" in answer.next)
                start = answer.next.start;
            if ("stop" in answer.next)
                stop = answer.next.stop;
        }
        return found;
    }
    async read(op, params = {}, path = this.path) {
        return (await this.client.request("GET", `${this.base}/${op}`, {
            params: { path: JSON.stringify(path), task: this.task, ...params },
        }));
    }
}
