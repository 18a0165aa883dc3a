// One module: its depots, topologies (live rates, lag, latency, dead letters), PStates, queries,
// and where each task runs (worker, process id, up or not).

import { bars, sparkline } from "../charts.js";
import { $, esc, fmt } from "../dom.js";
import { history, subscribe } from "../live.js";

const link = (module, kind, name) => `#/m/${encodeURIComponent(module)}/${kind}/${encodeURIComponent(name)}`;

// The modules this one mirrors (what of each), and the modules that mirror it.
function dependencies(module) {
  const uses = new Map();
  for (const d of module.mirrors || []) {
    if (!uses.has(d.module)) uses.set(d.module, []);
    uses.get(d.module).push(d);
  }
  const usedBy = module.mirrored_by || [];
  if (!uses.size && !usedBy.length) return "";
  const mod = (name) => `<a href="#/m/${encodeURIComponent(name)}">${esc(name)}</a>`;
  const items = [...uses].map(([name, parts]) => `<li data-uses="${esc(name)}">${mod(name)}: ${parts.map((d) =>
    `<a href="${link(name, d.kind, d.name)}">${esc(d.name)}</a> <span class="pill muted">${esc(d.kind)}</span>`).join(" ")}</li>`);
  return `<div class="card" id="dependencies"><h2>Between modules</h2><div class="grid two">
    <div><h3 class="small muted">mirrors</h3><ul class="list">${items.join("") || '<li class="muted">none</li>'}</ul></div>
    <div><h3 class="small muted">mirrored by</h3><ul class="list">${usedBy.map((n) => `<li data-used-by="${esc(n)}">${mod(n)}</li>`).join("") || '<li class="muted">none</li>'}</ul></div>
  </div></div>`;
}

