// A Tail driven by a scripted socket: resuming from its offsets after a drop, no repeats, and a
// `for await` loop that lags pausing the socket until it catches up.

import assert from "node:assert/strict";
import { test } from "node:test";

import { connect, HeadwaterError, TAIL_RECORDS_BUFFERED_MAX } from "../dist/index.js";
import { ScriptedSocket } from "./scripted.mjs";
import { waitFor } from "./server.mjs";

function tailing(options = {}) {
  const hw = connect("http://server.test", { token: "t", WebSocket: ScriptedSocket });
  const opened = hw.depot("game", "ops").tail(options);
  return { opened, socket: ScriptedSocket.latest() };
}

const record = (partition, offset) => ({ partition, offset, timestamp: "2026-01-01T00:00:00Z", event: { n: offset } });
const records = (partition, from, count) => ({
  type: "records", partition, records: Array.from({ length: count }, (_, i) => record(partition, from + i)),
  next_offset: from + count,
});
const fromOf = (url) => JSON.parse(new URL(url).searchParams.get("from"));

test("the URL, the offsets, then records; a drop resumes from the offsets without repeats", async () => {
  const batches = [];
  const connections = [];
  const { opened, socket } = tailing({ onRecords: (found, partition) => batches.push([partition, found.map((r) => r.offset)]),
    onConnection: (connected) => connections.push(connected) });
  assert.equal(socket.url, "ws://server.test/api/modules/game/depots/ops/tail?from=end&token=t");
  socket.say({ type: "ready", offsets: { 0: 4, 1: 9 } });
  const tail = await opened;
  assert.deepEqual(tail.offsets, { 0: 4, 1: 9 });
  socket.say(records(0, 4, 2));
  assert.deepEqual(tail.offsets, { 0: 6, 1: 9 });
  socket.drop();
  await waitFor(() => ScriptedSocket.latest() !== socket, "a second socket");
  const second = ScriptedSocket.latest();
  assert.deepEqual(fromOf(second.url), { 0: 6, 1: 9 });
  second.say({ type: "ready", offsets: { 0: 6, 1: 9 } });
  await waitFor(() => tail.connected, "the reconnect");
  assert.deepEqual(connections, [false, true]);
  second.say(records(0, 5, 3)); // offset 5 again: not delivered twice
  second.say({ type: "heartbeat" });
  second.say(records(1, 9, 1));
  assert.deepEqual(batches, [[0, [4, 5]], [0, [6, 7]], [1, [9]]]);
  tail.close();
  second.say(records(1, 10, 1));
  assert.equal(batches.length, 3, "nothing after close");
});

test("an error ends the tail; a first message that is not ready is refused", async () => {
  const errors = [];
  const { opened, socket } = tailing({ from: { 1: 0 }, onError: (e) => errors.push(e.code) });
  assert.deepEqual(fromOf(socket.url), { 1: 0 });
  socket.say({ type: "ready", offsets: { 1: 0 } });
  const tail = await opened;
  const loop = (async () => { for await (const r of tail) assert.ok(r); })();
  socket.say({ type: "error", error: "not_found", message: "the depot was dropped" });
  await assert.rejects(loop, (e) => e instanceof HeadwaterError && e.code === "not_found");
  assert.deepEqual(errors, ["not_found"]);
  const garbled = tailing();
  garbled.socket.say({ type: "value", value: 1 });
  await assert.rejects(garbled.opened, (e) => e.code === "bad_response");
});

test("a for await loop that lags pauses the socket, and resumes from where it took up to", async () => {
  const { opened, socket } = tailing({ from: 0 });
  socket.say({ type: "ready", offsets: { 0: 0 } });
  const tail = await opened;
  const iterator = tail[Symbol.asyncIterator]();
  const total = TAIL_RECORDS_BUFFERED_MAX + 1;
  socket.say(records(0, 0, total));
  assert.equal(socket.closed, true, "paused: the socket is closed, nothing more is read");
  assert.equal(tail.closed, false);
  const made = ScriptedSocket.made.length;
  for (let i = 0; i < total / 2; i++) assert.equal((await iterator.next()).value.offset, i);
  await waitFor(() => ScriptedSocket.made.length === made + 1, "a new socket once half were taken");
  assert.deepEqual(fromOf(ScriptedSocket.latest().url), { 0: total });
  tail.close();
});
