// The headwater web UI: a hash router over modules, depots, topologies, PStates and queries.

import { api, token, whenUnauthorized } from "./api.js";
import { $, esc } from "./dom.js";
import { start, subscribe } from "./live.js";
import { renderOverview } from "./views/overview.js";
import { renderModule } from "./views/module.js";
import { renderDepot } from "./views/depot.js";
import { renderTopology } from "./views/topology.js";
import { renderPState } from "./views/pstate.js";
import { renderQuery } from "./views/query.js";

const catalog = { modules: [], byName: new Map() };
let current = { dispose: () => {} };

async function loadCatalog() {
  const body = await api("/api/modules");
  catalog.modules = body.modules;
  catalog.byName = new Map(body.modules.map((m) => [m.name, m]));
  renderNav();
}

function renderNav() {
  const active = location.hash;
  $("#nav").innerHTML = catalog.modules.map((m) => {
    const base = `#/m/${encodeURIComponent(m.name)}`;
    const link = (href, label, kind) =>
      `<a class="nav-item ${active === href || active.startsWith(href + "?") ? "active" : ""}" href="${href}"><span class="kind kind-${kind}">${kind[0]}</span>${esc(label)}</a>`;
    return `<div class="nav-module">
      <a class="nav-title ${active === base ? "active" : ""}" href="${base}">${esc(m.name)}<span class="muted">v${m.version ?? 1} · ${m.tasks} tasks</span></a>
      ${m.depots.map((d) => link(`${base}/depot/${encodeURIComponent(d.name)}`, d.name, "depot")).join("")}
      ${m.topologies.map((t) => link(`${base}/topology/${encodeURIComponent(t.name)}`, t.name, "topology")).join("")}
      ${m.pstates.map((p) => link(`${base}/pstate/${encodeURIComponent(p.name)}`, p.name, "pstate")).join("")}
      ${m.queries.map((q) => link(`${base}/query/${encodeURIComponent(q.name)}`, q.name, "query")).join("")}
    </div>`;
  }).join("") || `<p class="muted pad">No modules deployed.</p>`;
}

function crumbs(parts) {
  $("#crumbs").innerHTML = parts.map(([label, href], i) =>
    href && i < parts.length - 1 ? `<a href="${href}">${esc(label)}</a>` : `<span>${esc(label)}</span>`).join('<span class="sep">/</span>');
}

function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

async function route() {
  current.dispose();
  current = { dispose: () => {} };
  const view = $("#view");
  const { parts, query } = parseHash();
  renderNav();
  try {
    if (parts.length === 0) {
      crumbs([["Overview"]]);
      current = renderOverview(view, catalog);
      return;
    }
    const [, moduleName, kind, name] = parts;
    const module = catalog.byName.get(moduleName);
    if (parts[0] !== "m" || !module) throw new Error(`No module named ${moduleName}.`);
    const home = `#/m/${encodeURIComponent(moduleName)}`;
    const trail = [["Overview", "#/"], [moduleName, home]];
    const renderers = { depot: renderDepot, topology: renderTopology, pstate: renderPState, query: renderQuery };
    if (!kind) {
      crumbs(trail);
      current = renderModule(view, module);
    } else if (renderers[kind]) {
      crumbs([...trail, [`${kind} ${name}`]]);
      current = (await renderers[kind](view, module, name, query)) || current;
    } else {
      throw new Error(`Unknown page ${kind}.`);
    }
  } catch (error) {
    view.innerHTML = `<div class="card error-card"><h2>Cannot show this page</h2><p>${esc(error.message)}</p><a href="#/">Back to the overview</a></div>`;
  }
}

function setupToken() {
  const dialog = $("#token-dialog");
  const open = () => { $("#token-input").value = token.get(); dialog.showModal(); };
  $("#token-button").addEventListener("click", open);
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue === "save") {
      token.set($("#token-input").value.trim());
      await boot();
    }
  });
  whenUnauthorized(() => { if (!dialog.open) open(); });
}

function setupServerState() {
  subscribe((stats, error) => {
    const dot = $("#server-state");
    dot.className = `dot ${error ? "bad" : "good"}`;
    $("#server-label").textContent = error ? (error.status === 401 ? "token needed" : "server unreachable") : `live · ${stats.modules.length} modules`;
  });
}

async function boot() {
  try {
    await loadCatalog();
  } catch (error) {
    $("#view").innerHTML = `<div class="card error-card"><h2>Cannot reach the API</h2><p>${esc(error.message)}</p></div>`;
    return;
  }
  start();
  await route();
}

window.addEventListener("hashchange", route);
setupToken();
setupServerState();
boot();
