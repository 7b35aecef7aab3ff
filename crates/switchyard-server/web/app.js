// The Switchyard dashboard: a hash-routed page over the HTTP API. Every page is an async
// function that returns { html, bind? }; live pages are rendered again every few seconds
// while nobody is typing or confirming.

import { api, login, logout, may, qs, resume, session, Problem } from './api.js';
import { badge, esc, link, num, payload, pct, seconds, table, time } from './render.js';
import { histogram, lineChart } from './charts.js';

const REFRESH_MS = 5000;
const main = document.getElementById('main');

// ---- small helpers ---------------------------------------------------------------------

function toast(text, bad = false) {
  const d = document.createElement('div');
  d.textContent = text;
  if (bad) d.className = 'bad';
  document.getElementById('toast').appendChild(d);
  setTimeout(() => d.remove(), 6000);
}

function problemText(e) {
  if (e instanceof Problem) {
    const extra = (e.body.errors || []).map((x) => `${x.field || x.pointer || ''}: ${x.detail || x.message || ''}`).join('; ');
    return `${e.message}${extra ? ` (${extra})` : ''}`;
  }
  return String(e && e.message ? e.message : e);
}

function hashQuery() {
  const h = location.hash;
  const i = h.indexOf('?');
  return new URLSearchParams(i < 0 ? '' : h.slice(i + 1));
}

/** An action button, disabled with the reason when the role may not do it. */
function action(label, id, perm = 'operate', cls = '') {
  const ok = may(perm);
  const why = ok ? '' : ` title="Your role (${esc(session.me?.role)}) may not do this" aria-disabled="true" disabled`;
  return `<button type="button" id="${esc(id)}" class="${cls}"${why}>${esc(label)}</button>`;
}

/**
 * A confirmation dialog with a required reason (and optional extra fields). Resolves to the
 * form's values, or null when cancelled.
 */
function confirmDialog(title, body, { confirm = 'Confirm', reason = true, extra = '' } = {}) {
  return new Promise((resolve) => {
    const d = document.createElement('dialog');
    d.setAttribute('aria-label', title);
    d.innerHTML = `<form method="dialog"><h2>${esc(title)}</h2><p>${body}</p>${extra}
      ${reason ? '<label>Reason (recorded in the audit trail)<input name="reason" required maxlength="1000" autocomplete="off"></label>' : ''}
      <p class="err" data-error></p>
      <div class="pager"><button value="ok" id="dialog-confirm">${esc(confirm)}</button>
      <button value="cancel" class="secondary" formnovalidate id="dialog-cancel">Cancel</button></div></form>`;
    document.body.appendChild(d);
    const form = d.querySelector('form');
    d.addEventListener('close', () => {
      const ok = d.returnValue === 'ok';
      const values = ok ? Object.fromEntries(new FormData(form).entries()) : null;
      d.remove();
      resolve(values);
    });
    d.showModal();
  });
}

// ---- pages -----------------------------------------------------------------------------

async function loginPage() {
  return {
    html: `<div class="login card"><h1>Sign in</h1>
      <p class="muted">Use an API token (<code>switchyard token create --role viewer --name you</code>).</p>
      <form id="login-form"><label>API token<input id="token" name="token" type="password" autocomplete="current-password" required></label>
      <p class="err" id="login-error" role="alert"></p><button id="login-submit">Sign in</button></form></div>`,
    bind(root) {
      root.querySelector('#token').focus();
      root.querySelector('#login-form').addEventListener('submit', async (ev) => {
        ev.preventDefault();
        try {
          await login(root.querySelector('#token').value);
          location.hash = '#/overview';
        } catch (e) {
          root.querySelector('#login-error').textContent =
            e instanceof Problem && e.status === 403 ? 'This token may not read (an ingest token?).' : problemText(e);
        }
      });
    },
  };
}

const throughput = []; // [timeMs, delivered total] samples, taken by the overview
let lastDelivered = null;

