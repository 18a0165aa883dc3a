// Small live charts drawn as SVG: a sparkline with a soft area, and horizontal bars.

import { esc } from "./dom.js";

export function sparkline(values, { width = 160, height = 36, color = "var(--accent)", label = "" } = {}) {
  const points = values.length ? values : [0];
  const max = Math.max(...points, 1e-9);
  const step = points.length > 1 ? width / (points.length - 1) : width;
  const y = (v) => height - 2 - (v / max) * (height - 6);
  const line = points.map((v, i) => `${(i * step).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const area = `0,${height} ${line} ${((points.length - 1) * step).toFixed(1)},${height}`;
  return `<svg class="spark" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" preserveAspectRatio="none" role="img" aria-label="${esc(label)}">
    <polygon points="${area}" fill="${color}" opacity="0.12"/>
    <polyline points="${line}" fill="none" stroke="${color}" stroke-width="1.6" stroke-linejoin="round"/>
  </svg>`;
}

export function bars(values, { labels = [] } = {}) {
  const max = Math.max(...values, 1);
  return `<div class="bars">${values.map((v, i) => `
    <div class="bar-row"><span class="bar-label">${esc(labels[i] ?? i)}</span>
      <span class="bar-track"><span class="bar-fill" style="width:${((v / max) * 100).toFixed(1)}%"></span></span>
      <span class="bar-value">${v.toLocaleString()}</span></div>`).join("")}</div>`;
}
