// The PState browser: walk a PState's keys and nested values by path, a page at a time; the
// value at the path is watched (the server pushes each commit's diffs), so the page is live.

import { api, liveBadge, paths, pushed } from "../api.js";
import { $, esc, fmt, json, parseLoose, prettyJson } from "../dom.js";
import { errorHtml } from "./depot.js";

const PAGE = 25;
const PREVIEW_CHARS = 120;
const COUNTS_IN_FLIGHT_MAX = 8; // per-task counts the browser asks for at once (a module has up to 1024 tasks)
// A collection is watched live only up to this many elements: a watch holds the whole value at its
// path (in the server and here), so a bigger one is browsed page by page; open an entry to watch it.
const LIVE_ELEMENTS_MAX = 1_000;

function nodeAt(schema, steps) {
  let node = schema;
  for (const step of steps) {
    if (node.kind === "map" || node.kind === "list") node = node.value;
    else if (node.kind === "record") node = node.fields[step];
    if (!node) return null;
  }
  return node;
}

function preview(value) {
  const text = JSON.stringify(value);
  return text === undefined ? "" : text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text;
}

function label(step) {
  return typeof step === "string" ? step : JSON.stringify(step);
}

const COLLECTIONS = ["map", "set", "list"];

// What each task holds at this path: a collection's size, or 1/0 for a value that is there or not
// (null where the read failed). Data spread over tasks may all live on one of them.
async function countPerTask(tasks, node, readOn) {
  const op = COLLECTIONS.includes(node.kind) ? "size" : "exists";
  const counts = new Array(tasks).fill(null);
  let next = 0;
  const worker = async () => {
    while (next < tasks) {
      const task = next++;
      try {
        const body = await readOn(task, op);
        counts[task] = op === "size" ? body.value : body.value ? 1 : 0;
      } catch {
        counts[task] = null;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(COUNTS_IN_FLIGHT_MAX, tasks) }, worker));
  return counts;
}

function holding(count, node) {
  if (count === null) return "unknown (the read failed)";
  if (!COLLECTIONS.includes(node.kind)) return count ? "a value" : "nothing";
  return count === 0 ? "empty" : entries(count);
}

function entries(count) {
  return `${fmt(count, 0)} ${count === 1 ? "entry" : "entries"}`;
}

