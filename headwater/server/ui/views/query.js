// The query runner: fill in arguments, run, see the result and how long it took.

import { api, paths } from "../api.js";
import { $, esc, fmt, parseLoose, prettyJson } from "../dom.js";
import { errorHtml } from "./depot.js";

const typeName = (t) => t.name || t.type;

export function renderQuery(root, module, name) {
  const query = module.queries.find((q) => q.name === name);
  if (!query) throw new Error(`No query named ${name} in module ${module.name}.`);
  root.innerHTML = `
    <div class="page-head"><h1>${esc(name)}</h1><p class="muted">query of ${esc(module.name)}${query.route_by ? ` · runs on the task owning <code>${esc(query.route_by)}</code>` : ""}</p></div>
    <div class="card"><h2>Run</h2>
      <form id="query-form" class="stack">
        ${query.parameters.map((p, i) => `<label class="field"><span>${esc(p.name)} <code class="muted">${esc(typeName(p.type))}</code>${p.required ? "" : ' <span class="muted">(optional)</span>'}</span>
          <input data-arg="${i}" name="${esc(p.name)}" placeholder="JSON, or plain text for a string" spellcheck="false"></label>`).join("") || '<p class="muted">This query takes no arguments.</p>'}
        <div class="row"><button type="submit">Run query</button><span id="query-time" class="muted small"></span></div>
      </form>
      <div id="query-result"></div>
    </div>`;
  $("#query-form", root).addEventListener("submit", async (e) => {
    e.preventDefault();
    const kwargs = {};
    for (const input of root.querySelectorAll("[data-arg]")) {
      if (input.value.trim() !== "") kwargs[input.name] = parseLoose(input.value.trim());
    }
    const out = $("#query-result", root);
    const started = performance.now();
    try {
      const result = await api(paths.query(module.name, name), { method: "POST", body: JSON.stringify({ kwargs }) });
      $("#query-time", root).textContent = `${fmt(performance.now() - started, 1)} ms`;
      out.innerHTML = `<pre class="json result">${prettyJson(result.value)}</pre>`;
    } catch (error) {
      $("#query-time", root).textContent = "";
      out.innerHTML = errorHtml(error);
    }
  });
  return { dispose: () => {} };
}
