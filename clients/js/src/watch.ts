/**
 * Watching a PState path over the server's watch WebSocket.
 *
 * The socket's first message is the value at the path; then each commit's diffs arrive
 * together (`{"type": "diffs", "diffs": [...]}`), a `resync` replaces the value after a gap,
 * heartbeats say the socket lives, and an `error` ends it. A `Subscription` applies each commit
 * to its `value` with `applyDiffs` (a new object per commit), calls `onChange(diffs, value)`, and
 * yields `{diffs, value}` to `for await`. When the socket drops, or is silent too long, or a diff
 * does not fit, it connects again (see `LiveSocket`) and delivers the value it finds as a `resync`.
 */

import type { WebSocketConstructor } from "./client.js";
import { applyDiffs, type Diff } from "./diffs.js";
import { HeadwaterError } from "./errors.js";
import { callBack, Feed, LiveSocket, type Message, type SocketHooks } from "./socket.js";

export {
  WATCH_CONNECT_S, WATCH_RECONNECT_WAIT_MAX_S, WATCH_RECONNECT_WAIT_MIN_S, WATCH_SILENCE_MAX_S,
} from "./socket.js";

/** Commits held for a `for await` loop that lags; past this many they are replaced by one `resync`. */
export const WATCH_COMMITS_BUFFERED_MAX = 1_000;

/** One commit: its diffs and the value after them. */
export interface Commit<T> {
  diffs: Diff[];
  value: T;
}

export interface WatchOptions<T> extends SocketHooks {
  /** Called after each commit (and each resync) with its diffs and the new value. */
  onChange?: (diffs: Diff[], value: T) => void;
}

export class Subscription<T = unknown> extends LiveSocket<T> implements AsyncIterable<Commit<T>> {
  /** The value at the watched path after the latest commit (null when nothing is there). */
  value: T;

  private readonly feed = new Feed<Commit<T>>();

  private constructor(WebSocket: WebSocketConstructor, private readonly address: string, label: string,
                      private readonly options: WatchOptions<T>) {
    super(WebSocket, label, options);
    this.value = null as T;
  }

  /** Open a subscription; resolves with it once the first value arrived. */
  static async open<T>(WebSocket: WebSocketConstructor | undefined, url: string, label: string,
                       options: WatchOptions<T>): Promise<Subscription<T>> {
    const subscription = new Subscription<T>(LiveSocket.required(WebSocket), url, label, options);
    subscription.value = await subscription.start();
    return subscription;
  }

  [Symbol.asyncIterator](): AsyncIterator<Commit<T>> {
    return this.feed.iterator(this);
  }

  protected url(): string {
    return this.address;
  }

  protected first(message: Message): T {
    if (message.type !== "value") {
      throw new HeadwaterError("bad_response", `cannot watch ${this.label}: the first message is not the value`);
    }
    return (message.value ?? null) as T;
  }

  protected receive(message: Message): void {
    if (message.type === "diffs") {
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
    } else if (message.type === "resync" || message.type === "value") {
      this.resumed((message.value ?? null) as T);
    } else {
      this.dropped(); // not the protocol: connect again
    }
  }

  protected resumed(value: T): void {
    this.deliver([{ op: "resync", value }], value);
  }

  protected ended(error: HeadwaterError | null): void {
    this.feed.end(error);
  }

  private deliver(diffs: Diff[], value: T): void {
    this.value = value;
    this.feed.push({ diffs, value });
    const pending = this.feed.pending;
    if (pending.length > WATCH_COMMITS_BUFFERED_MAX) {
      pending.splice(0, pending.length, { diffs: [{ op: "resync", value }], value });
    }
    callBack(() => this.options.onChange?.(diffs, value));
  }
}
