// The landing page: every module at a glance, with live event rates per topology.

import { sparkline } from "../charts.js";
import { $, esc, fmt } from "../dom.js";
import { history, subscribe } from "../live.js";

export function renderOverview(root, catalog) {
  root.innerHTML = `
    <div class="page-head"><h1>Overview</h1><p class="muted">Modules deployed on this server, live.</p></div>
    <div class="grid cards">${catalog.modules.map((m) => `
      <a class="card module-card" href="#/m/${encodeURIComponent(m.name)}" data-module="${esc(m.name)}">
        <div class="card-head"><h2>${esc(m.name)}</h2><span class="pill">${m.tasks} tasks</span></div>
        <div class="stats-row">
          <div><span class="stat" data-k="records">–</span><span class="stat-label">records</span></div>
          <div><span class="stat" data-k="rate">–</span><span class="stat-label">events/s</span></div>
          <div><span class="stat" data-k="lag">–</span><span class="stat-label">lag</span></div>
          <div><span class="stat" data-k="dead">–</span><span class="stat-label">dead letters</span></div>
        </div>
        <div class="spark-slot" data-k="spark"></div>
        <p class="muted small">${m.depots.length} depots · ${m.pstates.length} PStates · ${m.topologies.length} topologies · ${m.queries.length} queries</p>
      </a>`).join("")}
    </div>`;
  const unsubscribe = subscribe((stats) => {
    if (!stats) return;
    for (const module of stats.modules) {
      const card = root.querySelector(`[data-module="${CSS.escape(module.name)}"]`);
      if (!card) continue;
      const sum = (items, key) => items.reduce((total, item) => total + (item[key] || 0), 0);
      $('[data-k="records"]', card).textContent = fmt(sum(module.depots, "records"), 0);
      $('[data-k="rate"]', card).textContent = fmt(sum(module.topologies, "rate"));
      $('[data-k="lag"]', card).textContent = fmt(sum(module.topologies, "lag"), 0);
      const dead = sum(module.topologies, "dead_letters");
      const deadCell = $('[data-k="dead"]', card);
      deadCell.textContent = fmt(dead, 0);
      deadCell.classList.toggle("warn", dead > 0);
      const series = module.topologies.map((t) => history(`${module.name}/t/${t.name}`, "rate"));
      const length = Math.max(0, ...series.map((s) => s.length));
      const total = Array.from({ length }, (_, i) => series.reduce((acc, s) => acc + (s[i - (length - s.length)] || 0), 0));
      $('[data-k="spark"]', card).innerHTML = sparkline(total, { width: 280, height: 44, label: "events per second" });
    }
  });
  return { dispose: unsubscribe };
}
