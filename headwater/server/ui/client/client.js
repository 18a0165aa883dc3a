/**
 * `connect(url, options)`: a client of a headwater server's HTTP API, with the names of the
 * Python client (`hw.connect`): `depot(m, d).append(...)`, `pstate(m, p).at(...).get()`,
 * `query(m, q)(...args)`, and `watch()` on a PState path. It uses the platform's `fetch` and
 * `WebSocket` (or the ones passed in the options) and has no other dependency.
 */
import { HeadwaterError } from "./errors.js";
import { PStateView } from "./pstate.js";
import { Tail } from "./tail.js";
/** How much longer than a call's own timeout the client waits, so that the server's timeout error arrives. */
export const TIMEOUT_MARGIN_S = 5;
/** The default bound on the wait for an answer. */
export const REQUEST_TIMEOUT_S = 30;
export function connect(url, options = {}) {
    return new Client(url, options);
}
export class Client {
    url;
    token;
    WebSocket;
    fetchFn;
    timeoutS;
    constructor(url, options = {}) {
        if (!/^https?:\/\//.test(url))
            throw new TypeError(`connect() needs an http(s):// URL, not ${JSON.stringify(url)}`);
        this.url = url.replace(/\/+$/, "");
        this.token = options.token;
        // The global fetch is bound to the global object: a browser's throws "Illegal invocation" when called as a method of another object.
        const fetchFn = options.fetch ?? globalThis.fetch?.bind(globalThis);
        if (!fetchFn)
            throw new TypeError("this platform has no fetch: pass one as connect(url, { fetch })");
        this.fetchFn = fetchFn;
        this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
        this.timeoutS = options.timeoutS ?? REQUEST_TIMEOUT_S;
    }
    /** A client of depot `depot` of `module`. */
    depot(module, depot) {
        return new Depot(this, module, depot);
    }
    /** A path builder over PState `pstate` of `module`; `task` reads a per-task PState (or one task's part). */
    pstate(module, pstate, options = {}) {
        return new PStateView(this, module, pstate, options.task, []);
    }
    /** The query `name` of `module` as an async function of its arguments (checked against its type hints on the server). */
    query(module, name, options = {}) {
        const path = `/api/modules/${q(module)}/queries/${q(name)}`;
        const timeoutS = options.timeoutS ?? REQUEST_TIMEOUT_S;
        return async (...args) => {
            const answer = await this.request("POST", path, { body: { args }, params: { timeout: timeoutS }, timeoutS });
            return answer.value;
        };
    }
    /** The server's description of every module: depots, PStates (schemas), topologies, queries. */
    async modules() {
        return (await this.request("GET", "/api/modules")).modules;
    }
    /** The WebSocket URL of `path`, with the token as `?token=` (browsers cannot send headers on a socket). */
    socketUrl(path, params) {
        const all = { ...params, token: this.token };
        return this.url.replace(/^http/, "ws") + path + "?" + query(all);
    }
    /** Send one API request; the decoded JSON answer, or a thrown `HeadwaterError`. */
    async request(method, path, options = {}) {
        const target = this.url + path + (options.params ? "?" + query(options.params) : "");
        const headers = { ...options.headers };
        if (this.token)
            headers.Authorization = `Bearer ${this.token}`;
        let body;
        if (options.body !== undefined) {
            headers["Content-Type"] = "application/json";
            body = JSON.stringify(options.body);
        }
        const waitS = options.timeoutS === undefined ? this.timeoutS : options.timeoutS + TIMEOUT_MARGIN_S;
        const abort = new AbortController();
        let timer;
        // The bound holds even for a fetch that ignores its signal: the wait races a timer.
        const late = new Promise((_, reject) => {
            timer = setTimeout(() => {
                abort.abort();
                reject(new HeadwaterError("timeout", `no answer from ${this.url}${path} within ${waitS} s; an append may `
                    + "still land: retry it with the same idempotencyKey to be sure it lands once"));
            }, waitS * 1000);
        });
        let response;
        let text;
        try {
            [response, text] = await Promise.race([this.answer(target, { method, headers, body, signal: abort.signal }), late]);
        }
        catch (e) {
            if (e instanceof HeadwaterError)
                throw e;
            const cause = e.cause;
            const why = cause ? `${e.message}: ${cause.code ?? cause.message}` : e.message;
            throw new HeadwaterError("unavailable", `cannot reach headwater at ${this.url} (${method} ${path}): ${why}; `
                + "is the server running there? An append without an idempotencyKey may have landed");
        }
        finally {
            clearTimeout(timer);
        }
        let parsed = null;
        try {
            parsed = text ? JSON.parse(text) : null;
        }
        catch {
            throw new HeadwaterError("bad_response", `HTTP ${response.status} from ${target} is not JSON: ${text.slice(0, 300)}`, response.status);
        }
        if (!response.ok) {
            if (parsed && typeof parsed === "object" && "error" in parsed) {
                throw HeadwaterError.fromBody(parsed, response.status);
            }
            throw new HeadwaterError("bad_response", `HTTP ${response.status} from ${target}: ${text.slice(0, 300)}`, response.status);
        }
        return parsed;
    }
    async answer(target, init) {
        const response = await this.fetchFn(target, init);
        return [response, await response.text()];
    }
}
export class Depot {
    client;
    module;
    name;
    path;
    constructor(client, module, name) {
        this.client = client;
        this.module = module;
        this.name = name;
        this.path = `/api/modules/${q(module)}/depots/${q(name)}`;
    }
    /** Append `event`; with `ack: "full"` (the default) the answer waits until every stream topology processed it. */
    async append(event, options = {}) {
        const timeoutS = options.timeoutS ?? REQUEST_TIMEOUT_S;
        const headers = {};
        if (options.idempotencyKey !== undefined)
            headers["Idempotency-Key"] = options.idempotencyKey;
        const answer = await this.client.request("POST", `${this.path}/append`, {
            body: event, headers, params: { ack: options.ack ?? "full", timeout: timeoutS }, timeoutS,
        });
        return appendResult(answer);
    }
    /** Append several events (at most 10,000) in one request; their results in input order. */
    async appendMany(events, options = {}) {
        const timeoutS = options.timeoutS ?? REQUEST_TIMEOUT_S;
        const answer = await this.client.request("POST", `${this.path}/append-many`, {
            body: events, params: { ack: options.ack ?? "full", timeout: timeoutS }, timeoutS,
        });
        return answer.results.map(appendResult);
    }
    /** Every partition's `start_offset` and `end_offset`. */
    async partitions() {
        return (await this.client.request("GET", `${this.path}/partitions`)).partitions;
    }
    /**
     * Follow the depot's new records, pushed by the server as they are committed: resolves once
     * the socket is open, then calls `onRecords(records, partition)` and yields each record to
     * `for await`; `from` says where each partition starts (default: new records only). See `Tail`.
     */
    tail(options = {}) {
        return Tail.open(this.client.WebSocket, (from) => this.client.socketUrl(`${this.path}/tail`, { from }), `depot ${this.module}.${this.name}`, options);
    }
    /** Records of `partition` with start <= offset < stop (at most `limit`, default 100), or its `last` N. */
    async read(partition, options = {}) {
        const answer = await this.client.request("GET", `${this.path}/partitions/${partition}/records`, { params: options });
        return answer.records;
    }
}
function appendResult(answer) {
    const body = answer;
    return { partition: body.partition ?? null, offset: body.offset ?? null, results: body.results ?? {} };
}
export function q(name) {
    return encodeURIComponent(name);
}
function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
        if (value !== undefined && value !== null)
            search.set(key, String(value));
    }
    return search.toString();
}
