// A topology: live events/s, lag and ack latency, and its dead letters with retry.

import { api, paths } from "../api.js";
import { sparkline } from "../charts.js";
import { $, esc, fmt, prettyJson } from "../dom.js";
import { history, subscribe } from "../live.js";
import { errorHtml } from "./depot.js";

const chart = (key, label, unit) => `
  <div class="card metric"><div class="row spaced"><span class="stat-label">${label}</span>
    <span class="stat" data-k="${key}-now">–</span></div>
    <div data-k="${key}" class="chart"></div><span class="muted small">${unit} · last minute</span></div>`;

export function renderTopology(root, module, name) {
  const topology = module.topologies.find((t) => t.name === name);
  if (!topology) throw new Error(`No topology named ${name} in module ${module.name}.`);
  root.innerHTML = `
    <div class="page-head"><h1>${esc(name)}</h1><p class="muted">${esc(topology.kind)} topology of ${esc(module.name)} ·
      subscribed to ${esc(topology.depots.join(", "))}</p></div>
    <div class="grid three">${chart("rate", "events/s", "records processed per second")}${chart("lag", "lag", "records appended, not yet processed")}${chart("latency", "ack p50", "milliseconds, full-ack appends")}</div>
    <div class="card"><div class="row spaced"><h2>Dead letters</h2><button id="refresh-dead" class="ghost" type="button">Refresh</button></div>
      <div id="dead"></div><div id="retry-result"></div></div>`;
  const loadDead = () => showDeadLetters(root, module.name, name);
  $("#refresh-dead", root).addEventListener("click", loadDead);
  loadDead();
  let lastDead = null;
  const unsubscribe = subscribe((stats) => {
    const live = stats && stats.modules.find((m) => m.name === module.name);
    const t = live && live.topologies.find((x) => x.name === name);
    if (!t) return;
    const key = `${module.name}/t/${name}`;
    for (const [field, now, color] of [["rate", fmt(t.rate), "var(--accent)"], ["lag", fmt(t.lag, 0), "var(--amber)"],
      ["latency", t.ack_p50_ms == null ? "–" : `${fmt(t.ack_p50_ms, 2)} ms`, "var(--teal)"]]) {
      $(`[data-k="${field}"]`, root).innerHTML = sparkline(history(key, field), { width: 360, height: 70, color, label: field });
      $(`[data-k="${field}-now"]`, root).textContent = now;
    }
    if (lastDead !== null && t.dead_letters !== lastDead) loadDead();
    lastDead = t.dead_letters;
  });
  return { dispose: unsubscribe };
}

async function showDeadLetters(root, module, topology) {
  const box = $("#dead", root);
  try {
    const { dead_letters: letters } = await api(paths.deadLetters(module, topology));
    if (!letters.length) {
      box.innerHTML = `<p class="muted empty">No dead letters: every record was processed.</p>`;
      return;
    }
    box.innerHTML = `<table class="table"><thead><tr><th class="num">id</th><th>where</th><th>error</th><th class="num">attempts</th><th></th></tr></thead>
      <tbody>${letters.map((d) => `<tr><td class="num mono">${d.id}</td>
        <td>partition ${d.partition}, offset ${d.offset}${d.step ? ` · step <code>${esc(d.step)}</code>` : ""}</td>
        <td><details><summary><code>${esc(d.error_type)}</code></summary><pre>${esc(d.traceback)}</pre></details></td>
        <td class="num">${d.attempts}</td><td><button type="button" data-retry="${d.id}">Retry</button></td></tr>`).join("")}</tbody></table>`;
    for (const button of box.querySelectorAll("[data-retry]")) {
      button.addEventListener("click", async () => {
        button.disabled = true;
        const out = $("#retry-result", root);
        try {
          const result = await api(paths.retry(module, topology, button.dataset.retry), { method: "POST" });
          out.innerHTML = `<div class="ok-box"><strong>retried</strong> dead letter ${esc(button.dataset.retry)}: <pre class="json">${prettyJson(result.value)}</pre></div>`;
          await showDeadLetters(root, module, topology);
        } catch (error) {
          out.innerHTML = errorHtml(error);
          button.disabled = false;
        }
      });
    }
  } catch (error) {
    box.innerHTML = errorHtml(error);
  }
}