export async function renderPState(root, module, name, query) {
  const pstate = module.pstates.find((p) => p.name === name);
  if (!pstate) throw new Error(`No PState named ${name} in module ${module.name}.`);
  const steps = JSON.parse(query.get("path") || "[]");
  const spread = pstate.partitioned && module.tasks > 1;
  // A keyed map routes by its first key; anything else spread over tasks is read on one task.
  const needsTask = spread && (!pstate.keyed || steps.length === 0);
  const node = nodeAt(pstate.schema, steps);
  const readOn = (task, op) => api(paths.pstate(module.name, name, op), { params: { path: JSON.stringify(steps), task } });
  const counts = needsTask && node ? await countPerTask(module.tasks, node, readOn) : null;
  // Open on the first task holding something, not on an empty task 0 while the data is elsewhere.
  const firstHolding = counts ? Math.max(0, counts.findIndex((count) => count > 0)) : 0;
  const task = query.get("task") ?? (needsTask ? String(firstHolding) : "");
  const start = query.get("start");
  const href = (newSteps, extra = {}) => {
    const params = new URLSearchParams({ path: JSON.stringify(newSteps), ...extra });
    // Below a keyed map's first key, reads route by that key: the task is not carried along.
    const targetNeedsTask = spread && (!pstate.keyed || newSteps.length === 0);
    if (task !== "" && (targetNeedsTask || (query.has("task") && !pstate.keyed))) params.set("task", task);
    return `#/m/${encodeURIComponent(module.name)}/pstate/${encodeURIComponent(name)}?${params}`;
  };
  const read = (op, params = {}) =>
    api(paths.pstate(module.name, name, op), { params: { path: JSON.stringify(steps), task: needsTask || query.has("task") ? task : "", ...params } });

  const crumbs = [`<a href="${href([])}">${esc(name)}</a>`, ...steps.map((s, i) => `<a href="${href(steps.slice(0, i + 1))}">${esc(label(s))}</a>`)];
  root.innerHTML = `
    <div class="page-head"><h1>${esc(name)}</h1><p class="muted">PState of ${esc(module.name)} · <code>${esc(pstate.schema.repr)}</code></p></div>
    <div class="card">
      <div class="row spaced wrap">
        <div class="path">${crumbs.join('<span class="sep">›</span>')}</div>
        <div class="row">
          <span id="live" class="live-badge"></span>
          ${spread ? `<label>task <select id="task">${needsTask ? "" : `<option value="">by key</option>`}${Array.from({ length: module.tasks }, (_, i) =>
            `<option value="${i}" ${String(i) === task ? "selected" : ""}>${i}${counts ? ` · ${esc(holding(counts[i], node))}` : ""}</option>`).join("")}</select></label>` : ""}
          ${node && (node.kind === "map" || node.kind === "list" || (node.kind === "leaf" && node.type.type === "any")) ? `
            <form id="goto" class="row"><input id="goto-key" placeholder="${node.kind === "list" ? "index" : "key"}" aria-label="go to key"><button class="ghost">Open</button></form>` : ""}
        </div>
      </div>
      <p class="muted small">${node ? `at this path: <code>${esc(node.repr)}</code>` : ""}${spread && needsTask ? ` · spread over ${module.tasks} tasks: showing task ${esc(task)}` : ""}${counts && COLLECTIONS.includes(node.kind) ? ` (${esc(entries(counts.reduce((sum, count) => sum + (count || 0), 0)))} on all tasks)` : ""}</p>
      <div id="content" class="muted" data-task="${esc(task)}" data-path="${esc(JSON.stringify(steps))}">loading…</div>
    </div>`;

  const onTask = (value) => {
    const params = new URLSearchParams({ path: JSON.stringify(steps) });
    if (value !== "") params.set("task", value);
    return `#/m/${encodeURIComponent(module.name)}/pstate/${encodeURIComponent(name)}?${params}`;
  };
  const taskSelect = $("#task", root);
  if (taskSelect) taskSelect.addEventListener("change", () => { location.hash = onTask(taskSelect.value); });
  const goto = $("#goto", root);
  if (goto) goto.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("#goto-key", root).value.trim();
    if (!text) return;
    const keyType = node.kind === "map" ? node.key.type : "any";
    const key = node.kind === "list" ? Number(text) : ["str", "uuid", "datetime", "date", "decimal"].includes(keyType) ? text : parseLoose(text);
    location.hash = href([...steps, key]);
  });

  const content = $("#content", root);
  const ctx = { read, href, steps, start, query, empty: null };
  try {
    if (!node) throw new Error("This path does not fit the schema.");
    ctx.empty = counts ? emptyHere(counts, Number(task), node, onTask) : null;
    content.innerHTML = await renderNode(node, ctx);
    content.classList.remove("muted");
  } catch (error) {
    content.innerHTML = errorHtml(error);
  }
  content.dataset.ready = "true"; // for tests and scripts: this path's content is in
  const taskChosen = needsTask || query.has("task");
  return watchLive(root, content, node, ctx, pushed().pstate(module.name, name, taskChosen ? { task: Number(task) } : {}).at(...steps));
}

// Watch the path and redraw the content on each commit the server pushes: a value or record from
// the watched value itself, a collection's page by reading it again (once per burst of commits).
// Returns the view's `dispose`, which closes the socket.
function watchLive(root, content, node, ctx, view) {
  const badge = liveBadge($("#live", root));
  let subscription = null;
  let disposed = false;
  const dispose = () => { disposed = true; if (subscription) subscription.close(); };
  if (!node) {
    badge.set("off", "this path does not fit the schema");
    return { dispose };
  }
  const collection = COLLECTIONS.includes(node.kind);
  let redrawing = false;
  let again = false;
  const redraw = async (value) => {
    if (!collection) {
      content.innerHTML = node.kind === "record" ? recordHtml(node, ctx, value !== null, value) : leafHtml(ctx, value !== null, value);
      return;
    }
    if (redrawing) { again = true; return; }
    redrawing = true;
    try {
      do {
        again = false;
        content.innerHTML = await renderNode(node, ctx);
      } while (again && !disposed);
    } catch (error) {
      content.innerHTML = errorHtml(error);
    } finally {
      redrawing = false;
    }
  };
  const onChange = (diffs, value) => {
    if (disposed) return;
    content.dataset.commits = String(Number(content.dataset.commits || 0) + 1); // for tests and scripts
    if (diffs.some((diff) => diff.op === "resync")) content.dataset.resyncs = String(Number(content.dataset.resyncs || 0) + 1);
    redraw(value);
  };
  (async () => {
    if (collection) {
      const size = (await ctx.read("size")).value;
      if (size > LIVE_ELEMENTS_MAX) {
        badge.set("off", `${fmt(size, 0)} entries: more than ${fmt(LIVE_ELEMENTS_MAX, 0)} are not watched live; open an entry to watch it`);
        return;
      }
    }
    const opened = await view.watch({ onChange, ...badge.hooks });
    if (disposed) {
      opened.close();
      return;
    }
    subscription = opened;
    badge.set("live");
    redraw(opened.value); // a commit between the first read and the watch is shown too
  })().catch((error) => { if (!disposed) badge.set("error", error.message); });
  return { dispose };
}