async function overview() {
  const [probes, flows, dests, wfs, incidents, sources] = await Promise.all([
    api('/v1/probes'), api('/v1/flows'), api('/v1/destinations'), api('/v1/workflows'),
    api('/v1/incidents?status=open,acknowledged&limit=20'), api('/v1/sources'),
  ]);
  const delivered = flows.flows.reduce((a, f) => a + (f.deliveries.delivered || 0), 0);
  const now = Date.now();
  if (lastDelivered !== null && throughput.length && now - throughput[throughput.length - 1][0] < 1000) {
    // the same sample
  } else {
    throughput.push([now, delivered]);
    if (throughput.length > 120) throughput.shift();
  }
  lastDelivered = delivered;
  const rate = [];
  for (let i = 1; i < throughput.length; i++) {
    const [t0, d0] = throughput[i - 1], [t1, d1] = throughput[i];
    rate.push([t1, Math.max(0, ((d1 - d0) / (t1 - t0)) * 1000)]);
  }
  const pending = (f) => (f.deliveries.scheduled || 0) + (f.deliveries.delivering || 0) + (f.deliveries.retry_wait || 0);
  const dead = (f) => (f.deliveries.dead || 0) + (f.deliveries.mapping_failed || 0) + (f.deliveries.invalid || 0);
  const queue = flows.flows.reduce((a, f) => a + pending(f), 0);
  const oldest = Math.max(0, ...flows.flows.map((f) => f.oldest_undelivered_seconds || 0));
  const share = (w) => {
    const ok = w.instances.completed || 0, late = w.instances.completed_late || 0;
    return ok + late ? ok / (ok + late) : null;
  };
  return {
    html: `<h1>Overview</h1>
    <div class="grid">
      <section class="card" aria-labelledby="h-api"><h2 id="h-api">API health</h2>
        ${table(probes.probes, [
          ['Target', (p) => esc(p.target)], ['Kind', (p) => esc(p.kind)],
          ['OK', (p) => badge(p.ok ? 'ok' : 'failed')],
          ['Latency', (p) => (p.latency_ms === null || p.latency_ms === undefined ? '' : `${p.latency_ms.toFixed(0)} ms`), 'num'],
          ['Error', (p) => esc(p.error || p.credential_warning || '')],
        ], { empty: 'No probes yet (Odoo connections with probe = true, or [probes] destinations).' })}
      </section>
      <section class="card" aria-labelledby="h-flow"><h2 id="h-flow">Message flow</h2>
        <div class="kpis"><div><div class="kpi" id="kpi-queue">${num(queue)}</div><div class="muted">queued</div></div>
        <div><div class="kpi">${seconds(oldest) || '0 s'}</div><div class="muted">oldest undelivered</div></div>
        <div><div class="kpi">${num(flows.flows.reduce((a, f) => a + dead(f), 0))}</div><div class="muted">dead letters</div></div></div>
        ${lineChart([{ name: 'delivered per second', points: rate }], { title: 'Throughput (delivered per second, since this page opened)', yFormat: (v) => v.toFixed(1) })}
        ${table(dests.destinations, [
          ['Destination', (d) => esc(d.name)], ['Circuit', (d) => badge(d.circuit)],
          ['Failures in a row', (d) => num(d.consecutive_failures), 'num'],
          ['Paused', (d) => (d.paused ? badge('paused') : '')],
        ])}
      </section>
      <section class="card" aria-labelledby="h-biz"><h2 id="h-biz">Business completion</h2>
        ${table(wfs.workflows, [
          ['Workflow', (w) => link(`#/workflows/${encodeURIComponent(w.name)}`, w.title || w.name)],
          ['Within SLA', (w) => pct(share(w)), 'num'],
          ['At risk', (w) => num(w.instances.at_risk || 0), 'num'],
          ['Breached', (w) => num(w.instances.breached || 0), 'num'],
          ['Open', (w) => num((w.instances.on_track || 0) + (w.instances.at_risk || 0) + (w.instances.breached || 0) + (w.instances.stalled || 0)), 'num'],
        ], { empty: 'No workflows configured.' })}
      </section>
      <section class="card" aria-labelledby="h-inc"><h2 id="h-inc">Open incidents</h2>
        ${table(incidents.incidents, [
          ['#', (i) => link(`#/incidents/${i.id}`, i.id)], ['Status', (i) => badge(i.status)],
          ['Severity', (i) => esc(i.severity)], ['Cause', (i) => esc(i.cause)], ['Team', (i) => esc(i.team)],
          ['Title', (i) => esc(i.title)],
        ], { empty: 'No open incidents.' })}
      </section>
    </div>
    <section aria-labelledby="h-flows"><h2 id="h-flows">Flows</h2>
      ${table(flows.flows, [
        ['Flow', (f) => link(`#/deliveries?flow=${encodeURIComponent(f.name)}`, f.name)], ['Destination', (f) => esc(f.destination)],
        ['Lane', (f) => esc(f.priority)], ['Delivered', (f) => num(f.deliveries.delivered || 0), 'num'],
        ['Queued', (f) => num(pending(f)), 'num'], ['Retrying', (f) => num(f.deliveries.retry_wait || 0), 'num'],
        ['Dead letters', (f) => (dead(f) ? link(`#/dlq?flow=${encodeURIComponent(f.name)}`, num(dead(f))) : '0'), 'num'],
        ['Oldest undelivered', (f) => seconds(f.oldest_undelivered_seconds), 'num'],
      ])}
    </section>
    <section aria-labelledby="h-src"><h2 id="h-src">Sources</h2>
      ${table(sources.sources, [
        ['Source', (s) => esc(s.name)], ['Health', (s) => (s.health ? `${badge(s.health.status)} <span class="muted">${esc(s.health.reason || '')}</span>` : '')],
        ['Events / min', (s) => (s.events_per_minute === null || s.events_per_minute === undefined ? '' : s.events_per_minute.toFixed(1)), 'num'],
        ['Avg. lag', (s) => seconds(s.avg_lag_seconds), 'num'], ['Last event', (s) => time(s.last_received_at)],
      ])}
    </section>`,
  };
}

async function workflowsPage() {
  const wfs = await api('/v1/workflows');
  const states = ['on_track', 'at_risk', 'breached', 'stalled', 'completed', 'completed_late', 'cancelled'];
  return {
    html: `<h1>Workflows</h1>${table(wfs.workflows, [
      ['Workflow', (w) => link(`#/workflows/${encodeURIComponent(w.name)}`, w.title || w.name)],
      ['Criticality', (w) => esc(w.criticality)], ['Key', (w) => esc(w.key)],
      ...states.map((s) => [s.replace(/_/g, ' '), (w) => num(w.instances[s] || 0), 'num']),
    ], { empty: 'No workflows configured.' })}`,
  };
}

const CYCLE_LABELS = ['<1m', '<5m', '<15m', '<1h', '<4h', '<1d', '<3d', '≥3d'];

async function workflowPage(name) {
  const q = hashQuery();
  const period = q.get('period') || '86400';
  const since = new Date(Date.now() - Number(period) * 1000).toISOString();
  const filter = { state: q.get('state') || 'at_risk,breached,stalled', dimension: q.get('dimension') || '', before: q.get('before') || '', limit: 50 };
  const [wfs, sum, inst] = await Promise.all([
    api('/v1/workflows'),
    api(`/v1/workflows/${encodeURIComponent(name)}/summary${qs({ since })}`),
    api(`/v1/workflows/${encodeURIComponent(name)}/instances${qs(filter)}`),
  ]);
  const wf = wfs.workflows.find((w) => w.name === name) || { title: name, dimensions: [] };
  const t = (c) => new Date(c.start).getTime();
  const shareChart = lineChart([{ name: 'share within SLA', points: sum.compliance.map((c) => [t(c), c.share_within_sla === null ? null : c.share_within_sla * 100]) }],
    { title: 'SLA compliance over time (% of instances completed within SLA)', yMax: 100, yFormat: (v) => `${v.toFixed(0)}%` });
  const countChart = lineChart([
    { name: 'within SLA', points: sum.compliance.map((c) => [t(c), c.within_sla]) },
    { name: 'late', points: sum.compliance.map((c) => [t(c), c.late]) },
  ], { title: 'Completed instances per period' });
  const cycle = histogram(sum.cycle_time.map((b, i) => ({ label: CYCLE_LABELS[i] || `bin ${i}`, count: b.count })), { title: 'Cycle time (start to completion)' });
  const dims = Object.entries(sum.late_by_dimension).map(([d, groups]) => `<h3>${esc(d)}</h3>${table(Object.entries(groups), [
    [d, ([v]) => esc(v)],
    ['At risk', ([v, c]) => link(`#/workflows/${encodeURIComponent(name)}?state=at_risk&dimension=${encodeURIComponent(`${d}:${v}`)}`, num(c.at_risk || 0)), 'num'],
    ['Breached', ([v, c]) => link(`#/workflows/${encodeURIComponent(name)}?state=breached&dimension=${encodeURIComponent(`${d}:${v}`)}`, num(c.breached || 0)), 'num'],
    ['Stalled', ([, c]) => num(c.stalled || 0), 'num'],
  ], { empty: 'Nothing late.' })}`).join('');
  const periodSel = [['21600', '6 hours'], ['86400', '24 hours'], ['604800', '7 days']]
    .map(([v, l]) => `<option value="${v}"${v === period ? ' selected' : ''}>${l}</option>`).join('');
  const stateSel = ['at_risk,breached,stalled', 'on_track', 'at_risk', 'breached', 'stalled', 'completed', 'completed_late', 'cancelled', '']
    .map((s) => `<option value="${s}"${s === filter.state ? ' selected' : ''}>${s ? s.replace(/_/g, ' ') : 'all states'}</option>`).join('');
  return {
    html: `<h1>${esc(wf.title || name)} <span class="muted">(${esc(name)}, ${esc(wf.criticality || '')})</span></h1>
      <form class="inline" id="wf-period"><label>Period<select name="period">${periodSel}</select></label></form>
      <div class="grid"><section class="card"><h2>SLA compliance</h2>${shareChart}</section>
      <section class="card"><h2>Completed</h2>${countChart}</section>
      <section class="card"><h2>Cycle time</h2>${cycle}</section></div>
      <section><h2>Late and at risk, by dimension</h2>${dims || '<p class="muted">This workflow has no dimensions.</p>'}
      ${sum.late_truncated ? `<p class="muted">Grouped from the newest ${num(sum.late_sampled)} late instances.</p>` : ''}</section>
      <section id="instances"><h2>Instances</h2>
      <form class="inline" id="wf-filter"><label>State<select name="state">${stateSel}</select></label>
        <label>Dimension (name:value)<input name="dimension" value="${esc(filter.dimension)}" placeholder="warehouse:WH2"></label>
        <button>Filter</button></form>
      ${table(inst.instances, [
        ['#', (i) => link(`#/instances/${i.id}`, i.id)], ['Key', (i) => esc(i.key || (i.aliases && i.aliases[0] ? `${i.aliases[0].name} ${i.aliases[0].value}` : ''))],
        ['State', (i) => badge(i.state)], ['Started', (i) => time(i.started_at)],
        ['Dimensions', (i) => esc(Object.entries(i.dimensions || {}).map(([k, v]) => `${k}=${v}`).join(' '))],
        ['Overdue', (i) => (i.breach ? `${esc(i.breach.step)} ${seconds(i.breach.overdue_seconds)}` : '')],
      ], { empty: 'No instances match.' })}
      <div class="pager">${inst.next_before ? link(`#/workflows/${encodeURIComponent(name)}?${new URLSearchParams({ ...Object.fromEntries(q), before: inst.next_before })}`, 'Older →') : ''}</div></section>`,
    bind(root) {
      root.querySelector('#wf-period select').addEventListener('change', (e) => {
        q.set('period', e.target.value);
        location.hash = `#/workflows/${encodeURIComponent(name)}?${q}`;
      });
      root.querySelector('#wf-filter').addEventListener('submit', (e) => {
        e.preventDefault();
        const f = new FormData(e.target);
        const n = new URLSearchParams({ period, state: f.get('state'), dimension: f.get('dimension') });
        location.hash = `#/workflows/${encodeURIComponent(name)}?${n}`;
      });
    },
  };
}

