// The HTTP API as the UI uses it: JSON in and out, the bearer token, errors as thrown ApiErrors;
// and the JavaScript client (client/, built from clients/js) for what the server pushes.

import { connect } from "./client/index.js";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error ? body.error : "http_error";
    this.body = body || {};
  }
}

const TOKEN_KEY = "headwater.token";
export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || "",
  set: (value) => (value ? localStorage.setItem(TOKEN_KEY, value) : localStorage.removeItem(TOKEN_KEY)),
};

let onUnauthorized = () => {};
export function whenUnauthorized(fn) { onUnauthorized = fn; }

export async function api(path, { method = "GET", params = null, body = undefined, headers: extra = {} } = {}) {
  const url = new URL(path, location.origin);
  if (params) {
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
  }
  const headers = { ...extra };
  if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : body });
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = { message: text }; }
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, parsed);
  }
  return parsed;
}

const q = encodeURIComponent;
export const paths = {
  module: (m) => `/api/modules/${q(m)}`,
  pstate: (m, p, op) => `/api/modules/${q(m)}/pstates/${q(p)}/${op}`,
  append: (m, d) => `/api/modules/${q(m)}/depots/${q(d)}/append`,
  query: (m, n) => `/api/modules/${q(m)}/queries/${q(n)}`,
  deadLetters: (m, t) => `/api/modules/${q(m)}/topologies/${q(t)}/dead-letters`,
  retry: (m, t, id) => `/api/modules/${q(m)}/topologies/${q(t)}/dead-letters/${id}/retry`,
};

// The JavaScript client on this server, with the UI's token: watches and depot tails.
export function pushed() {
  return connect(location.origin, { token: token.get() || undefined });
}

// A badge saying whether a watch or tail socket is live; `set(state, title)` with state
// "connecting", "live", "reconnecting", "error" or "off".
export function liveBadge(element) {
  const set = (state, title = "") => {
    element.dataset.state = state;
    element.textContent = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", error: "stopped", off: "not live" }[state];
    element.title = title;
  };
  set("connecting");
  return { set, hooks: { onConnection: (connected) => set(connected ? "live" : "reconnecting"), onError: (error) => set("error", error.message) } };
}
