// The client against a real server: appends, reads, queries, errors, and watches whose values
// are rebuilt from diffs and checked against the server's get() after every commit.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";

import { connect, HeadwaterError, Nav, applyDiff } from "../dist/index.js";
import { freePort, startServer, TOKENS, waitFor } from "./server.mjs";

let server;
let hw;

before(async () => {
  server = await startServer();
  hw = connect(server.url, { token: TOKENS.admin, WebSocket });
});
after(async () => server?.stop());

const op = (room, kind, who = "", amount = 0) => ({ room, kind, who, amount });

/** The error a promise rejects with (failing if it resolves). */
async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof HeadwaterError, `not a HeadwaterError: ${e}`);
    return e;
  }
  assert.fail("expected an error");
}

describe("appends", () => {
  test("append answers where the event is and what the topology returned", async () => {
    const ops = hw.depot("game", "ops");
    const first = await ops.append(op("a1", "score", "ann", 5));
    assert.equal(typeof first.partition, "number");
    assert.equal(first.offset, 0);
    assert.deepEqual(first.results, { apply_op: 1 });
    const second = await ops.append(op("a1", "score", "bo", 1), { ack: "append" });
    assert.deepEqual([second.partition, second.offset, second.results], [first.partition, 1, {}]);
    const none = await ops.append(op("a1", "score", "cy", 1), { ack: "none" });
    assert.deepEqual(none, { partition: null, offset: null, results: {} });
  });

  test("an idempotency key makes a retry return the first append", async () => {
    const ops = hw.depot("game", "ops");
    const first = await ops.append(op("i1", "score", "ann", 1), { idempotencyKey: "key-1" });
    const again = await ops.append(op("i1", "score", "ann", 1), { idempotencyKey: "key-1" });
    assert.deepEqual(again, first);
    assert.equal(await hw.pstate("game", "rooms").at("i1", "scores", "ann").get(), 1);
    const error = await rejection(ops.append(op("i1", "score", "ann", 2), { idempotencyKey: "key-1" }));
    assert.deepEqual([error.code, error.status], ["idempotency_conflict", 409]);
  });

  test("appendMany answers each event in input order", async () => {
    const results = await hw.depot("game", "ops").appendMany([op("m1", "score", "ann", 1), op("m1", "score", "bo", 2)]);
    assert.deepEqual(results.map((r) => r.results.apply_op), [1, 2]);
    assert.equal(results[1].offset, results[0].offset + 1);
    const records = await hw.depot("game", "ops").read(results[0].partition, { start: results[0].offset, limit: 2 });
    assert.deepEqual(records.map((r) => r.event.who), ["ann", "bo"]);
    const partitions = await hw.depot("game", "ops").partitions();
    assert.ok(partitions.some((p) => p.partition === results[0].partition && p.end_offset >= results[1].offset + 1));
  });
});