async function instancePage(id) {
  const [v, wfs] = await Promise.all([api(`/v1/instances/${id}`), api('/v1/workflows')]);
  const wf = wfs.workflows.find((w) => w.name === v.workflow);
  const hitOf = (step) => v.hits.filter((h) => h.step === step);
  const firstAt = (step) => (hitOf(step)[0] ? new Date(hitOf(step)[0].occurred_at).getTime() : null);
  const start = new Date(v.started_at).getTime();
  const rows = (wf ? wf.steps : [...new Set(v.hits.map((h) => h.step))].map((name) => ({ name }))).map((s) => {
    const from = s.from && s.from !== 'start' ? firstAt(s.from) : start;
    const expected = s.sla_seconds && from !== null ? from + s.sla_seconds * 1000 : null;
    const at = firstAt(s.name);
    const late = expected !== null && ((at !== null && at > expected) || (at === null && Date.now() > expected && v.closed_at === null));
    return { s, expected, at, late, hits: hitOf(s.name) };
  });
  const findings = v.findings || [];
  return {
    html: `<h1>${esc(wf ? wf.title : v.workflow)} ${esc(v.key || '')} ${badge(v.state)}</h1>
      <p class="muted">Instance ${esc(v.id)} · started ${time(v.started_at)} · version ${esc(v.version)}
      ${v.closed_at ? ` · closed ${time(v.closed_at)}` : ''} · ${esc(Object.entries(v.dimensions || {}).map(([k, x]) => `${k}=${x}`).join(' '))}</p>
      <p>Keys: ${(v.aliases || []).map((a) => link(`#/trace?key=${encodeURIComponent(a.value)}`, `${a.name} ${a.value}`)).join(', ')}</p>
      <h2>Timeline across systems</h2>
      <ol class="timeline" aria-label="steps">${rows.map((r) => `<li class="${r.late ? 'late' : r.at ? 'done' : ''}">
        <strong>${esc(r.s.name)}</strong> ${r.at ? `happened ${time(new Date(r.at).toISOString())}` : '<span class="muted">not yet</span>'}
        ${r.expected ? ` · expected by ${time(new Date(r.expected).toISOString())}` : ''} ${r.late ? badge('late') : ''}
        ${r.hits.map((h) => `<div class="muted">${esc(h.source)} · ${esc(h.ty || h.type || '')} · event ${link(`#/trace?key=${encodeURIComponent(v.key || '')}`, h.id)}</div>`).join('')}
      </li>`).join('')}</ol>
      <h2>Findings</h2>
      ${table(findings, [['When', (f) => time(f.at)], ['Kind', (f) => badge(f.kind)], ['Step', (f) => esc(f.step)], ['What', (f) => esc(f.message)]], { empty: 'No findings.' })}`,
  };
}

async function tracePage() {
  const key = hashQuery().get('key') || '';
  let result = '';
  if (key) {
    const v = await api(`/v1/trace${qs({ key })}`);
    const events = v.events.map((e) => `<article class="card" style="margin-bottom:.6rem">
      <div><strong>${esc(e.event.type)}</strong> from ${esc(e.event.source)} · ${time(e.received_at)} · seq ${esc(e.seq)} · id ${esc(e.event.id)}</div>
      ${table(e.deliveries || [], [
        ['Delivery', (d) => link(`#/deliveries/${d.id}`, d.id)], ['Flow', (d) => esc(d.flow)], ['Destination', (d) => esc(d.destination)],
        ['State', (d) => badge(d.state)], ['Attempts', (d) => num(d.attempts), 'num'], ['Last error', (d) => esc(d.last_error || '')],
      ], { empty: 'No deliveries.' })}
      <details><summary>Payload</summary>${payload(e.event.data, 'event payload')}</details></article>`).join('');
    const inst = (v.instances || []).map((i) => `<li>${link(`#/instances/${i.id}`, `${i.workflow} ${i.key || ''}`)} ${badge(i.state)}
      ${(i.findings || []).map((f) => `<div>${badge(f.kind)} ${esc(f.message)}</div>`).join('')}</li>`).join('');
    result = `<h2>${num(v.events.length)} event(s) carry ${esc(key)}${v.truncated ? ' (more exist)' : ''}</h2>${events || '<p class="muted">No event carries this key.</p>'}
      <h2>Workflow instances</h2>${inst ? `<ul>${inst}</ul>` : '<p class="muted">None.</p>'}`;
  }
  return {
    html: `<h1>Trace a business key</h1>
      <form class="inline" id="trace-form" role="search"><label>Order, picking or any key<input id="trace-key" name="key" value="${esc(key)}" placeholder="S00042, WH/OUT/00017, #1042" required></label><button id="trace-submit">Trace</button></form>${result}`,
    bind(root) {
      root.querySelector('#trace-form').addEventListener('submit', (e) => {
        e.preventDefault();
        location.hash = `#/trace${qs({ key: root.querySelector('#trace-key').value.trim() })}`;
      });
    },
  };
}

