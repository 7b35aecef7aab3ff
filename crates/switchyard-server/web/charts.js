// Charts as SVG: a time series (one or more lines over time) and a histogram (bars over
// labelled bins). Each is an accessible image: `role="img"`, a title, and a description
// that reads the data out for a screen reader.

import { esc } from './render.js';

const W = 640, H = 220, L = 48, R = 12, T = 12, B = 34;
const COLORS = ['#1f5fbf', '#cf222e', '#1a7f37', '#9a6700', '#6f42c1'];

function ticks(max, n = 4) {
  if (max <= 0) return [0];
  const step = Math.pow(10, Math.floor(Math.log10(max / n)));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => max / s <= n) || step * 10;
  const out = [];
  for (let v = 0; v <= max + 1e-9; v += nice) out.push(v);
  return out;
}

function shortTime(ms, spanMs) {
  const d = new Date(ms).toISOString();
  return spanMs > 2 * 86400e3 ? d.slice(5, 10) : d.slice(11, 16);
}

/**
 * series: [{ name, points: [[timeMs, value|null], ...] }]; opts: { title, yMax?, yFormat? }.
 * A null value breaks the line.
 */
export function lineChart(series, { title, yMax, yFormat = (v) => String(v) } = {}) {
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  if (all.length === 0) return `<p class="muted">${esc(title)}: no data in this period yet.</p>`;
  const x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  const span = Math.max(x1 - x0, 1);
  const max = yMax ?? Math.max(...all.map((p) => p[1]), 1) * 1.1;
  const x = (t) => L + ((t - x0) / span) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  let svg = '';
  for (const v of ticks(max)) {
    svg += `<line class="axis" x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"/>`;
    svg += `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${esc(yFormat(v))}</text>`;
  }
  for (let i = 0; i <= 4; i++) {
    const t = x0 + (span * i) / 4;
    svg += `<text x="${x(t)}" y="${H - 12}" text-anchor="middle">${esc(shortTime(t, span))}</text>`;
  }
  series.forEach((s, i) => {
    let d = '', pen = false;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
    }
    const dots = s.points.length <= 60
      ? s.points.filter((p) => p[1] !== null).map(([t, v]) => `<circle cx="${x(t).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2.5" fill="${COLORS[i % 5]}"><title>${esc(s.name)} ${esc(new Date(t).toISOString())}: ${esc(yFormat(v))}</title></circle>`).join('')
      : '';
    svg += `<path class="line" stroke="${COLORS[i % 5]}" d="${d}"/>${dots}`;
  });
  const desc = series.map((s) => `${s.name}: ${s.points.filter((p) => p[1] !== null).length} points, last ${yFormat(s.points.filter((p) => p[1] !== null).slice(-1)[0]?.[1] ?? 0)}`).join('; ');
  const legend = series.map((s, i) => `<span><i style="background:${COLORS[i % 5]}"></i>${esc(s.name)}</span>`).join('');
  return `<figure><svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}"><title>${esc(title)}</title><desc>${esc(desc)}</desc>${svg}</svg><figcaption class="legend">${legend}</figcaption></figure>`;
}

/** bins: [{ label, count, late? }]; a histogram with one bar per bin. */
export function histogram(bins, { title } = {}) {
  const total = bins.reduce((a, b) => a + b.count, 0);
  if (total === 0) return `<p class="muted">${esc(title)}: no data in this period yet.</p>`;
  const max = Math.max(...bins.map((b) => b.count)) * 1.1;
  const bw = (W - L - R) / bins.length;
  const y = (v) => T + (1 - v / max) * (H - T - B);
  let svg = '';
  for (const v of ticks(max)) {
    svg += `<line class="axis" x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"/>`;
    svg += `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`;
  }
  bins.forEach((b, i) => {
    const x = L + i * bw + 3;
    svg += `<rect class="bar${b.late ? ' late' : ''}" x="${x.toFixed(1)}" y="${y(b.count).toFixed(1)}" width="${(bw - 6).toFixed(1)}" height="${(H - B - y(b.count)).toFixed(1)}"><title>${esc(b.label)}: ${b.count}</title></rect>`;
    svg += `<text x="${(x + (bw - 6) / 2).toFixed(1)}" y="${H - 12}" text-anchor="middle">${esc(b.label)}</text>`;
  });
  const desc = bins.map((b) => `${b.label}: ${b.count}`).join(', ');
  return `<figure><svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}"><title>${esc(title)}</title><desc>${esc(desc)}</desc>${svg}</svg></figure>`;
}
