// Tiny helpers for building the UI from template strings safely.

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

export function json(value, indent = 2) {
  return JSON.stringify(value, null, indent);
}

// JSON with light syntax colouring, for values read from PStates and query results.
export function prettyJson(value) {
  const text = esc(json(value));
  return text.replace(/(&quot;(?:[^&]|&(?!quot;))*?&quot;)(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g,
    (match, str, colon, literal, number) => {
      if (str) return colon ? `<span class="j-key">${str}</span>${colon}` : `<span class="j-str">${str}</span>`;
      if (literal) return `<span class="j-lit">${literal}</span>`;
      return `<span class="j-num">${number}</span>`;
    });
}

export function fmt(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  return value.toLocaleString(undefined, { maximumFractionDigits: digits });
}

// A command-line or form value: JSON if it parses, else the text itself (so ada@example.com works).
export function parseLoose(text) {
  try { return JSON.parse(text); } catch { return text; }
}