function deliveryFilterForm(q, states) {
  const f = (n, label, ph = '') => `<label>${label}<input name="${n}" value="${esc(q.get(n) || '')}" placeholder="${ph}"></label>`;
  return `<form class="inline" id="dl-filter">${f('flow', 'Flow')}${f('destination', 'Destination')}
    <label>State<select name="state"><option value="">${states === 'dlq' ? 'every dead letter' : 'every state'}</option>${
      (states === 'dlq' ? ['dead', 'mapping_failed', 'invalid'] : ['scheduled', 'delivering', 'retry_wait', 'delivered', 'dead', 'mapping_failed', 'invalid', 'discarded', 'filtered'])
        .map((s) => `<option${q.get('state') === s ? ' selected' : ''}>${s}</option>`).join('')}</select></label>
    ${f('key', 'Ordering key')}<button>Filter</button></form>`;
}

async function deliveryList(kind) {
  const q = hashQuery();
  const filter = { flow: q.get('flow'), destination: q.get('destination'), state: q.get('state'), key: q.get('key'), after: q.get('after'), limit: 50 };
  const path = kind === 'dlq' ? '/v1/dlq' : '/v1/deliveries';
  const v = await api(`${path}${qs(filter)}`);
  const base = kind === 'dlq' ? '#/dlq' : '#/deliveries';
  const bulk = kind === 'dlq' ? `<div class="pager">${action('Replay every matching dead letter…', 'bulk-replay')}</div>` : '';
  return {
    html: `<h1>${kind === 'dlq' ? 'Dead letters' : 'Deliveries'}</h1>${deliveryFilterForm(q, kind)}${bulk}
      ${table(v.deliveries, [
        ['#', (d) => link(`${base}/${d.id}`, d.id)], ['Flow', (d) => esc(d.flow)], ['Destination', (d) => esc(d.destination)],
        ['State', (d) => badge(d.state)], ['Event', (d) => esc(`${d.event_type}`)], ['Key', (d) => esc(d.ordering_key || '')],
        ['Attempts', (d) => num(d.attempts), 'num'], ['Last error', (d) => esc(d.last_error || '')], ['Updated', (d) => time(d.updated_at)],
      ], { empty: kind === 'dlq' ? 'No dead letters.' : 'No deliveries match.' })}
      <div class="pager">${v.next_after ? link(`${base}?${new URLSearchParams({ ...Object.fromEntries(q), after: v.next_after })}`, 'Next page →') : ''}</div>`,
    bind(root) {
      root.querySelector('#dl-filter').addEventListener('submit', (e) => {
        e.preventDefault();
        const f = Object.fromEntries([...new FormData(e.target).entries()].filter(([, x]) => x));
        location.hash = `${base}${qs(f)}`;
      });
      const b = root.querySelector('#bulk-replay');
      if (b) b.addEventListener('click', async () => {
        const filterObj = Object.fromEntries(Object.entries({ flow: filter.flow, destination: filter.destination, state: filter.state, key: filter.key }).filter(([, x]) => x));
        const vals = await confirmDialog('Replay dead letters', `Replay every dead letter matching ${esc(JSON.stringify(filterObj))} as a server-side job?`, { confirm: 'Replay all' });
        if (!vals) return;
        try {
          const job = await api('/v1/jobs', { method: 'POST', body: { kind: 'dlq.replay', params: { filter: filterObj, reason: vals.reason } } });
          toast(`Job ${job.id} queued: replaying dead letters`);
        } catch (e) { toast(problemText(e), true); }
      });
    },
  };
}

