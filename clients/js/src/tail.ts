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

import type { DepotRecord, WebSocketConstructor } from "./client.js";
import { HeadwaterError } from "./errors.js";
import { callBack, Feed, LiveSocket, type Message, type SocketHooks } from "./socket.js";

/** Records held for a `for await` loop that lags; past this many the socket pauses until half are taken. */
export const TAIL_RECORDS_BUFFERED_MAX = 10_000;

/** Where each partition starts: new records only (`"end"`), the oldest stored (`"start"`), one
 * offset for every partition, or `{partition: offset}` for the partitions to follow. */
export type TailFrom = "end" | "start" | number | Record<number, number>;

export interface TailOptions<E> extends SocketHooks {
  /** Where to start (default `"end"`). */
  from?: TailFrom;
  /** Called with each batch of new records of one partition, in offset order. */
  onRecords?: (records: DepotRecord<E>[], partition: number) => void;
}

export class Tail<E = unknown> extends LiveSocket<Record<number, number>> implements AsyncIterable<DepotRecord<E>> {
  /** The offset of the next record of each followed partition (its records before it were delivered). */
  offsets: Record<number, number> = {};

  private from: TailFrom;
  private paused = false; // a `for await` loop lags: the socket is closed until it catches up
  private readonly feed = new Feed<DepotRecord<E>>();

  private constructor(WebSocket: WebSocketConstructor, private readonly address: (from: string) => string,
                      label: string, private readonly options: TailOptions<E>) {
    super(WebSocket, label, options);
    this.from = options.from ?? "end";
  }

  /** Open a tail; resolves with it once the server said where each partition starts. */
  static async open<E>(WebSocket: WebSocketConstructor | undefined, address: (from: string) => string, label: string,
                       options: TailOptions<E>): Promise<Tail<E>> {
    const tail = new Tail<E>(LiveSocket.required(WebSocket), address, label, options);
    tail.resumed(await tail.start());
    return tail;
  }

  [Symbol.asyncIterator](): AsyncIterator<DepotRecord<E>> {
    return this.feed.iterator(this, () => {
      if (this.paused && this.feed.pending.length <= TAIL_RECORDS_BUFFERED_MAX / 2) {
        this.paused = false;
        this.dropped(); // connect again, from `offsets`
      }
    });
  }

  protected url(): string {
    const from = this.from;
    return this.address(typeof from === "object" ? JSON.stringify(from) : String(from));
  }

  protected first(message: Message): Record<number, number> {
    if (message.type !== "ready" || typeof message.offsets !== "object" || message.offsets === null) {
      throw new HeadwaterError("bad_response", `cannot tail ${this.label}: the first message is not "ready"`);
    }
    return Object.fromEntries(Object.entries(message.offsets).map(([p, offset]) => [Number(p), offset as number]));
  }

  protected receive(message: Message): void {
    if (message.type !== "records") {
      this.dropped(); // not the protocol: connect again
      return;
    }
    const partition = message.partition as number;
    const seen = this.offsets[partition] ?? 0;
    const records = (message.records as DepotRecord<E>[]).filter((record) => record.offset >= seen);
    this.offsets[partition] = Math.max(seen, message.next_offset as number);
    this.from = { ...this.offsets }; // a reconnect resumes here
    if (!records.length) return;
    for (const record of records) this.feed.push(record);
    if (this.feed.pending.length > TAIL_RECORDS_BUFFERED_MAX && !this.paused) {
      this.paused = true;
      this.pause();
    }
    callBack(() => this.options.onRecords?.(records, partition));
  }

  protected resumed(offsets: Record<number, number>): void {
    this.offsets = { ...offsets };
    this.from = { ...offsets };
  }

  protected ended(error: HeadwaterError | null): void {
    this.feed.end(error);
  }
}