export function renderModule(root, module) {
  const m = module.name;
  root.innerHTML = `
    <div class="page-head"><h1>${esc(m)}</h1><p class="muted">version ${module.version ?? 1} · ${module.tasks} tasks · steps: ${esc(module.steps.join(", ") || "none")}</p></div>
    ${dependencies(module)}
    <div class="card"><h2>Topologies</h2>
      <table class="table"><thead><tr><th>topology</th><th>kind</th><th>depots</th><th class="num">events/s</th><th></th>
        <th class="num">processed</th><th class="num">lag</th><th class="num">ack p50</th><th class="num">dead letters</th></tr></thead>
      <tbody>${module.topologies.map((t) => `<tr data-topology="${esc(t.name)}">
        <td><a href="${link(m, "topology", t.name)}">${esc(t.name)}</a></td><td><span class="pill">${esc(t.kind)}</span></td>
        <td>${esc(t.depots.join(", "))}</td><td class="num" data-k="rate">–</td><td data-k="spark"></td>
        <td class="num" data-k="processed">–</td><td class="num" data-k="lag">–</td><td class="num" data-k="latency">–</td>
        <td class="num" data-k="dead">–</td></tr>`).join("")}</tbody></table>
    </div>
    <div class="card"><h2>Depots</h2>
      <table class="table"><thead><tr><th>depot</th><th>event</th><th>partition by</th><th class="num">records</th><th>partitions</th></tr></thead>
      <tbody>${module.depots.map((d) => `<tr data-depot="${esc(d.name)}">
        <td><a href="${link(m, "depot", d.name)}">${esc(d.name)}</a>${d.source ? ` <span class="pill muted" title="an external depot">from ${esc(d.source)}</span> <span data-k="source"></span>` : d.client_appends ? "" : ' <span class="pill muted">topologies only</span>'}</td>
        <td><code>${esc(d.event_type.name || d.event_type.type)}</code></td><td>${esc(d.partition_by ?? "round robin")}</td>
        <td class="num" data-k="records">–</td><td class="wide" data-k="bars"></td></tr>`).join("")}</tbody></table>
    </div>
    <div class="card" id="migrations" hidden><h2>Migrations</h2>
      <table class="table"><thead><tr><th>PState or depot</th><th>migration</th><th class="num">version</th><th class="num">rewritten</th><th>progress</th></tr></thead>
      <tbody></tbody></table>
    </div>
    <div class="card"><h2>Tasks</h2>
      <table class="table"><thead><tr><th class="num">task</th><th>runs in</th><th class="num">pid</th><th>state</th><th class="num">appends in flight</th><th>followers</th></tr></thead>
      <tbody id="hosts"><tr><td colspan="6" class="muted">–</td></tr></tbody></table>
    </div>
    <div class="grid two">
      <div class="card"><h2>PStates</h2><ul class="list">${module.pstates.map((p) => `
        <li><a href="${link(m, "pstate", p.name)}">${esc(p.name)}</a><code class="schema">${esc(p.schema.repr)}</code></li>`).join("")}</ul></div>
      <div class="card"><h2>Queries</h2><ul class="list">${module.queries.map((q) => `
        <li><a href="${link(m, "query", q.name)}">${esc(q.name)}</a><code class="schema">(${esc(q.parameters.map((p) => p.name).join(", "))})</code></li>`).join("") || '<li class="muted">none</li>'}</ul></div>
    </div>`;
  const unsubscribe = subscribe((stats) => {
    const live = stats && stats.modules.find((x) => x.name === m);
    if (!live) return;
    for (const t of live.topologies) {
      const row = root.querySelector(`[data-topology="${CSS.escape(t.name)}"]`);
      if (!row) continue;
      $('[data-k="rate"]', row).textContent = fmt(t.rate);
      $('[data-k="spark"]', row).innerHTML = sparkline(history(`${m}/t/${t.name}`, "rate"), { width: 120, height: 26, label: "events per second" });
      $('[data-k="processed"]', row).textContent = fmt(t.processed, 0);
      $('[data-k="lag"]', row).textContent = fmt(t.lag, 0);
      $('[data-k="latency"]', row).textContent = t.ack_p50_ms == null ? "–" : `${fmt(t.ack_p50_ms, 2)} ms`;
      const dead = $('[data-k="dead"]', row);
      dead.textContent = fmt(t.dead_letters, 0);
      dead.classList.toggle("warn", t.dead_letters > 0);
    }
    $("#hosts", root).innerHTML = (live.hosts || []).map((h) => `<tr data-task="${h.task}">
      <td class="num">${h.task}</td><td>${h.worker == null ? "this process" : `worker ${h.worker}`}</td>
      <td class="num">${h.pid}</td><td>${h.up ? '<span class="pill">up</span>' : `<span class="pill warn" title="${esc(h.error || "no answer")}">down</span>`}</td>
      <td class="num">${h.appends_in_flight == null ? "–" : fmt(h.appends_in_flight, 0)}</td>
      <td>${(h.followers || []).map((f) => `<span class="pill${f.in_sync ? "" : " warn"}" title="${f.in_sync ? "in sync" : "catching up"}; lag ${f.lag == null ? "unknown" : f.lag} write batches">worker ${f.worker}${f.in_sync ? "" : " · catching up"}</span>`).join(" ") || '<span class="muted">–</span>'}</td></tr>`).join("");
    const migrations = live.migrations || [];
    $("#migrations", root).hidden = migrations.length === 0;
    $("#migrations tbody", root).innerHTML = migrations.map((g) => `<tr data-migration="${esc(g.kind)}/${esc(g.name)}">
      <td><a href="${link(m, g.kind, g.name)}">${esc(g.name)}</a> <span class="pill muted">${esc(g.kind)}</span></td><td><code>${esc(g.ids.join(", "))}</code></td>
      <td class="num">${g.version}</td><td class="num">${fmt(g.moved, 0)} / ${fmt(g.total, 0)}</td>
      <td>${g.done ? '<span class="pill">done</span>' : `<progress max="${Math.max(g.total, 1)}" value="${g.moved}"></progress>`}</td></tr>`).join("");
    for (const d of live.depots) {
      const row = root.querySelector(`[data-depot="${CSS.escape(d.name)}"]`);
      if (!row) continue;
      $('[data-k="records"]', row).textContent = fmt(d.records, 0);
      const source = $('[data-k="source"]', row);
      if (source) source.innerHTML = sourceState(live.hosts || [], d.name);
      $('[data-k="bars"]', row).innerHTML = bars(d.partitions, { labels: d.partitions.map((_, i) => `p${i}`) });
    }
  });
  return { dispose: unsubscribe };
}

// An external depot's ingestion, from the tasks' status rows: paused, failing, or how far behind its source.
function sourceState(hosts, depot) {
  const parts = hosts.map((h) => h.sources && h.sources[depot]).filter(Boolean);
  if (!parts.length) return "";
  const errors = parts.filter((p) => p.error);
  if (errors.length) return `<span class="pill warn" title="${esc(errors[0].error)}">failing</span>`;
  if (parts.some((p) => p.paused)) return '<span class="pill warn">paused</span>';
  const lags = parts.map((p) => p.lag).filter((lag) => lag != null);
  const unit = parts[0].lag_unit;
  return lags.length ? `<span class="pill" title="how far the source is ahead">lag ${fmt(lags.reduce((a, b) => a + b, 0), 0)} ${esc(unit)}</span>` : "";
}
