// Rendering helpers. Everything shown from the API goes through `esc`; payloads (event data,
// delivery bodies, errors from partners) go through `payload` only, so masking sensitive
// fields later is one change here.

export function esc(v) {
  if (v === null || v === undefined) return '';
  return String(v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

/** A JSON payload, pretty-printed and escaped. */
export function payload(value, label = 'payload') {
  if (value === null || value === undefined) return '<span class="muted">(none)</span>';
  return `<pre class="payload" aria-label="${esc(label)}">${esc(JSON.stringify(value, null, 2))}</pre>`;
}

export function time(t) {
  if (!t) return '';
  const d = new Date(t);
  if (isNaN(d)) return esc(t);
  return `<time datetime="${esc(t)}" title="${esc(t)}">${esc(d.toISOString().replace('T', ' ').slice(0, 19))}</time>`;
}

export function seconds(s) {
  if (s === null || s === undefined) return '';
  s = Number(s);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

const TONE = {
  ok: ['healthy', 'ok', 'on_track', 'completed', 'delivered', 'closed', 'resolved', 'succeeded', 'true'],
  warn: ['lagging', 'at_risk', 'retry_wait', 'half_open', 'acknowledged', 'scheduled', 'delivering', 'running', 'stalled', 'late'],
  bad: ['silent', 'paused', 'breached', 'completed_late', 'dead', 'mapping_failed', 'invalid', 'open', 'firing', 'failed', 'false', 'missed'],
};

export function badge(v) {
  const s = String(v ?? '');
  const tone = Object.keys(TONE).find((k) => TONE[k].includes(s)) || '';
  return `<span class="badge ${tone}">${esc(s.replace(/_/g, ' '))}</span>`;
}

export function num(n) {
  return n === null || n === undefined ? '' : Number(n).toLocaleString('en');
}

export function pct(x) {
  return x === null || x === undefined ? '–' : `${(x * 100).toFixed(1)} %`;
}

/** A table: `cols` is [[header, cell(row) → HTML, className?]]. */
export function table(rows, cols, { empty = 'Nothing here.', caption = '' } = {}) {
  if (!rows || rows.length === 0) return `<p class="muted">${esc(empty)}</p>`;
  const head = cols.map(([h, , c]) => `<th scope="col" class="${c || ''}">${esc(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${cols.map(([, f, c]) => `<td class="${c || ''}">${f(r)}</td>`).join('')}</tr>`).join('');
  return `<table>${caption ? `<caption class="muted">${esc(caption)}</caption>` : ''}<thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

export function link(href, text) {
  return `<a href="${esc(href)}">${esc(text)}</a>`;
}
