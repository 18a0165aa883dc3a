/**
 * `connect(url, options)`: a client of a headwater server's HTTP API, with the names of the
 * Python client (`hw.connect`): `depot(m, d).append(...)`, `pstate(m, p).at(...).get()`,
 * `query(m, q)(...args)`, and `watch()` on a PState path. It uses the platform's `fetch` and
 * `WebSocket` (or the ones passed in the options) and has no other dependency.
 */

import { HeadwaterError } from "./errors.js";
import { PStateView } from "./pstate.js";
import { Tail, type TailOptions } from "./tail.js";

/** The least a WebSocket constructor must offer: the browser's, Node 22's or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code?: number; reason?: string }) => void) | null;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export type FetchFunction = (input: string, init?: RequestInit) => Promise<Response>;

export interface ConnectOptions {
  /** A bearer token (`Authorization: Bearer ...`; `?token=` on watch sockets). */
  token?: string;
  /** The fetch to use (default: the global one). */
  fetch?: FetchFunction;
  /** The WebSocket constructor for watches (default: the global one; Node 20 has none: pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /** The longest wait for an answer to a call without a timeout of its own (default 30). */
  timeoutS?: number;
}

export type Ack = "full" | "append" | "none";

export interface AppendOptions {
  /** When the answer comes: every stream topology processed it (`full`, the default), it is durable (`append`), or at once (`none`). */
  ack?: Ack;
  /** A retry with the same key returns the first append's result and appends nothing. */
  idempotencyKey?: string;
  /** The server's wait for the ack, in seconds (default 30, at most 300). */
  timeoutS?: number;
}

export interface AppendResult {
  /** Where the event is; null with `ack: "none"`. */
  partition: number | null;
  offset: number | null;
  /** What each stream topology returned, by topology name (`{}` unless `ack: "full"`). */
  results: Record<string, unknown>;
}

export interface PartitionInfo {
  partition: number;
  start_offset: number;
  end_offset: number;
}

export interface DepotRecord<E = unknown> {
  partition: number;
  offset: number;
  timestamp: string;
  event: E;
}

export interface RequestOptions {
  params?: Record<string, string | number | boolean | undefined | null>;
  body?: unknown;
  headers?: Record<string, string>;
  /** The server-side wait the request asks for (`?timeout=`): the client waits that long plus a margin. */
  timeoutS?: number;
}

/** How much longer than a call's own timeout the client waits, so that the server's timeout error arrives. */
export const TIMEOUT_MARGIN_S = 5;
/** The default bound on the wait for an answer. */
export const REQUEST_TIMEOUT_S = 30;

export function connect(url: string, options: ConnectOptions = {}): Client {
  return new Client(url, options);
}

export class Client {
  readonly url: string;
  readonly token: string | undefined;
  readonly WebSocket: WebSocketConstructor | undefined;
  private readonly fetchFn: FetchFunction;
  private readonly timeoutS: number;

