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
import { applyDiffs } from "./diffs.js";
import { HeadwaterError } from "./errors.js";
import { callBack, Feed, LiveSocket } from "./socket.js";
export { WATCH_CONNECT_S, WATCH_RECONNECT_WAIT_MAX_S, WATCH_RECONNECT_WAIT_MIN_S, WATCH_SILENCE_MAX_S, } from "./socket.js";
/** Commits held for a `for await` loop that lags; past this many they are replaced by one `resync`. */
export const WATCH_COMMITS_BUFFERED_MAX = 1_000;
export class Subscription extends LiveSocket {
    address;
    options;
    /** The value at the watched path after the latest commit (null when nothing is there). */
    value;
    feed = new Feed();
    constructor(WebSocket, address, label, options) {
        super(WebSocket, label, options);
        this.address = address;
        this.options = options;
        this.value = null;
    }
    /** Open a subscription; resolves with it once the first value arrived. */
    static async open(WebSocket, url, label, options) {
        const subscription = new Subscription(LiveSocket.required(WebSocket), url, label, options);
        subscription.value = await subscription.start();
        return subscription;
    }
    [Symbol.asyncIterator]() {
        return this.feed.iterator(this);
    }
    url() {
        return this.address;
    }
    first(message) {
        if (message.type !== "value") {
            throw new HeadwaterError("bad_response", `cannot watch ${this.label}: the first message is not the value`);
        }
        return (message.value ?? null);
    }
    receive(message) {
        if (message.type === "diffs") {
            const diffs = message.diffs;
            let value;
            try {
                value = applyDiffs(this.value, diffs);
            }
            catch {
                // The diffs do not fit the value (they should always fit): start again from the server's value.
                this.dropped();
                return;
            }
            this.deliver(diffs, value);
        }
        else if (message.type === "resync" || message.type === "value") {
            this.resumed((message.value ?? null));
        }
        else {
            this.dropped(); // not the protocol: connect again
        }
    }
    resumed(value) {
        this.deliver([{ op: "resync", value }], value);
    }
    ended(error) {
        this.feed.end(error);
    }
    deliver(diffs, value) {
        this.value = value;
        this.feed.push({ diffs, value });
        const pending = this.feed.pending;
        if (pending.length > WATCH_COMMITS_BUFFERED_MAX) {
            pending.splice(0, pending.length, { diffs: [{ op: "resync", value }], value });
        }
        callBack(() => this.options.onChange?.(diffs, value));
    }
}
