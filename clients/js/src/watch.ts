/**
 * Watching a PState path over the server's watch WebSocket.
 *
 * The socket's first message is the value at the path; then each commit's diffs arrive
 * together (`{"type": "diffs", "diffs": [...]}`), a `resync` replaces the value after a gap,
 * heartbeats say the socket lives, and an `error` ends it. A `Subscription` applies each commit
 * to its `value` with `applyDiffs` (a new object per commit), calls `onChange(diffs, value)`, and
 * yields `{diffs, value}` to `for await`. When the socket drops, or is silent too long, or a diff
 * does not fit, it connects again (waiting between tries, longer each time up to
 * `WATCH_RECONNECT_WAIT_MAX_S`) and delivers the value it finds as a `resync`.
 */

import type { WebSocketConstructor, WebSocketLike } from "./client.js";
import { applyDiffs, type Diff } from "./diffs.js";
import { HeadwaterError } from "./errors.js";

/** The longest the socket may take to open and send its first message. */
export const WATCH_CONNECT_S = 10;
/** The first wait before connecting again after a drop; each failed try doubles it. */
export const WATCH_RECONNECT_WAIT_MIN_S = 0.1;
/** The longest wait between tries to connect again. */
export const WATCH_RECONNECT_WAIT_MAX_S = 5;
/** A socket silent this long is taken for dead (the server sends a heartbeat after 15 s of silence). */
export const WATCH_SILENCE_MAX_S = 45;
/** Commits held for a `for await` loop that lags; past this many they are replaced by one `resync`. */
export const WATCH_COMMITS_BUFFERED_MAX = 1_000;

/** One commit: its diffs and the value after them. */
export interface Commit<T> {
  diffs: Diff[];
  value: T;
}

export interface WatchOptions<T> {
  /** Called after each commit (and each resync) with its diffs and the new value. */
  onChange?: (diffs: Diff[], value: T) => void;
  /** Called once if the server ends the watch with an error (a revoked token, a dropped PState, ...). */
  onError?: (error: HeadwaterError) => void;
}

/** Errors that are worth connecting again for; any other error the server sends ends the watch. */
const PASSING = new Set(["unavailable", "timeout", "bad_response"]);

type Waiter<T> = { resolve: (result: IteratorResult<Commit<T>>) => void; reject: (error: unknown) => void };

export class Subscription<T = unknown> implements AsyncIterable<Commit<T>> {
  /** The value at the watched path after the latest commit (null when nothing is there). */
  value: T;
  /** Whether the socket is open now (false while connecting again). */
  connected = false;
  /** Whether `close()` was called or the server ended the watch. */
  closed = false;
  /** The error that ended the watch, if one did. */
  error: HeadwaterError | null = null;

  private socket: WebSocketLike | null = null;
  private generation = 0; // events of sockets from an older generation are ignored
  private silence: ReturnType<typeof setTimeout> | null = null;
  private wake: (() => void) | null = null; // ends the wait between tries to connect again
  private cancel: (() => void) | null = null; // ends a try to connect under way
  private iterating = false;
  private readonly pending: Commit<T>[] = [];
  private readonly waiters: Waiter<T>[] = [];

  private constructor(private readonly WebSocket: WebSocketConstructor, private readonly url: string,
                      readonly label: string, private readonly options: WatchOptions<T>) {
    this.value = null as T;
  }

  /** Open a subscription; resolves with it once the first value arrived. */
  static async open<T>(WebSocket: WebSocketConstructor | undefined, url: string, label: string,
                       options: WatchOptions<T>): Promise<Subscription<T>> {
    if (!WebSocket) {
      throw new TypeError("this platform has no global WebSocket (Node before 22): pass one, e.g. "
        + "connect(url, { WebSocket }) with `import { WebSocket } from \"ws\"`");
    }
    const subscription = new Subscription<T>(WebSocket, url, label, options);
    subscription.value = (await subscription.attach()) as T;
    subscription.connected = true;
    return subscription;
  }

  /** Stop watching: the socket closes, `for await` loops end, no callback is called again. */
  close(): void {
    this.end(null);
  }