// The empty message of one task of a spread PState, saying which tasks hold the data, with links.
function emptyHere(counts, task, node, onTask) {
  const what = COLLECTIONS.includes(node.kind) ? `This ${node.kind} is empty` : "Nothing is stored at this path";
  const others = counts.map((count, i) => [i, count]).filter(([i, count]) => i !== task && count > 0);
  if (!others.length) return `<p class="muted empty">${what} on ${counts.length === 1 ? "its task" : `all ${counts.length} tasks`}.</p>`;
  const links = others.map(([i, count]) =>
    `<a class="task-link" data-task="${i}" href="${onTask(String(i))}">task ${i}</a> holds ${esc(holding(count, node))}`);
  return `<p class="muted empty">${what} on task ${task}; ${links.join(", ")}.</p>`;
}

async function renderNode(node, ctx) {
  if (node.kind === "map") return renderMap(node, ctx);
  if (node.kind === "set") return renderSet(ctx);
  if (node.kind === "list") return renderList(node, ctx);
  const body = await ctx.read("get");
  return node.kind === "record" ? recordHtml(node, ctx, body.found, body.value) : leafHtml(ctx, body.found, body.value);
}

function leafHtml(ctx, found, value) {
  return found ? `<pre class="json">${prettyJson(value)}</pre>` : ctx.empty || `<p class="muted empty">Nothing is stored at this path.</p>`;
}

function pager(ctx, next, total) {
  const links = [];
  if (ctx.start !== null) links.push(`<a class="button ghost" href="${ctx.href(ctx.steps)}">← First</a>`);
  if (next) links.push(`<a class="button ghost" id="next-page" href="${ctx.href(ctx.steps, { start: json(next.start, 0) })}">Next →</a>`);
  return `<div class="row spaced"><span class="muted small">${total === null ? "" : `${fmt(total, 0)} entries`}</span><div class="row">${links.join("")}</div></div>`;
}

async function renderMap(node, ctx) {
  const start = ctx.start === null ? undefined : ctx.start;
  const [page, size] = await Promise.all([ctx.read("items", { limit: PAGE, start }), ctx.read("size")]);
  if (!page.value.length) return ctx.empty || `<p class="muted empty">This map is empty.</p>`;
  const rows = page.value.map(([key, value]) => `<tr>
      <td><a class="key" href="${ctx.href([...ctx.steps, key])}">${esc(label(key))}</a></td>
      <td><code class="preview">${esc(preview(value))}</code></td></tr>`).join("");
  return `<table class="table"><thead><tr><th>key</th><th>value</th></tr></thead><tbody>${rows}</tbody></table>${pager(ctx, page.next, size.value)}`;
}

async function renderSet(ctx) {
  const start = ctx.start === null ? undefined : ctx.start;
  const [page, size] = await Promise.all([ctx.read("keys", { limit: PAGE, start }), ctx.read("size")]);
  if (!page.value.length) return ctx.empty || `<p class="muted empty">This set is empty.</p>`;
  return `<div class="chips">${page.value.map((e) => `<code class="chip">${esc(label(e))}</code>`).join("")}</div>${pager(ctx, page.next, size.value)}`;
}

async function renderList(node, ctx) {
  const first = ctx.start === null ? 0 : Number(ctx.start);
  const [page, size] = await Promise.all([ctx.read("slice", { start: first, stop: first + PAGE }), ctx.read("size")]);
  if (!page.value.length) return ctx.empty || `<p class="muted empty">This list is empty.</p>`;
  const rows = page.value.map((value, i) => `<tr><td class="num"><a class="key" href="${ctx.href([...ctx.steps, first + i])}">${first + i}</a></td>
    <td><code class="preview">${esc(preview(value))}</code></td></tr>`).join("");
  const next = first + PAGE < size.value ? { start: first + PAGE } : null;
  return `<table class="table"><thead><tr><th class="num">index</th><th>value</th></tr></thead><tbody>${rows}</tbody></table>${pager(ctx, next, size.value)}`;
}

function recordHtml(node, ctx, found, record) {
  if (!found) return ctx.empty || `<p class="muted empty">Nothing is stored at this path.</p>`;
  const value = record || {};
  const rows = Object.entries(node.fields).map(([field, schema]) => `<tr>
      <td><a class="key" href="${ctx.href([...ctx.steps, field])}">${esc(field)}</a></td>
      <td><code class="schema">${esc(schema.repr)}</code></td>
      <td><code class="preview">${field in value ? esc(preview(value[field])) : '<span class="muted">unset</span>'}</code></td></tr>`).join("");
  return `<table class="table"><thead><tr><th>field</th><th>schema</th><th>value</th></tr></thead><tbody>${rows}</tbody></table>`;
}