describe("reads and queries", () => {
  before(async () => {
    await hw.depot("game", "ops").appendMany([
      op("q1", "score", "ann", 3), op("q1", "score", "bo", 4), op("q1", "score", "cy", 5),
      op("q1", "tag", "x"), op("q1", "say", "ann", 1), op("q1", "say", "bo", 2), op("q1", "count", "", 7),
      op("q1", "count", "", 7),
    ]);
  });

  test("get, exists, size, and nothing there", async () => {
    const room = hw.pstate("game", "rooms").at("q1");
    assert.deepEqual(await room.key("scores").get(), { ann: 3, bo: 4, cy: 5 });
    assert.equal(await room.at("scores", "bo").get(), 4);
    assert.equal(await room.at("scores", "nobody").get(), undefined);
    assert.equal(await room.at("scores", "nobody").exists(), false);
    assert.equal(await room.exists(), true);
    assert.equal(await room.key("scores").size(), 3);
    assert.equal(await hw.pstate("game", "counts").at("q1", 7).get(), 2); // an integer key
    assert.deepEqual(await hw.pstate("game", "counts").at("q1").get(), { 7: 2 }); // an object: keys are strings
  });

  test("ranges, slices, contains, select", async () => {
    const scores = hw.pstate("game", "rooms").at("q1", "scores");
    assert.deepEqual(await scores.keys(), ["ann", "bo", "cy"]);
    assert.deepEqual(await scores.keys({ start: "bo" }), ["bo", "cy"]);
    assert.deepEqual(await scores.keys({ stop: "cy", reverse: true }), ["bo", "ann"]);
    assert.deepEqual(await scores.values({ limit: 2 }), [3, 4]);
    assert.deepEqual(await scores.items({ start: "cy" }), [["cy", 5]]);
    const room = hw.pstate("game", "rooms").at("q1");
    assert.deepEqual(await room.key("chat").slice(), ["ann:1", "bo:2"]);
    assert.deepEqual(await room.key("chat").slice(-1), ["bo:2"]);
    assert.equal(await room.key("tags").contains("x"), true);
    assert.equal(await room.key("tags").contains("y"), false);
    assert.deepEqual(await room.select("scores", Nav.MAP_VALS), [3, 4, 5]);
    assert.deepEqual(await room.select("scores", Nav.range({ start: "bo", limit: 1 }), Nav.MAP_KEYS), ["bo"]);
    assert.deepEqual(await room.selectOne("scores", Nav.LAST), ["cy", 5]); // a map entry
  });

  test("task: one task's part of a partitioned map", async () => {
    const parts = await Promise.all([0, 1].map((task) => hw.pstate("game", "counts", { task }).keys()));
    assert.equal(parts.flat().filter((room) => room === "q1").length, 1); // on exactly one of the two tasks
    const owner = parts[0].includes("q1") ? 0 : 1;
    assert.deepEqual(await hw.pstate("game", "counts", { task: owner }).at("q1").get(), { 7: 2 });
    const watched = await hw.pstate("game", "counts", { task: owner }).watch();
    watched.close();
    assert.deepEqual(watched.value.q1, { 7: 2 });
    const wholeMap = await rejection(hw.pstate("game", "counts").get());
    assert.equal(wholeMap.code, "path_error"); // a whole partitioned map needs a task
  });

  test("a query takes its arguments and answers its value", async () => {
    assert.equal(await hw.query("game", "room_total")("q1"), 12);
    assert.equal(await hw.query("game", "room_total")("empty"), 0);
  });
});

describe("errors", () => {
  test("the server's codes, statuses and extra fields", async () => {
    const notFound = await rejection(hw.depot("game", "opz").append(op("e", "score")));
    assert.deepEqual([notFound.code, notFound.status, notFound.kind], ["not_found", 404, "depot"]);
    assert.ok(notFound.known.includes("ops"), notFound.known);
    assert.match(notFound.message, /ops/);

    const schema = await rejection(hw.depot("game", "ops").append({ room: "e", kind: "score", amount: "many" }));
    assert.deepEqual([schema.code, schema.status, schema.path], ["schema_error", 422, "$.amount"]);

    const path = await rejection(hw.pstate("game", "rooms").at("e", "nosuchfield").get());
    assert.deepEqual([path.code, path.status], ["path_error", 422]);

    const handler = await rejection(hw.depot("game", "ops").append(op("e", "boom")));
    assert.deepEqual([handler.code, handler.status, handler.topology, handler.error_type],
      ["handler_error", 500, "apply_op", "ValueError"]);
    assert.equal(typeof handler.offset, "number");
    assert.match(handler.remote_traceback, /boom in room e/);

    const query = await rejection(hw.query("game", "room_total")());
    assert.equal(query.code, "schema_error");
  });

  test("tokens: none, and one without the scope", async () => {
    const anonymous = connect(server.url);
    assert.deepEqual((({ code, status }) => ({ code, status }))(await rejection(anonymous.pstate("game", "rooms").at("x").get())),
      { code: "unauthorized", status: 401 });
    const producer = connect(server.url, { token: TOKENS.append });
    await producer.depot("game", "ops").append(op("t1", "score", "ann", 1));
    const denied = await rejection(producer.pstate("game", "rooms").at("t1").get());
    assert.deepEqual([denied.code, denied.status], ["permission_denied", 403]);
    const watchDenied = await rejection(connect(server.url, { token: TOKENS.append, WebSocket }).pstate("game", "rooms")
      .at("t1").watch());
    assert.equal(watchDenied.code, "permission_denied");
  });

  test("an unreachable server, and an answer that never comes", async () => {
    const nowhere = connect(`http://127.0.0.1:${await freePort()}`, { timeoutS: 5 }); // nothing listens there
    const unavailable = await rejection(nowhere.pstate("game", "rooms").at("x").get());
    assert.deepEqual([unavailable.code, unavailable.status], ["unavailable", 0]);
    assert.match(unavailable.message, /ECONNREFUSED/);
    const hanging = (_, init) => new Promise((_resolve, reject) => {
      init.signal.addEventListener("abort", () => reject(new Error("aborted")));
    });
    const slow = connect(server.url, { fetch: hanging, timeoutS: 0.2 });
    const timeout = await rejection(slow.pstate("game", "rooms").at("x").get());
    assert.equal(timeout.code, "timeout");
    const deaf = connect(server.url, { fetch: () => new Promise(() => {}), timeoutS: 0.2 }); // ignores its signal
    assert.equal((await rejection(deaf.pstate("game", "rooms").at("x").get())).code, "timeout");
    const mute = await rejection(hw.pstate("game", "rooms").at(1).watch());
    assert.equal(mute.code, "path_error");
  });
});

