/**
 * Following a depot's new records over the server's tail WebSocket (`depot.tail()`).
 *
 * The socket's first message says the offset each followed partition starts at; then records
 * arrive as they are committed, in offset order per partition, a bounded batch per message. A
 * `Tail` keeps the next offset of each partition in `offsets`, calls `onRecords(records,
 * partition)` and yields each record to `for await`. When the socket drops it connects again from
 * `offsets` (see `LiveSocket`), so no record is missed or repeated. A `for await` loop that lags
 * more than `TAIL_RECORDS_BUFFERED_MAX` records behind closes the socket until it catches up:
 * the server holds nothing for it meanwhile, the records stay in the depot.
 */
import { HeadwaterError } from "./errors.js";
import { callBack, Feed, LiveSocket } from "./socket.js";
/** Records held for a `for await` loop that lags; past this many the socket pauses until half are taken. */
export const TAIL_RECORDS_BUFFERED_MAX = 10_000;
export class Tail extends LiveSocket {
    address;
    options;
    /** The offset of the next record of each followed partition (its records before it were delivered). */
    offsets = {};
    from;
    paused = false; // a `for await` loop lags: the socket is closed until it catches up
    feed = new Feed();
    constructor(WebSocket, address, label, options) {
        super(WebSocket, label, options);
        this.address = address;
        this.options = options;
        this.from = options.from ?? "end";
    }
    /** Open a tail; resolves with it once the server said where each partition starts. */
    static async open(WebSocket, address, label, options) {
        const tail = new Tail(LiveSocket.required(WebSocket), address, label, options);
        tail.resumed(await tail.start());
        return tail;
    }
    [Symbol.asyncIterator]() {
        return this.feed.iterator(this, () => {
            if (this.paused && this.feed.pending.length <= TAIL_RECORDS_BUFFERED_MAX / 2) {
                this.paused = false;
                this.dropped(); // connect again, from `offsets`
            }
        });
    }
    url() {
        const from = this.from;
        return this.address(typeof from === "object" ? JSON.stringify(from) : String(from));
    }
    first(message) {
        if (message.type !== "ready" || typeof message.offsets !== "object" || message.offsets === null) {
            throw new HeadwaterError("bad_response", `cannot tail ${this.label}: the first message is not "ready"`);
        }
        return Object.fromEntries(Object.entries(message.offsets).map(([p, offset]) => [Number(p), offset]));
    }
    receive(message) {
        if (message.type !== "records") {
            this.dropped(); // not the protocol: connect again
            return;
        }
        const partition = message.partition;
        const seen = this.offsets[partition] ?? 0;
        const records = message.records.filter((record) => record.offset >= seen);
        this.offsets[partition] = Math.max(seen, message.next_offset);
        this.from = { ...this.offsets }; // a reconnect resumes here
        if (!records.length)
            return;
        for (const record of records)
            this.feed.push(record);
        if (this.feed.pending.length > TAIL_RECORDS_BUFFERED_MAX && !this.paused) {
            this.paused = true;
            this.pause();
        }
        callBack(() => this.options.onRecords?.(records, partition));
    }
    resumed(offsets) {
        this.offsets = { ...offsets };
        this.from = { ...offsets };
    }
    ended(error) {
        this.feed.end(error);
    }
}