  [Symbol.asyncIterator](): AsyncIterator<Commit<T>> {
    this.iterating = true;
    return {
      next: () => {
        const commit = this.pending.shift();
        if (commit) return Promise.resolve({ value: commit, done: false });
        if (this.error) return Promise.reject(this.error);
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
      },
      return: () => { // leaving a `for await` loop early closes the subscription
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** Open a socket; the value of its first message, or the error it sends (or a timeout). */
  private attach(): Promise<unknown> {
    const generation = ++this.generation;
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new this.WebSocket(this.url);
      } catch (e) {
        reject(new HeadwaterError("unavailable", `cannot watch ${this.label}: ${(e as Error).message}`));
        return;
      }
      this.socket = socket;
      let waiting = true; // for the first message
      const fail = (error: HeadwaterError) => {
        waiting = false;
        this.cancel = null;
        clearTimeout(timer);
        this.detach(socket);
        reject(error);
      };
      this.cancel = () => fail(new HeadwaterError("unavailable", `watching ${this.label}: closed while connecting`));
      const timer = setTimeout(() => fail(new HeadwaterError("timeout",
        `cannot watch ${this.label}: no first message within ${WATCH_CONNECT_S} s`)), WATCH_CONNECT_S * 1000);
      socket.onerror = () => {}; // a close event follows every error
      socket.onclose = (event) => {
        if (generation !== this.generation) return;
        if (waiting) {
          fail(new HeadwaterError("unavailable", `cannot watch ${this.label}: the socket closed `
            + `(${event.code ?? ""} ${event.reason ?? ""}); is the server running?`));
        } else {
          this.dropped();
        }
      };
      socket.onmessage = (event) => {
        if (generation !== this.generation) return;
        const message = parse(event.data);
        if (!waiting) {
          this.received(message);
          return;
        }
        if (message?.type === "error") {
          fail(HeadwaterError.fromBody(message, 0));
        } else if (message?.type !== "value") {
          fail(new HeadwaterError("bad_response", `cannot watch ${this.label}: the first message is not the value`));
        } else {
          waiting = false;
          this.cancel = null;
          clearTimeout(timer);
          this.heard();
          resolve(message.value ?? null);
        }
      };
    });
  }

  private received(message: Record<string, unknown> | null): void {
    this.heard();
    if (message?.type === "diffs") {
      const diffs = message.diffs as Diff[];
      let value: T;
      try {
        value = applyDiffs<T>(this.value, diffs);
      } catch {
        // The diffs do not fit the value (they should always fit): start again from the server's value.
        this.dropped();
        return;
      }
      this.deliver(diffs, value);
    } else if (message?.type === "resync" || message?.type === "value") {
      const value = (message.value ?? null) as T;
      this.deliver([{ op: "resync", value }], value);
    } else if (message?.type === "error") {
      this.end(HeadwaterError.fromBody(message, 0));
    } else if (message?.type !== "heartbeat") {
      this.dropped(); // not the protocol: connect again
    }
  }

  private deliver(diffs: Diff[], value: T): void {
    this.value = value;
    const commit = { diffs, value };
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter.resolve({ value: commit, done: false });
    } else if (this.iterating) {
      this.pending.push(commit);
      if (this.pending.length > WATCH_COMMITS_BUFFERED_MAX) {
        this.pending.splice(0, this.pending.length, { diffs: [{ op: "resync", value }], value });
      }
    }
    try {
      this.options.onChange?.(diffs, value);
    } catch (e) {
      queueMicrotask(() => { throw e; }); // the caller's bug: report it where it is seen, not into the socket
    }
  }

  /** Reset the silence bound: a socket that says nothing for WATCH_SILENCE_MAX_S is taken for dead. */
  private heard(): void {
    if (this.silence !== null) clearTimeout(this.silence);
    this.silence = setTimeout(() => this.dropped(), WATCH_SILENCE_MAX_S * 1000);
  }

  /** The socket dropped (or went silent, or sent what does not fit): connect again unless closed. */
  private dropped(): void {
    if (this.socket) this.detach(this.socket);
    this.connected = false;
    if (!this.closed) void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    let waitS = WATCH_RECONNECT_WAIT_MIN_S;
    while (!this.closed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitS * 1000);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
      this.wake = null;
      if (this.closed) return;
      try {
        const value = (await this.attach()) as T;
        if (this.closed) return;
        this.connected = true;
        this.deliver([{ op: "resync", value }], value);
        return;
      } catch (e) {
        const error = e as HeadwaterError;
        if (!PASSING.has(error.code)) {
          this.end(error);
          return;
        }
        waitS = Math.min(WATCH_RECONNECT_WAIT_MAX_S, waitS * 2);
      }
    }
  }

  private detach(socket: WebSocketLike): void {
    if (socket === this.socket) {
      this.generation++;
      this.socket = null;
    }
    if (this.silence !== null) clearTimeout(this.silence);
    this.silence = null;
    socket.onmessage = null;
    socket.onclose = null;
    try {
      socket.close();
    } catch {
      // closing a socket that never opened: nothing to do
    }
  }

  private end(error: HeadwaterError | null): void {
    if (this.closed) return;
    this.closed = true;
    this.connected = false;
    this.error = error;
    this.cancel?.();
    if (this.socket) this.detach(this.socket);
    this.wake?.();
    for (const waiter of this.waiters.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve({ value: undefined, done: true });
    }
    if (error) this.options.onError?.(error);
  }
}

function parse(data: unknown): Record<string, unknown> | null {
  const text = typeof data === "string" ? data
    : data instanceof ArrayBuffer ? new TextDecoder().decode(data) : String(data);
  try {
    const message = JSON.parse(text);
    return message && typeof message === "object" ? (message as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