test("the global fetch is called as a browser's must be, on the global object", async () => {
  const real = globalThis.fetch;
  globalThis.fetch = function (...args) {
    if (this !== undefined && this !== globalThis) throw new TypeError("Failed to execute 'fetch' on 'Window': Illegal invocation");
    return real.apply(globalThis, args);
  };
  try {
    assert.ok(Array.isArray(await connect(server.url, { token: TOKENS.admin }).modules()));
  } finally {
    globalThis.fetch = real;
  }
});

describe("tailing a depot", () => {
  test("new records are pushed as they are appended, to onRecords and to for await", async () => {
    const ops = hw.depot("game", "ops");
    const batches = [];
    let appended;
    const tail = await ops.tail({ onRecords: (records, partition) => batches.push({ records, partition }) });
    try {
      assert.deepEqual(Object.keys(tail.offsets).sort(), ["0", "1"]);
      appended = await ops.append(op("t-1", "say", "ann", 1));
      await waitFor(() => batches.length === 1, "the record");
      const [{ records, partition }] = batches;
      assert.equal(partition, appended.partition);
      assert.deepEqual(records.map((r) => [r.partition, r.offset, r.event]),
        [[appended.partition, appended.offset, op("t-1", "say", "ann", 1)]]);
      assert.equal(tail.offsets[appended.partition], appended.offset + 1);
      await ops.appendMany([op("t-1", "say", "bo", 2), op("t-1", "say", "cy", 3)]); // the same room: the same partition
      await waitFor(() => tail.offsets[appended.partition] === appended.offset + 3, "the next two");
    } finally {
      tail.close();
    }
    const again = await ops.tail({ from: { [appended.partition]: appended.offset } });
    assert.deepEqual(again.offsets, { [appended.partition]: appended.offset });
    const seen = [];
    for await (const record of again) {
      seen.push(record.offset - appended.offset);
      if (seen.length === 3) break; // leaving the loop closes the tail
    }
    assert.deepEqual(seen, [0, 1, 2]);
    assert.equal(again.closed, true);
  });

  test("bad offsets and tokens are refused with the server's error", async () => {
    const ops = hw.depot("game", "ops");
    assert.equal((await rejection(ops.tail({ from: { 9: 0 } }))).code, "bad_request");
    assert.equal((await rejection(ops.tail({ from: 10 ** 9 }))).code, "bad_request");
    assert.equal((await rejection(hw.depot("game", "nope").tail())).code, "not_found");
    const denied = connect(server.url, { token: TOKENS.append, WebSocket }).depot("game", "ops").tail();
    assert.equal((await rejection(denied)).code, "permission_denied");
  });
});

