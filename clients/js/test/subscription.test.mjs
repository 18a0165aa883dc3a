// A Subscription driven by a scripted socket: what it does with each message the server may
// send, with drops, with diffs that do not fit, and with a `for await` loop that lags.

import assert from "node:assert/strict";
import { test } from "node:test";

import { connect, HeadwaterError, WATCH_COMMITS_BUFFERED_MAX } from "../dist/index.js";
import { ScriptedSocket } from "./scripted.mjs";
import { waitFor } from "./server.mjs";

function watching(options = {}, path = ["r1"]) {
  const hw = connect("http://server.test", { token: "t", WebSocket: ScriptedSocket });
  const opened = hw.pstate("game", "rooms").at(...path).watch(options);
  return { opened, socket: ScriptedSocket.latest() };
}

test("the socket's URL, the value, then each commit's diffs applied", async () => {
  const changes = [];
  const { opened, socket } = watching({ onChange: (diffs, value) => changes.push({ diffs, value }) }, ["r1", 7]);
  assert.equal(socket.url, "ws://server.test/api/modules/game/pstates/rooms/watch?path=%5B%22r1%22%2C7%5D&token=t");
  socket.say({ type: "value", value: { ann: 5 } });
  const watched = await opened;
  assert.deepEqual(watched.value, { ann: 5 });
  socket.say({ type: "heartbeat" });
  socket.say({ type: "diffs", diffs: [{ op: "put", path: ["bo"], value: 3 }, { op: "remove", path: ["ann"] }] });
  assert.deepEqual(watched.value, { bo: 3 });
  assert.equal(changes.length, 1); // one commit, one call
  socket.say({ type: "resync", value: { cy: 1 } });
  assert.deepEqual(changes.at(-1), { diffs: [{ op: "resync", value: { cy: 1 } }], value: { cy: 1 } });
  watched.close();
  assert.equal(socket.closed, true);
  socket.say({ type: "diffs", diffs: [{ op: "put", path: ["dy"], value: 1 }] });
  assert.equal(changes.length, 2, "no call after close");
});

test("the first message: an error rejects watch(), with the server's code", async () => {
  const refused = watching();
  refused.socket.say({ type: "error", error: "path_error", message: "no such field" });
  await assert.rejects(refused.opened, (e) => e instanceof HeadwaterError && e.code === "path_error"
    && e.message === "no such field");
  const garbled = watching();
  garbled.socket.say({ type: "diffs", diffs: [] });
  await assert.rejects(garbled.opened, (e) => e.code === "bad_response");
  const gone = watching();
  gone.socket.drop();
  await assert.rejects(gone.opened, (e) => e.code === "unavailable");
});

test("a drop, then failed tries: it connects again and resyncs", async () => {
  const changes = [];
  const { opened, socket } = watching({ onChange: (diffs) => changes.push(diffs) });
  socket.say({ type: "value", value: { ann: 1 } });
  const watched = await opened;
  socket.drop();
  assert.equal(watched.connected, false);
  await waitFor(() => ScriptedSocket.latest() !== socket, "a second try");
  ScriptedSocket.latest().drop(); // that try fails too
  const third = ScriptedSocket.made.length + 1;
  await waitFor(() => ScriptedSocket.made.length === third, "a third try");
  ScriptedSocket.latest().say({ type: "value", value: { ann: 2 } });
  await waitFor(() => watched.connected, "the resync");
  assert.deepEqual(changes, [[{ op: "resync", value: { ann: 2 } }]]);
  watched.close();
});

test("a diff that does not fit: it starts again from the server's value", async () => {
  const { opened, socket } = watching();
  socket.say({ type: "value", value: { scores: {} } });
  const watched = await opened;
  socket.say({ type: "diffs", diffs: [{ op: "append", path: ["chat"], values: ["hi"] }] }); // there is no chat
  assert.equal(socket.closed, true);
  assert.deepEqual(watched.value, { scores: {} }); // not half-applied
  await waitFor(() => ScriptedSocket.latest() !== socket, "a new socket");
  ScriptedSocket.latest().say({ type: "value", value: { scores: {}, chat: ["hi"] } });
  await waitFor(() => watched.connected, "the resync");
  assert.deepEqual(watched.value, { scores: {}, chat: ["hi"] });
  watched.close();
});

test("an error after the value ends the watch: onError, and for await throws it", async () => {
  const errors = [];
  const { opened, socket } = watching({ onError: (e) => errors.push(e) });
  socket.say({ type: "value", value: 1 });
  const watched = await opened;
  const loop = (async () => {
    for await (const commit of watched) assert.ok(commit);
  })();
  socket.say({ type: "error", error: "permission_denied", message: "the token was revoked" });
  await assert.rejects(loop, (e) => e.code === "permission_denied");
  assert.deepEqual(errors.map((e) => e.code), ["permission_denied"]);
  assert.equal(watched.closed, true);
  assert.equal(watched.error.code, "permission_denied");
});

test("a for await loop that lags gets one resync in place of what it missed", async () => {
  const { opened, socket } = watching({}, []);
  socket.say({ type: "value", value: [] });
  const watched = await opened;
  const commits = watched[Symbol.asyncIterator]();
  socket.say({ type: "diffs", diffs: [{ op: "append", path: [], values: [0] }] });
  assert.deepEqual((await commits.next()).value.value, [0]);
  for (let i = 1; i <= WATCH_COMMITS_BUFFERED_MAX + 1; i++) {
    socket.say({ type: "diffs", diffs: [{ op: "append", path: [], values: [i] }] });
  }
  const { value: caughtUp } = await commits.next();
  assert.equal(caughtUp.diffs[0].op, "resync");
  assert.equal(caughtUp.value.length, WATCH_COMMITS_BUFFERED_MAX + 2);
  socket.say({ type: "diffs", diffs: [{ op: "truncate", path: [], length: 1 }] });
  assert.deepEqual((await commits.next()).value, { diffs: [{ op: "truncate", path: [], length: 1 }], value: [0] });
  await commits.return();
  assert.equal(watched.closed, true);
  assert.deepEqual(await commits.next(), { value: undefined, done: true });
});