async function deliveryPage(id) {
  const [v, audit] = await Promise.all([api(`/v1/deliveries/${id}`), api(`/v1/audit${qs({ target: `delivery:${id}`, limit: 100 })}`)]);
  const d = v.delivery;
  const deadLetter = ['dead', 'mapping_failed', 'invalid'].includes(d.state);
  const actions = deadLetter
    ? `<div class="pager">${action('Replay…', 'replay')} ${action('Edit and replay…', 'edit-replay')} ${action('Discard…', 'discard', 'operate', 'danger')}</div>`
    : '';
  return {
    html: `<h1>Delivery ${esc(d.id)} ${badge(d.state)}</h1>
      <p class="muted">Flow ${esc(d.flow)} (version ${esc(d.flow_version)}) → ${esc(d.destination)} · lane ${esc(d.lane)} · generation ${esc(d.generation)}
      · ordering key ${esc(d.ordering_key || '–')} · event ${esc(d.event_source)} ${esc(d.event_id)} (seq ${esc(d.event_seq)})</p>
      ${d.last_error ? `<p class="err">${esc(d.last_error)}</p>` : ''}${actions}
      <h2>Audit trail</h2>${table(audit.audit, [
        ['When', (a) => time(a.at)], ['Who', (a) => esc(a.actor)], ['Action', (a) => esc(a.action)],
        ['Reason', (a) => esc(a.detail?.reason || '')],
        ['Changed', (a) => esc(Object.entries(a.detail?.changed || {}).map(([k, c]) => (k === 'state' ? `state ${c.before} → ${c.after}` : k)).join(', '))],
      ], { empty: 'Not replayed, edited or discarded yet. Each of those is recorded here with its actor and reason.' })}
      <h2>Attempts</h2>${table(v.attempts, [
        ['Gen.', (a) => esc(a.generation), 'num'], ['#', (a) => esc(a.attempt), 'num'], ['Started', (a) => time(a.started_at)],
        ['Node', (a) => esc(a.node)], ['Outcome', (a) => badge(a.outcome)], ['Status', (a) => esc(a.status ?? '')],
        ['Duration', (a) => (a.duration_ms === null || a.duration_ms === undefined ? '' : `${a.duration_ms.toFixed(0)} ms`), 'num'], ['Error', (a) => esc(a.error || '')],
      ], { empty: 'No attempts yet.' })}
      <h2>Payload sent</h2>${payload(d.payload, 'delivery payload')}
      <h2>Event</h2>${v.event ? payload(v.event.event, 'event') : '<p class="muted">The event has been purged.</p>'}`,
    bind(root) {
      const replay = async (edit) => {
        const extra = edit ? `<label>Payload to send (JSON; checked against the flow's schema)<textarea name="payload" id="edit-payload">${esc(JSON.stringify(d.payload, null, 2))}</textarea></label>` : '';
        const vals = await confirmDialog(edit ? 'Edit and replay' : 'Replay', `Send delivery ${esc(d.id)} to ${esc(d.destination)} again?`, { confirm: 'Replay', extra });
        if (!vals) return;
        const body = { reason: vals.reason };
        if (edit) {
          try { body.payload = JSON.parse(vals.payload); } catch (e) { toast(`The payload is not JSON: ${e.message}`, true); return; }
        }
        try {
          await api(`/v1/dlq/${d.id}/replay`, { method: 'POST', body });
          toast(`Delivery ${d.id} replayed`);
          render();
        } catch (e) { toast(problemText(e), true); }
      };
      root.querySelector('#replay')?.addEventListener('click', () => replay(false));
      root.querySelector('#edit-replay')?.addEventListener('click', () => replay(true));
      root.querySelector('#discard')?.addEventListener('click', async () => {
        const vals = await confirmDialog('Discard', `Give up on delivery ${esc(d.id)} for good?`, { confirm: 'Discard' });
        if (!vals) return;
        try {
          await api(`/v1/dlq/${d.id}/discard`, { method: 'POST', body: { reason: vals.reason } });
          toast(`Delivery ${d.id} discarded`);
          render();
        } catch (e) { toast(problemText(e), true); }
      });
    },
    live: !deadLetter,
  };
}

