// The dashboard: polls /status and /events once a second and redraws. Plain browser JavaScript, no build step and
// nothing loaded from elsewhere (the server's Content-Security-Policy allows only this origin). Every value from
// the server is put in the page as text, never as HTML.
'use strict';

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2'];
const MAX_EVENTS = 300;
let lastSeq = 0;
const events = [];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function rate(bps) {
  if (!bps) return '–';
  if (bps >= 1e9) return `${(bps / 1e9).toFixed(2)} GB/s`;
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} MB/s`;
  return `${(bps / 1e3).toFixed(1)} kB/s`;
}

function bytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${(n / 2 ** 10).toFixed(1)} KiB`;
}

function ago(ms) {
  if (ms === null || ms === undefined) return '–';
  return ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(1)} s ago`;
}

function renderTotals(s) {
  const c = s.counters;
  const t = s.peerTotals;
  const box = document.getElementById('totals');
  const items = [
    ['peers', s.groups.reduce((n, g) => n + g.members.length, 0)],
    ['joined', c.peersJoined], ['dropped', c.peersDropped], ['left', c.peersLeft], ['re-forms', c.reforms],
    ['ops committed', c.opsCommitted], ['ops aborted', c.opsAborted + c.opsSuperseded], ['state syncs', c.syncsCommitted],
    ['sent', bytes(t.bytesSent)], ['received', bytes(t.bytesReceived)],
  ];
  box.replaceChildren(...items.map(([k, v]) => el('div', { 'data-total': k }, el('b', {}, v), k)));
}

function peerRow(p, pending) {
  const st = p.stats || {};
  return el('tr', { class: pending ? 'pending' : '', 'data-peer': p.id },
    el('td', {}, p.id), el('td', {}, p.label || ''), el('td', {}, p.address), el('td', { class: 'num' }, p.connections || '–'),
    el('td', { class: 'num' }, ago(p.lastHeartbeatMsAgo)), el('td', { class: 'num' }, pending ? 'pending' : rate(p.throughput)),
    el('td', { class: 'num' }, st.allReduces ?? 0), el('td', { class: 'num' }, bytes(st.bytesSent ?? 0)));
}

function renderGroups(s) {
  const box = document.getElementById('groups');
  box.replaceChildren(...s.groups.map((g) => {
    const head = el('tr', {}, ...['peer', 'label', 'data address', 'connections', 'last heartbeat', 'throughput', 'all-reduces', 'sent']
      .map((h, i) => el('th', { class: i >= 3 ? 'num' : '' }, h)));
    const ring = g.ring.length ? [...g.ring, g.ring[0]].join(' → ') : '(empty)';
    return el('div', { class: 'group', 'data-group': g.peerGroup },
      el('h2', {}, `Group ${g.peerGroup}`, el('span', { class: 'muted small' },
        ` · epoch ${g.epoch} · shared-state revision ${g.stateRevision ?? '–'} · ${g.members.length} members${g.pending.length ? `, ${g.pending.length} pending` : ''}`)),
      el('div', { class: 'ring', 'data-ring': '' }, `ring: ${ring}`),
      el('table', {}, el('thead', {}, head), el('tbody', {}, ...g.members.map((p) => peerRow(p, false)), ...g.pending.map((p) => peerRow(p, true)))));
  }));
}

function renderChart(s) {
  const svg = document.getElementById('chart');
  const hist = s.throughputHistory;
  const ns = 'http://www.w3.org/2000/svg';
  const groups = [...new Set(hist.flatMap((p) => Object.keys(p.groups)))];
  const max = Math.max(1, ...hist.flatMap((p) => Object.values(p.groups)));
  const t0 = hist.length ? hist[0].at : 0;
  const span = Math.max(1, (hist.length ? hist[hist.length - 1].at : 1) - t0);
  const parts = [];
  groups.forEach((g, i) => {
    const pts = hist.filter((p) => g in p.groups).map((p) => `${(((p.at - t0) / span) * 800).toFixed(1)},${(195 - (p.groups[g] / max) * 185).toFixed(1)}`);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', COLORS[i % COLORS.length]);
    line.setAttribute('stroke-width', '2');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    parts.push(line);
  });
  const label = document.createElementNS(ns, 'text');
  label.setAttribute('x', '6');
  label.setAttribute('y', '16');
  label.setAttribute('font-size', '12');
  label.setAttribute('fill', '#69727d');
  label.textContent = `max ${rate(max)} · last ${Math.round(span / 1000)} s`;
  parts.push(label);
  svg.replaceChildren(...parts);
  document.getElementById('legend').replaceChildren(...groups.map((g, i) => {
    const s = el('span', {}, `■ group ${g}`);
    s.style.color = COLORS[i % COLORS.length]; // a CSSOM property: allowed by the page's CSP, unlike a style attribute
    return s;
  }));
}

function fieldText(fields) {
  return Object.entries(fields).filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
}

function renderEvents() {
  const showDebug = document.getElementById('debug').checked;
  const list = document.getElementById('events');
  const shown = events.filter((e) => showDebug || e.level !== 'debug').slice(-MAX_EVENTS).reverse();
  list.replaceChildren(...shown.map((e) => el('li', { class: e.level, 'data-what': e.what },
    el('span', { class: 'at' }, new Date(e.at).toLocaleTimeString()), el('span', { class: 'what' }, e.what),
    el('span', { class: 'fields' }, fieldText(e.fields)))));
}

async function getJson(path) {
  const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function poll() {
  const badge = document.getElementById('conn');
  try {
    const [s, evs] = await Promise.all([getJson('/status'), getJson(`/events?after=${lastSeq}`)]);
    for (const e of evs) if (e.seq > lastSeq) events.push(e);
    if (evs.length) lastSeq = evs[evs.length - 1].seq;
    if (events.length > 2000) events.splice(0, events.length - 2000);
    document.getElementById('master').textContent =
      `master ${s.master.address} · up ${Math.round(s.master.uptimeSeconds)} s${s.master.auth ? ' · token required' : ''}${s.master.encryption ? ` · control ${s.master.encryption.control} · data ${s.master.encryption.data}` : ''}`;
    const warn = document.getElementById('warnings');
    warn.textContent = (s.master.warnings || []).join('\n');
    warn.hidden = !(s.master.warnings || []).length;
    renderTotals(s);
    renderGroups(s);
    renderChart(s);
    renderEvents();
    badge.textContent = 'live';
    badge.className = 'badge live';
  } catch (err) {
    badge.textContent = `disconnected (${err.message})`;
    badge.className = 'badge down';
  }
  setTimeout(poll, 1000);
}

document.getElementById('debug').addEventListener('change', renderEvents);
poll();