  constructor(url: string, options: ConnectOptions = {}) {
    if (!/^https?:\/\//.test(url)) throw new TypeError(`connect() needs an http(s):// URL, not ${JSON.stringify(url)}`);
    this.url = url.replace(/\/+$/, "");
    this.token = options.token;
    // The global fetch is bound to the global object: a browser's throws "Illegal invocation" when called as a method of another object.
    const fetchFn = options.fetch ?? (globalThis.fetch?.bind(globalThis) as FetchFunction | undefined);
    if (!fetchFn) throw new TypeError("this platform has no fetch: pass one as connect(url, { fetch })");
    this.fetchFn = fetchFn;
    this.WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.timeoutS = options.timeoutS ?? REQUEST_TIMEOUT_S;
  }

  /** A client of depot `depot` of `module`. */
  depot(module: string, depot: string): Depot {
    return new Depot(this, module, depot);
  }

  /** A path builder over PState `pstate` of `module`; `task` reads a per-task PState (or one task's part). */
  pstate(module: string, pstate: string, options: { task?: number } = {}): PStateView {
    return new PStateView(this, module, pstate, options.task, []);
  }

  /** The query `name` of `module` as an async function of its arguments (checked against its type hints on the server). */
  query<R = unknown>(module: string, name: string, options: { timeoutS?: number } = {}): (...args: unknown[]) => Promise<R> {
    const path = `/api/modules/${q(module)}/queries/${q(name)}`;
    const timeoutS = options.timeoutS ?? REQUEST_TIMEOUT_S;
    return async (...args: unknown[]) => {
      const answer = await this.request("POST", path, { body: { args }, params: { timeout: timeoutS }, timeoutS });
      return (answer as { value: R }).value;
    };
  }

  /** The server's description of every module: depots, PStates (schemas), topologies, queries. */
  async modules(): Promise<Array<Record<string, unknown>>> {
    return ((await this.request("GET", "/api/modules")) as { modules: Array<Record<string, unknown>> }).modules;
  }

  /** The WebSocket URL of `path`, with the token as `?token=` (browsers cannot send headers on a socket). */
  socketUrl(path: string, params: Record<string, string | number | undefined>): string {
    const all = { ...params, token: this.token };
    return this.url.replace(/^http/, "ws") + path + "?" + query(all);
  }

  /** Send one API request; the decoded JSON answer, or a thrown `HeadwaterError`. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<unknown> {
    const target = this.url + path + (options.params ? "?" + query(options.params) : "");
    const headers: Record<string, string> = { ...options.headers };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    const waitS = options.timeoutS === undefined ? this.timeoutS : options.timeoutS + TIMEOUT_MARGIN_S;
    const abort = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    // The bound holds even for a fetch that ignores its signal: the wait races a timer.
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(new HeadwaterError("timeout", `no answer from ${this.url}${path} within ${waitS} s; an append may `
          + "still land: retry it with the same idempotencyKey to be sure it lands once"));
      }, waitS * 1000);
    });
    let response: Response;
    let text: string;
    try {
      [response, text] = await Promise.race([this.answer(target, { method, headers, body, signal: abort.signal }), late]);
    } catch (e) {
      if (e instanceof HeadwaterError) throw e;
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = cause ? `${(e as Error).message}: ${cause.code ?? cause.message}` : (e as Error).message;
      throw new HeadwaterError("unavailable", `cannot reach headwater at ${this.url} (${method} ${path}): ${why}; `
        + "is the server running there? An append without an idempotencyKey may have landed");
    } finally {
      clearTimeout(timer);
    }
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      throw new HeadwaterError("bad_response", `HTTP ${response.status} from ${target} is not JSON: ${text.slice(0, 300)}`,
        response.status);
    }
    if (!response.ok) {
      if (parsed && typeof parsed === "object" && "error" in parsed) {
        throw HeadwaterError.fromBody(parsed as Record<string, unknown>, response.status);
      }
      throw new HeadwaterError("bad_response", `HTTP ${response.status} from ${target}: ${text.slice(0, 300)}`,
        response.status);
    }
    return parsed;
  }

  private async answer(target: string, init: RequestInit): Promise<[Response, string]> {
    const response = await this.fetchFn(target, init);
    return [response, await response.text()];
  }
}

export class Depot {
  private readonly path: string;

  constructor(readonly client: Client, readonly module: string, readonly name: string) {
    this.path = `/api/modules/${q(module)}/depots/${q(name)}`;
  }

  /** Append `event`; with `ack: "full"` (the default) the answer waits until every stream topology processed it. */
  async append(event: unknown, options: AppendOptions = {}): Promise<AppendResult> {
    const timeoutS = options.timeoutS ?? REQUEST_TIMEOUT_S;
    const headers: Record<string, string> = {};
    if (options.idempotencyKey !== undefined) headers["Idempotency-Key"] = options.idempotencyKey;
    const answer = await this.client.request("POST", `${this.path}/append`, {
      body: event, headers, params: { ack: options.ack ?? "full", timeout: timeoutS }, timeoutS,
    });
    return appendResult(answer);
  }

  /** Append several events (at most 10,000) in one request; their results in input order. */
  async appendMany(events: unknown[], options: Omit<AppendOptions, "idempotencyKey"> = {}): Promise<AppendResult[]> {
    const timeoutS = options.timeoutS ?? REQUEST_TIMEOUT_S;
    const answer = await this.client.request("POST", `${this.path}/append-many`, {
      body: events, params: { ack: options.ack ?? "full", timeout: timeoutS }, timeoutS,
    });
    return (answer as { results: unknown[] }).results.map(appendResult);
  }

  /** Every partition's `start_offset` and `end_offset`. */
  async partitions(): Promise<PartitionInfo[]> {
    return ((await this.client.request("GET", `${this.path}/partitions`)) as { partitions: PartitionInfo[] }).partitions;
  }

  /**
   * Follow the depot's new records, pushed by the server as they are committed: resolves once
   * the socket is open, then calls `onRecords(records, partition)` and yields each record to
   * `for await`; `from` says where each partition starts (default: new records only). See `Tail`.
   */
  tail<E = unknown>(options: TailOptions<E> = {}): Promise<Tail<E>> {
    return Tail.open<E>(this.client.WebSocket, (from) => this.client.socketUrl(`${this.path}/tail`, { from }),
      `depot ${this.module}.${this.name}`, options);
  }

  /** Records of `partition` with start <= offset < stop (at most `limit`, default 100), or its `last` N. */
  async read<E = unknown>(partition: number, options: { start?: number; stop?: number; limit?: number; last?: number } = {}):
    Promise<DepotRecord<E>[]> {
    const answer = await this.client.request("GET", `${this.path}/partitions/${partition}/records`, { params: options });
    return (answer as { records: DepotRecord<E>[] }).records;
  }
}

function appendResult(answer: unknown): AppendResult {
  const body = answer as Partial<AppendResult>;
  return { partition: body.partition ?? null, offset: body.offset ?? null, results: body.results ?? {} };
}

export function q(name: string): string {
  return encodeURIComponent(name);
}

function query(params: Record<string, string | number | boolean | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) search.set(key, String(value));
  }
  return search.toString();
}
