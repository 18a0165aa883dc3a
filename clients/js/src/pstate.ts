/**
 * `client.pstate(module, name)`: a path into a PState, built step by step (`.at(...steps)`,
 * `.key(k)`), and the reads the HTTP API offers at its end. A step is a map key, a record field
 * or a list index, in the API's JSON encoding (a UUID or a datetime as its string, a tuple as an
 * array); the server converts each to the type its schema declares.
 */

import type { Client } from "./client.js";
import { q } from "./client.js";
import type { Path, Step } from "./diffs.js";
import { Subscription, type WatchOptions } from "./watch.js";

/** A navigator of `select`/`selectOne`, as the API encodes it (`{"nav": ...}`). */
export type Navigator = { nav: string; [field: string]: unknown };

/** The navigators of the HTTP API, for `select` and `selectOne`. */
export const Nav = {
  ALL: { nav: "all" } as Navigator,
  MAP_KEYS: { nav: "map_keys" } as Navigator,
  MAP_VALS: { nav: "map_vals" } as Navigator,
  FIRST: { nav: "first" } as Navigator,
  LAST: { nav: "last" } as Navigator,
  SIZE: { nav: "size" } as Navigator,
  nth: (index: number): Navigator => ({ nav: "nth", index }),
  must: (key: Step): Navigator => ({ nav: "must", key }),
  range: (options: { start?: Step; stop?: Step; limit?: number; reverse?: boolean } = {}): Navigator =>
    ({ nav: "range", ...options }),
};

export interface RangeOptions {
  /** The first key (inclusive). */
  start?: Step;
  /** Where to stop (exclusive). */
  stop?: Step;
  /** At most this many elements; without it, every page is read. */
  limit?: number;
  /** Largest key first. */
  reverse?: boolean;
}

/** The most elements one answer holds (the server's page size). */
export const READ_PAGE_MAX = 10_000;

type Answer = { value: unknown; found?: boolean; next?: { start?: Step; stop?: Step } | null };

export class PStateView {
  private readonly base: string;

  constructor(readonly client: Client, readonly module: string, readonly pstate: string,
              readonly task: number | undefined, readonly path: readonly Step[]) {
    this.base = `/api/modules/${q(module)}/pstates/${q(pstate)}`;
  }

  /** The view further down `steps` (map keys, record fields, list indexes); this one is unchanged. */
  at(...steps: Step[]): PStateView {
    return new PStateView(this.client, this.module, this.pstate, this.task, [...this.path, ...steps]);
  }

  /** The view one step down: `view.key(k)` is `view.at(k)`. */
  key(step: Step): PStateView {
    return this.at(step);
  }

  /** The value at the path, or `undefined` when nothing is there. A collection of more than 10,000 elements throws `read_too_large`: page it with `keys`/`items`/`slice`. */
  async get<T = unknown>(): Promise<T | undefined> {
    const answer = await this.read("get");
    return answer.found === false ? undefined : (answer.value as T);
  }

  /** Whether anything is at the path. */
  async exists(): Promise<boolean> {
    return (await this.read("exists")).value as boolean;
  }

  /** The number of elements of the map, set or list at the path. */
  async size(): Promise<number> {
    return (await this.read("size")).value as number;
  }

  /** A map's keys (or a set's elements) in key order, from `start` up to `stop`, following pages. */
  async keys<K = unknown>(options: RangeOptions = {}): Promise<K[]> {
    return (await this.range("keys", options)) as K[];
  }

  /** A map's values in key order. */
  async values<V = unknown>(options: RangeOptions = {}): Promise<V[]> {
    return (await this.range("values", options)) as V[];
  }

  /** A map's `[key, value]` pairs in key order. */
  async items<K = unknown, V = unknown>(options: RangeOptions = {}): Promise<Array<[K, V]>> {
    return (await this.range("items", options)) as Array<[K, V]>;
  }

  /** A list's elements from index `start` to `stop` (negative like Python), following pages. */
  async slice<E = unknown>(start?: number, stop?: number): Promise<E[]> {
    const found: E[] = [];
    for (;;) {
      const answer = await this.read("slice", { start, stop });
      found.push(...(answer.value as E[]));
      if (!answer.next || answer.next.start === undefined) return found;
      start = answer.next.start as number;
    }
  }

  /** Whether the set (or map) at the path holds `element`. */
  async contains(element: Step): Promise<boolean> {
    return (await this.read("contains", { element: JSON.stringify(element) })).value as boolean;
  }

  /** The values the navigators (`Nav`, or plain keys) reach from the path (at most 10,000). */
  async select<T = unknown>(...navigators: Array<Navigator | Step>): Promise<T[]> {
    return (await this.read("select", {}, [...this.path, ...navigators])).value as T[];
  }

  /** The one value the navigators reach (or null). */
  async selectOne<T = unknown>(...navigators: Array<Navigator | Step>): Promise<T> {
    return (await this.read("select_one", {}, [...this.path, ...navigators])).value as T;
  }

  /**
   * Watch the value at the path: resolves once the first value arrived (or rejects with the
   * server's error, e.g. `path_error`), then keeps `subscription.value` up to date with each
   * commit's diffs; see `Subscription`.
   */
  watch<T = unknown>(options: WatchOptions<T> = {}): Promise<Subscription<T>> {
    const url = this.client.socketUrl(`${this.base}/watch`, { path: JSON.stringify(this.path), task: this.task });
    return Subscription.open<T>(this.client.WebSocket, url, `${this.module}.${this.pstate} at ${JSON.stringify(this.path)}`,
      options);
  }

  private async range(op: string, options: RangeOptions): Promise<unknown[]> {
    let { start, stop } = options;
    const found: unknown[] = [];
    while (options.limit === undefined || found.length < options.limit) {
      const page = options.limit === undefined ? READ_PAGE_MAX : Math.min(READ_PAGE_MAX, options.limit - found.length);
      const answer = await this.read(op, {
        start: start === undefined ? undefined : JSON.stringify(start),
        stop: stop === undefined ? undefined : JSON.stringify(stop),
        limit: page,
        reverse: options.reverse ? "true" : "false",
      });
      found.push(...(answer.value as unknown[]));
      if (!answer.next) break;
      if ("start" in answer.next) start = answer.next.start;
      if ("stop" in answer.next) stop = answer.next.stop;
    }
    return found;
  }

  private async read(op: string, params: Record<string, string | number | undefined> = {},
                     path: readonly unknown[] = this.path): Promise<Answer> {
    return (await this.client.request("GET", `${this.base}/${op}`, {
      params: { path: JSON.stringify(path), task: this.task, ...params },
    })) as Answer;
  }
}

export type { Path };
