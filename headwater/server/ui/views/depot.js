// A depot: partition sizes, a live tail of its newest records (pushed by the server over the tail
// socket), and a form to append an event.

import { api, liveBadge, paths, pushed } from "../api.js";
import { bars, sparkline } from "../charts.js";
import { $, esc, fmt, json, prettyJson } from "../dom.js";
import { history, subscribe } from "../live.js";

const TAIL_ROWS = 50;
const TAIL_SEED = 20; // records per partition shown when the page opens

// A plausible event for a JSON Schema, to start the append form with.
export function example(schema, defs = {}, depth = 0) {
  if (!schema || depth > 6) return null;
  if (schema.$ref) return example(defs[schema.$ref.split("/").pop()], defs, depth + 1);
  if (schema.anyOf) return example(schema.anyOf.find((s) => s.type !== "null") || schema.anyOf[0], defs, depth + 1);
  switch (schema.type) {
    case "object": return Object.fromEntries(Object.entries(schema.properties || {}).map(([k, v]) => [k, example(v, defs, depth + 1)]));
    case "array": return [example(schema.items, defs, depth + 1)];
    case "integer": return 1;
    case "number": return 1.5;
    case "boolean": return true;
    case "string":
      return { uuid: crypto.randomUUID ? crypto.randomUUID() : "8a5e3a6c-6f0b-4d38-9f1e-2b7c1d0e9a41",
               "date-time": new Date().toISOString(), date: new Date().toISOString().slice(0, 10) }[schema.format] || "example";
    default: return null;
  }
}

export function errorHtml(error) {
  const trace = error.body && error.body.remote_traceback;
  return `<div class="alert"><strong>${esc(error.code || "error")}</strong> ${esc(error.message)}
    ${trace ? `<details><summary>remote traceback</summary><pre>${esc(trace)}</pre></details>` : ""}</div>`;
}

export function renderDepot(root, module, name) {
  const depot = module.depots.find((d) => d.name === name);
  if (!depot) throw new Error(`No depot named ${name} in module ${module.name}.`);
  const schema = depot.event_schema || {};
  root.innerHTML = `
    <div class="page-head"><h1>${esc(name)}</h1><p class="muted">depot of ${esc(module.name)} · event <code>${esc(depot.event_type.name || depot.event_type.type)}</code> ·
      partitioned by ${esc(depot.partition_by ?? "round robin")} · topologies: ${esc(depot.topologies.join(", ") || "none")}</p></div>
    <div class="grid two">
      <div class="card"><h2>Partitions</h2><div data-k="bars" class="muted">loading…</div>
        <div class="row spaced"><span class="muted small">records/s</span><span data-k="spark"></span></div></div>
      <div class="card"><h2>Append</h2>${depot.client_appends ? `
        <form id="append-form" class="stack">
          <textarea id="event" spellcheck="false" rows="7">${esc(json(example(schema, schema.$defs || {})))}</textarea>
          <div class="row">
            <label>ack <select id="ack"><option>full</option><option>append</option><option>none</option></select></label>
            <input id="idempotency" placeholder="idempotency key (optional)">
            <button type="submit">Append</button>
          </div>
          <div id="append-result"></div>
        </form>` : `<p class="muted">Only this module's topologies append here (client_appends=False).</p>`}
      </div>
    </div>
    <div class="card"><div class="row spaced"><h2>Live tail</h2><span class="row"><span class="muted small" id="tail-state">newest first</span><span id="live" class="live-badge"></span></span></div>
      <table class="table mono"><thead><tr><th>time</th><th>partition</th><th class="num">offset</th><th>event</th></tr></thead>
      <tbody id="tail"></tbody></table></div>`;

  const form = $("#append-form", root);
  if (form) form.addEventListener("submit", (e) => { e.preventDefault(); append(root, module.name, name); });

  const unsubscribe = subscribe((stats) => {
    const live = stats && stats.modules.find((m) => m.name === module.name);
    const d = live && live.depots.find((x) => x.name === name);
    if (!d) return;
    $('[data-k="bars"]', root).innerHTML = bars(d.partitions, { labels: d.partitions.map((_, i) => `partition ${i}`) });
    $('[data-k="spark"]', root).innerHTML = sparkline(history(`${module.name}/d/${name}`, "rate"), { width: 200, height: 28, label: "records per second" });
  });
  const tail = followTail(root, module.name, name);
  return { dispose: () => { unsubscribe(); tail.dispose(); } };
}

// The newest records, newest first: the last TAIL_SEED of each partition, then every record the
// server pushes as it is committed. Returns `dispose`, which closes the socket.
function followTail(root, module, name) {
  const badge = liveBadge($("#live", root));
  const depot = pushed().depot(module, name);
  let rows = [];
  let tail = null;
  let disposed = false;
  let seedEnds = {};
  const show = (records) => {
    records.forEach((r) => (r.fresh = r.offset >= (seedEnds[r.partition] ?? 0)));
    rows = [...records, ...rows].sort((a, b) => (b.timestamp > a.timestamp ? 1 : b.timestamp < a.timestamp ? -1 : b.offset - a.offset)).slice(0, TAIL_ROWS);
    $("#tail", root).innerHTML = rows.map((r) => `<tr class="${r.fresh ? "fresh" : ""}"><td>${esc(r.timestamp.replace("T", " ").slice(0, 23))}</td>
      <td>p${r.partition}</td><td class="num">${r.offset}</td><td><code>${esc(JSON.stringify(r.event))}</code></td></tr>`).join("");
    rows.forEach((r) => (r.fresh = false));
  };
  (async () => {
    const partitions = await depot.partitions();
    seedEnds = Object.fromEntries(partitions.map((p) => [p.partition, p.end_offset]));
    const from = Object.fromEntries(partitions.map((p) => [p.partition, Math.max(p.start_offset, p.end_offset - TAIL_SEED)]));
    const opened = await depot.tail({ from, onRecords: show, ...badge.hooks });
    if (disposed) opened.close();
    else { tail = opened; badge.set("live"); }
  })().catch((error) => {
    if (disposed) return;
    badge.set("error", error.message);
    $("#tail-state", root).textContent = error.message;
  });
  return { dispose: () => { disposed = true; if (tail) tail.close(); } };
}

async function append(root, module, depot) {
  const out = $("#append-result", root);
  const started = performance.now();
  try {
    const body = $("#event", root).value;
    const key = $("#idempotency", root).value.trim();
    const headers = key ? { "Idempotency-Key": key } : {};
    const result = await api(paths.append(module, depot), { method: "POST", params: { ack: $("#ack", root).value }, body, headers });
    const elapsed = performance.now() - started;
    out.innerHTML = `<div class="ok-box"><div class="row spaced"><strong>appended</strong><span class="muted small">${fmt(elapsed, 1)} ms</span></div>
      <pre class="json">${prettyJson(result)}</pre></div>`;
  } catch (error) {
    out.innerHTML = errorHtml(error);
  }
}