async function incidentsPage() {
  const q = hashQuery();
  const status = q.has('status') ? q.get('status') : 'open,acknowledged';
  const [v, stats] = await Promise.all([api(`/v1/incidents${qs({ status, team: q.get('team'), limit: 100 })}`), api('/v1/incidents/stats')]);
  const sel = [['open,acknowledged', 'open and acknowledged'], ['open', 'open'], ['acknowledged', 'acknowledged'], ['resolved', 'resolved'], ['', 'all']]
    .map(([val, l]) => `<option value="${val}"${val === status ? ' selected' : ''}>${l}</option>`).join('');
  const teams = Object.entries(stats.by_team || {});
  return {
    html: `<h1>Incidents</h1>
      <form class="inline" id="inc-filter"><label>Status<select name="status">${sel}</select></label></form>
      ${table(v.incidents, [
        ['#', (i) => link(`#/incidents/${i.id}`, i.id)], ['Status', (i) => badge(i.status)], ['Severity', (i) => esc(i.severity)],
        ['Cause', (i) => esc(i.cause)], ['Team', (i) => esc(i.team)], ['Title', (i) => link(`#/incidents/${i.id}`, i.title)], ['Opened', (i) => time(i.opened_at)],
      ], { empty: 'No incidents.' })}
      <h2>Response (last 30 days)</h2>
      ${table(teams, [['Team', ([t]) => esc(t)], ['Incidents', ([, s]) => num(s.incidents), 'num'], ['Acknowledged', ([, s]) => num(s.acknowledged), 'num'],
        ['MTTA', ([, s]) => seconds(s.mtta_seconds), 'num'], ['MTTR', ([, s]) => seconds(s.mttr_seconds), 'num']], { empty: 'No incidents yet.' })}
      <p class="muted">${num(stats.alerts)} alerts; ${pct(stats.alerts_acknowledged_share)} acknowledged.</p>
      <h2>Firing alerts</h2><div id="alerts-list"></div>`,
    async bind(root) {
      root.querySelector('#inc-filter select').addEventListener('change', (e) => { location.hash = `#/incidents${qs({ status: e.target.value || '' })}`; if (!e.target.value) location.hash = '#/incidents?status='; });
      const a = await api('/v1/alerts?state=firing&limit=100');
      root.querySelector('#alerts-list').innerHTML = table(a.alerts, [
        ['Severity', (x) => esc(x.severity)], ['Cause', (x) => esc(x.cause)], ['Rule', (x) => esc(x.rule)], ['Count', (x) => num(x.count), 'num'],
        ['Suppressed', (x) => esc(x.suppressed || '')], ['Summary', (x) => esc(x.summary)],
        ['Incident', (x) => (x.incident_id ? link(`#/incidents/${x.incident_id}`, x.incident_id) : '')],
      ], { empty: 'No alert is firing.' });
    },
  };
}

