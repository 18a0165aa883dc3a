/**
 * @headwater/client: append to depots, read PStates, run queries and watch PState paths live,
 * over a headwater server's HTTP API. No dependencies: the platform's `fetch` and `WebSocket`.
 *
 *     import { connect } from "@headwater/client";
 *     const hw = connect("http://127.0.0.1:8000", { token });
 *     await hw.depot("bank", "deposits").append({ user_id: 1, amount: 100 });
 *     await hw.pstate("bank", "funds").at(1).get();           // 100
 *     const watching = await hw.pstate("bank", "funds").at(1).watch({ onChange: (diffs, value) => render(value) });
 *     const tail = await hw.depot("bank", "deposits").tail({ onRecords: (records) => show(records) });
 */

export { Client, Depot, connect, REQUEST_TIMEOUT_S, TIMEOUT_MARGIN_S } from "./client.js";
export type {
  Ack, AppendOptions, AppendResult, ConnectOptions, DepotRecord, FetchFunction, PartitionInfo, RequestOptions,
  WebSocketConstructor, WebSocketLike,
} from "./client.js";
export { applyDiff, applyDiffs } from "./diffs.js";
export type { Diff, Path, Step } from "./diffs.js";
export { HeadwaterError } from "./errors.js";
export { Nav, PStateView, READ_PAGE_MAX } from "./pstate.js";
export type { Navigator, RangeOptions } from "./pstate.js";
export {
  Subscription, WATCH_COMMITS_BUFFERED_MAX, WATCH_CONNECT_S, WATCH_RECONNECT_WAIT_MAX_S, WATCH_RECONNECT_WAIT_MIN_S,
  WATCH_SILENCE_MAX_S,
} from "./watch.js";
export type { Commit, WatchOptions } from "./watch.js";
export { Tail, TAIL_RECORDS_BUFFERED_MAX } from "./tail.js";
export type { TailFrom, TailOptions } from "./tail.js";
export type { SocketHooks } from "./socket.js";