describe("watching", () => {
  test("an append changes the watched value, as a new object per commit", async () => {
    const seen = [];
    const watched = await hw.pstate("game", "rooms").at("w1").watch({ onChange: (diffs, value) => seen.push({ diffs, value }) });
    try {
      assert.equal(watched.value, null);
      await hw.depot("game", "ops").append(op("w1", "score", "ann", 5));
      await waitFor(() => watched.value?.scores?.ann === 5, "the first score");
      const before = watched.value;
      const frozen = JSON.stringify(before);
      await hw.depot("game", "ops").append(op("w1", "score", "bo", 3));
      await waitFor(() => watched.value.scores.bo === 3, "the second score");
      assert.notEqual(watched.value, before);
      assert.equal(JSON.stringify(before), frozen); // the old value was not changed
      assert.deepEqual(seen.at(-1).diffs, [{ op: "put", path: ["scores", "bo"], value: 3 }]);
      assert.equal(seen.at(-1).value, watched.value);
    } finally {
      watched.close();
    }
  });

  test("integer map keys: a diff's path step 7 is the object's key \"7\"", async () => {
    const watched = await hw.pstate("game", "counts").at("w3").watch();
    try {
      await hw.depot("game", "ops").appendMany([op("w3", "count", "", 7), op("w3", "count", "", 7), op("w3", "count", "", 2)]);
      await waitFor(() => watched.value?.[2] === 1, "the counts");
      assert.deepEqual(watched.value, { 7: 2, 2: 1 });
      assert.deepEqual(watched.value, await hw.pstate("game", "counts").at("w3").get());
    } finally {
      watched.close();
    }
  });

  test("for await yields each commit; leaving the loop closes the subscription", async () => {
    const watched = await hw.pstate("game", "rooms").at("w2", "chat").watch();
    const said = ["ann", "bo", "cy"];
    const appending = (async () => {
      for (const who of said) await hw.depot("game", "ops").append(op("w2", "say", who, 1));
    })();
    const values = [];
    for await (const commit of watched) {
      values.push(commit.value);
      if (commit.value?.length === said.length) break;
    }
    await appending;
    assert.deepEqual(values.at(-1), ["ann:1", "bo:1", "cy:1"]);
    assert.equal(watched.closed, true);
  });

  test("random writes: after every commit the rebuilt value equals get(), subindexed or not", async () => {
    let seed = 20251204;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const pick = (items) => items[Math.floor(random() * items.length)];
    const kinds = ["score", "score", "unscore", "tag", "untag", "say", "say", "trim", "title", "reset"];
    for (const pstate of ["rooms", "flat_rooms"]) {
      const view = hw.pstate("game", pstate).at("p1");
      const commits = [];
      const watched = await view.watch({ onChange: (diffs) => commits.push(diffs) });
      let rebuilt = watched.value; // applied one diff at a time, apart from the subscription's own
      let applied = 0;
      try {
        for (let i = 0; i < 60; i++) {
          await hw.depot("game", "ops").append(op("p1", pick(kinds), pick(["ann", "bo", "cy"]), Math.floor(random() * 9) - 3));
          const expected = normal(await view.get() ?? null);
          await waitFor(() => {
            for (; applied < commits.length; applied++) for (const diff of commits[applied]) rebuilt = applyDiff(rebuilt, diff);
            return deepEqual(normal(rebuilt), expected);
          }, `${pstate}: the diffs of write ${i} (expected ${JSON.stringify(expected)}, have ${JSON.stringify(rebuilt)})`);
          assert.deepEqual(normal(watched.value), expected);
        }
        assert.ok(commits.flat().every((diff) => diff.op !== "resync"), "every commit came as diffs, none as a resync");
        assert.ok(commits.flat().some((diff) => diff.path?.length > 1), "element diffs, not whole values");
      } finally {
        watched.close();
      }
    }
  });

  test("after the server restarts, the watch connects again and resyncs", async () => {
    const view = hw.pstate("game", "rooms").at("r1", "scores");
    const commits = [];
    const watched = await view.watch({ onChange: (diffs, value) => commits.push({ diffs, value }) });
    try {
      await hw.depot("game", "ops").append(op("r1", "score", "ann", 1));
      await waitFor(() => watched.value?.ann === 1, "the first score");
      let closedCommits = 0;
      const closedWhileDown = await view.watch({ onChange: () => closedCommits++ });
      await server.stop({ keepData: true });
      await waitFor(() => !watched.connected && !closedWhileDown.connected, "the drop to be noticed");
      closedWhileDown.close(); // while it tries to connect again: it stops trying
      server = await startServer({ port: server.port, data: server.data, ownsData: true });
      await waitFor(() => watched.connected, "the watch to connect again", 20);
      assert.deepEqual(commits.at(-1).diffs, [{ op: "resync", value: { ann: 1 } }]);
      await hw.depot("game", "ops").append(op("r1", "score", "bo", 2));
      await waitFor(() => watched.value?.bo === 2, "a score after the restart");
      assert.deepEqual(watched.value, { ann: 1, bo: 2 });
      assert.equal(closedCommits, 0);
      assert.equal(closedWhileDown.connected, false);
    } finally {
      watched.close();
    }
  });
});

/** A room as JSON with its set (tags) sorted: a set's order is not part of its value. */
function normal(value) {
  if (value && typeof value === "object" && Array.isArray(value.tags)) return { ...value, tags: [...value.tags].sort() };
  return value;
}

function deepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}