async function incidentPage(id) {
  const v = await api(`/v1/incidents/${id}`);
  const i = v.incident;
  const closed = i.status === 'resolved';
  const links = i.links || {};
  return {
    html: `<h1>Incident ${esc(i.id)}: ${esc(i.title)} ${badge(i.status)}</h1>
      <p class="muted">Severity ${esc(i.severity)} · cause ${esc(i.cause)} · team ${esc(i.team)} (receiver ${esc(i.receiver)}) · opened ${time(i.opened_at)}
      ${i.acknowledged_by ? ` · acknowledged by ${esc(i.acknowledged_by)}` : ''}${i.resolved_by ? ` · resolved by ${esc(i.resolved_by)}` : ''}</p>
      <div class="pager">${closed ? '' : `${i.status === 'open' ? action('Acknowledge', 'ack') : ''} ${action('Resolve', 'resolve', 'operate', 'secondary')}`}</div>
      <form class="inline" id="comment-form"><label style="flex:1">Comment<input name="comment" id="comment" autocomplete="off"></label>${action('Add comment', 'comment-submit')}</form>
      <h2>Timeline</h2><ol class="timeline">${v.timeline.map((e) => `<li><strong>${esc(e.kind)}</strong> ${time(e.at)} ${e.actor ? `· ${esc(e.actor)}` : ''}<div>${esc(e.text || '')}</div></li>`).join('')}</ol>
      <h2>Alerts</h2>${table(v.alerts, [
        ['State', (a) => badge(a.state)], ['Count', (a) => num(a.count), 'num'], ['Summary', (a) => esc(a.summary)],
        ['Evidence', (a) => [...(a.evidence?.instances || []).map((k) => link(`#/trace?key=${encodeURIComponent(k)}`, k)), esc(a.evidence?.error || '')].join(' ')],
        ['Suppressed', (a) => esc(a.suppressed || '')],
      ])}
      ${(links.instances || []).length ? `<h2>Instances</h2><p>${links.instances.map((k) => link(`#/trace?key=${encodeURIComponent(k)}`, k)).join(', ')}</p>` : ''}`,
    bind(root) {
      const act = (path, body, done) => async () => {
        try {
          await api(`/v1/incidents/${i.id}/${path}`, { method: 'POST', body });
          toast(done);
          render();
        } catch (e) { toast(problemText(e), true); }
      };
      root.querySelector('#ack')?.addEventListener('click', act('ack', {}, `Incident ${i.id} acknowledged`));
      root.querySelector('#resolve')?.addEventListener('click', async () => {
        const vals = await confirmDialog('Resolve', `Resolve incident ${esc(i.id)} by hand? It reopens as a new incident if its alerts fire again.`, { confirm: 'Resolve', reason: false });
        if (vals) await act('resolve', {}, `Incident ${i.id} resolved`)();
      });
      root.querySelector('#comment-form').addEventListener('submit', async (e) => {
        e.preventDefault();
        const text = root.querySelector('#comment').value.trim();
        if (text) await act('comments', { comment: text }, 'Comment added')();
      });
    },
  };
}

async function silencesPage() {
  const v = await api('/v1/silences?active=true');
  return {
    html: `<h1>Silences</h1>
      ${table(v.silences, [
        ['#', (s) => esc(s.id)], ['Matchers', (s) => esc(s.matchers.join(', '))], ['From', (s) => time(s.starts_at)], ['Until', (s) => time(s.ends_at)],
        ['By', (s) => esc(s.created_by)], ['Comment', (s) => esc(s.comment)], ['', (s) => action('Expire', `expire-${s.id}`, 'operate', 'secondary')],
      ], { empty: 'No silence is in force.' })}
      <h2>New silence</h2>
      <form id="silence-form" class="card"><label>Matchers, one per line (Alertmanager syntax: cause="partner_down", destination=~"carrier-.*")<textarea name="matchers" required style="min-height:5rem"></textarea></label>
        <div class="inline" style="display:flex;gap:.6rem"><label>Hours<input name="hours" type="number" min="0.1" step="0.1" value="2" required></label>
        <label style="flex:1">Comment<input name="comment" required></label></div><p>${action('Create silence', 'silence-submit')}</p></form>`,
    bind(root) {
      root.querySelector('#silence-form').addEventListener('submit', async (e) => {
        e.preventDefault();
        const f = new FormData(e.target);
        const body = {
          matchers: String(f.get('matchers')).split('\n').map((m) => m.trim()).filter(Boolean),
          ends_at: new Date(Date.now() + Number(f.get('hours')) * 3600e3).toISOString(),
          comment: f.get('comment'),
        };
        try {
          const s = await api('/v1/silences', { method: 'POST', body });
          toast(`Silence ${s.id} created`);
          render();
        } catch (err) { toast(problemText(err), true); }
      });
      root.querySelectorAll('button[id^="expire-"]').forEach((b) => b.addEventListener('click', async () => {
        try {
          await api(`/v1/silences/${b.id.slice(7)}/expire`, { method: 'POST', body: {} });
          toast('Silence expired');
          render();
        } catch (err) { toast(problemText(err), true); }
      }));
    },
  };
}

