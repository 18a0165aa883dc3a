// Live numbers: polls /api/stats once a second and keeps a short history per depot and topology,
// from which rates (events/s) are derived. Views subscribe to redraw their live parts only.

import { api } from "./api.js";

const HISTORY_POINTS = 60;
export const POLL_MS = 1000;

const state = { stats: null, history: new Map(), previous: null, listeners: new Set(), timer: null, error: null };

function push(key, field, value) {
  let entry = state.history.get(key);
  if (!entry) state.history.set(key, (entry = {}));
  const series = (entry[field] ||= []);
  series.push(value);
  if (series.length > HISTORY_POINTS) series.shift();
}

function record(stats) {
  const previous = state.previous;
  const dt = previous ? Math.max(1e-3, stats.time_s - previous.time_s) : null;
  for (const module of stats.modules) {
    const before = previous && previous.modules.find((m) => m.name === module.name);
    for (const t of module.topologies) {
      const key = `${module.name}/t/${t.name}`;
      const old = before && before.topologies.find((x) => x.name === t.name);
      t.rate = old && dt ? Math.max(0, (t.processed - old.processed) / dt) : 0;
      const latencies = module.depots.filter((d) => t.depots.includes(d.name)).map((d) => d.ack_latency_ms.p50).filter((v) => v != null);
      t.ack_p50_ms = latencies.length ? Math.max(...latencies) : null;
      push(key, "rate", t.rate);
      push(key, "lag", t.lag);
      push(key, "latency", t.ack_p50_ms ?? 0);
    }
    for (const d of module.depots) {
      const old = before && before.depots.find((x) => x.name === d.name);
      d.rate = old && dt ? Math.max(0, (d.records - old.records) / dt) : 0;
      push(`${module.name}/d/${d.name}`, "rate", d.rate);
    }
  }
  state.previous = stats;
  state.stats = stats;
}

async function poll() {
  try {
    record(await api("/api/stats"));
    state.error = null;
  } catch (error) {
    state.error = error;
  }
  for (const listener of state.listeners) {
    try { listener(state.stats, state.error); } catch (e) { console.error(e); }
  }
}

export function start() {
  if (!state.timer) { poll(); state.timer = setInterval(poll, POLL_MS); }
}

export function subscribe(listener) {
  state.listeners.add(listener);
  if (state.stats || state.error) listener(state.stats, state.error);
  return () => state.listeners.delete(listener);
}

export const history = (key, field) => (state.history.get(key) || {})[field] || [];
export const moduleStats = (name) => state.stats && state.stats.modules.find((m) => m.name === name);