async function batchesPage() {
  const [b, r] = await Promise.all([api('/v1/batch-monitors'), api('/v1/reconciliations')]);
  const runs = (m, extra = []) => table(m.runs || [], [
    ['Slot', (x) => time(x.slot)], ['Status', (x) => badge(x.status)], ['Count', (x) => num(x.count), 'num'],
    ...extra, ['Finished', (x) => time(x.finished_at)], ['Message', (x) => esc(x.message || '')],
  ], { empty: 'No runs yet.' });
  const expected = (m) => (m.expected_count ? `${num(m.expected_count.min)}–${num(m.expected_count.max)}` : 'any');
  return {
    html: `<h1>Batch monitors and reconciliations</h1>
      ${b.batch_monitors.map((m) => `<section class="card" style="margin-bottom:1rem"><h2>${esc(m.title || m.name)}</h2>
        <p class="muted">${esc(m.schedule)} (${esc(m.timezone)}) · expected count ${expected(m)} · next run ${time(m.next_run)}</p>${runs(m)}</section>`).join('') || '<p class="muted">No batch monitors.</p>'}
      ${r.reconciliations.map((m) => `<section class="card" style="margin-bottom:1rem"><h2>${esc(m.title || m.name)}</h2>
        <p class="muted">${esc(m.schedule)} · next run ${time(m.next_run)}</p>${runs(m, [
          ['Matched', (x) => num(x.summary?.matched), 'num'], ['Mismatched', (x) => num(x.summary?.mismatched), 'num'],
          ['Missing in Odoo', (x) => num(x.summary?.missing_in_odoo), 'num'], ['Missing in other', (x) => num(x.summary?.missing_in_other), 'num'],
        ])}</section>`).join('')}`,
  };
}

// ---- routing ---------------------------------------------------------------------------

const ROUTES = [
  [/^#\/login$/, loginPage, false],
  [/^#\/overview$/, overview, true],
  [/^#\/workflows$/, workflowsPage, true],
  [/^#\/workflows\/([^/?]+)(?:\?.*)?$/, (m) => workflowPage(decodeURIComponent(m[1])), true],
  [/^#\/instances\/(\d+)$/, (m) => instancePage(m[1]), true],
  [/^#\/trace(?:\?.*)?$/, tracePage, false],
  [/^#\/deliveries(?:\?.*)?$/, () => deliveryList('deliveries'), true],
  [/^#\/(?:deliveries|dlq)\/(\d+)$/, (m) => deliveryPage(m[1]), true],
  [/^#\/dlq(?:\?.*)?$/, () => deliveryList('dlq'), true],
  [/^#\/incidents(?:\?.*)?$/, incidentsPage, true],
  [/^#\/incidents\/(\d+)$/, (m) => incidentPage(m[1]), true],
  [/^#\/silences$/, silencesPage, true],
  [/^#\/batches$/, batchesPage, true],
];

let generation = 0;
let live = false;

async function render({ quiet = false } = {}) {
  const hash = location.hash || '#/overview';
  if (!session.me && hash !== '#/login') { location.hash = '#/login'; return; }
  const nav = document.getElementById('nav');
  nav.hidden = !session.me;
  document.getElementById('who').innerHTML = session.me
    ? `${esc(session.me.name)} (${esc(session.me.role)}) <button type="button" class="secondary" id="logout">Sign out</button>` : '';
  document.getElementById('logout')?.addEventListener('click', () => { logout(); location.hash = '#/login'; });
  for (const a of nav.querySelectorAll('a')) {
    const on = hash === a.getAttribute('href') || hash.startsWith(`${a.getAttribute('href')}/`) || hash.startsWith(`${a.getAttribute('href')}?`);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const route = ROUTES.find(([re]) => re.test(hash));
  const mine = ++generation;
  if (!route) { main.innerHTML = `<h1>Not found</h1><p>${link('#/overview', 'Back to the overview')}</p>`; return; }
  const [re, page, isLive] = route;
  try {
    const out = await page(hash.match(re));
    if (mine !== generation) return; // a newer render started
    const y = window.scrollY;
    main.innerHTML = out.html;
    main.dataset.page = hash.split(/[/?]/)[1] || '';
    main.dataset.rendered = String(Date.now());
    live = isLive && out.live !== false;
    if (out.bind) await out.bind(main);
    if (quiet) window.scrollTo(0, y); else main.focus({ preventScroll: true });
  } catch (e) {
    if (mine !== generation) return;
    live = false;
    main.innerHTML = `<h1>Something went wrong</h1><p class="err" role="alert">${esc(problemText(e))}</p>`;
  }
}

function busy() {
  const a = document.activeElement;
  return document.querySelector('dialog[open]') || (a && ['INPUT', 'TEXTAREA', 'SELECT'].includes(a.tagName));
}

setInterval(() => { if (live && session.me && !busy() && !document.hidden) render({ quiet: true }); }, REFRESH_MS);
window.addEventListener('hashchange', () => render());
resume().then(() => {
  if (session.me && (!location.hash || location.hash === '#/login')) location.hash = '#/overview';
  else render();
});
