// The live monitor of one join: the event stream GET /api/projects/ID/monitor/NID (event
// `row`: {ts, kind, src, value}) shown as a table (newest first, the last 200 rows) and a
// small line chart of the latest numeric values of each source, drawn in SVG by hand.

import { h, svg, replace, clock } from './dom.js';

const MAX_ROWS = 200;
const MAX_POINTS = 60;
const W = 560;
const H = 170;
const PAD = { l: 44, r: 10, t: 10, b: 22 };
const COLOURS = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df', '#0a7d8c', '#bf3989'];

/** The first number in a value (a number, or a list holding one), else null. */
export function numeric(v) {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (Array.isArray(v)) {
    for (const x of v) {
      const n = numeric(x);
      if (n !== null) return n;
    }
  }
  return null;
}

function sourceLabel(row) {
  if (row.kind === 'join' && !row.src) return 'join';
  return row.src || row.kind;
}

function show(v) {
  let t;
  try {
    t = JSON.stringify(v);
  } catch {
    t = String(v);
  }
  return t.length > 200 ? `${t.slice(0, 200)}…` : t;
}

/** Opens the monitor in `slot`; answers {close()}. */
export function openMonitor(slot, projectId, nid, name, onClose) {
  const tbody = h('tbody');
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Latest numeric values of ${name}` });
  const legend = h('ul', { class: 'legend' });
  const state = h('span', { class: 'badge', id: 'monitor-state' }, 'connecting');
  const count = h('span', { class: 'muted small', id: 'monitor-count' }, '0 rows');
  const series = new Map();
  let rows = 0;
  let source = null;
  let frame = 0;
  let paused = false;

  const close = () => {
    if (source) source.close();
    source = null;
    cancelAnimationFrame(frame);
    replace(slot);
    onClose();
  };
  const pause = h('button', {
    type: 'button',
    id: 'monitor-pause',
    'aria-pressed': 'false',
    onclick: () => {
      paused = !paused;
      pause.setAttribute('aria-pressed', String(paused));
      pause.textContent = paused ? 'Resume' : 'Pause';
    },
  }, 'Pause');
  const section = h('section', { class: 'monitor', id: 'monitor', dataset: { monitor: nid }, 'aria-label': `Monitor of ${name}` },
    h('div', { class: 'monitor-head' },
      h('h2', {}, `Monitor: ${name}`), state, count,
      h('span', { class: 'spacer' }),
      pause,
      h('button', { type: 'button', id: 'monitor-clear', onclick: () => clear() }, 'Clear'),
      h('button', { type: 'button', id: 'monitor-close', onclick: close }, 'Close monitor')),
    h('div', { class: 'monitor-body' },
      h('div', { class: 'chart-box' }, chart, legend),
      h('div', { class: 'table-box' },
        h('table', { class: 'rows', id: 'monitor-rows' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Kind'), h('th', {}, 'Source'), h('th', {}, 'Value'))),
          tbody))));
  replace(slot, section);
  section.scrollIntoView({ block: 'nearest' });

  function clear() {
    replace(tbody);
    rows = 0;
    series.clear();
    count.textContent = '0 rows';
    draw();
  }

  function draw() {
    frame = 0;
    const all = [...series.values()].flat();
    replace(legend);
    if (!all.length) {
      replace(chart, svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'axis' }, 'No numeric values yet'));
      return;
    }
    let t0 = Math.min(...all.map((p) => p.ts));
    let t1 = Math.max(...all.map((p) => p.ts));
    let y0 = Math.min(...all.map((p) => p.v));
    let y1 = Math.max(...all.map((p) => p.v));
    if (t1 === t0) { t0 -= 1; t1 += 1; }
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
    const y = (v) => H - PAD.b - ((v - y0) / (y1 - y0)) * (H - PAD.t - PAD.b);
    const fmt = (v) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(Math.round(v)) : v.toPrecision(3));
    const parts = [
      svg('line', { x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: 'axis-line' }),
      svg('line', { x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: 'axis-line' }),
      svg('text', { x: PAD.l - 4, y: PAD.t + 8, 'text-anchor': 'end', class: 'axis' }, fmt(y1)),
      svg('text', { x: PAD.l - 4, y: H - PAD.b, 'text-anchor': 'end', class: 'axis' }, fmt(y0)),
      svg('text', { x: PAD.l, y: H - 6, class: 'axis' }, clock(t0).slice(0, 8)),
      svg('text', { x: W - PAD.r, y: H - 6, 'text-anchor': 'end', class: 'axis' }, clock(t1).slice(0, 8)),
    ];
    let i = 0;
    for (const [src, pts] of series) {
      const colour = COLOURS[i % COLOURS.length];
      i += 1;
      parts.push(svg('polyline', { points: pts.map((p) => `${x(p.ts).toFixed(1)},${y(p.v).toFixed(1)}`).join(' '), stroke: colour, class: 'series' }));
      const last = pts[pts.length - 1];
      parts.push(svg('circle', { cx: x(last.ts), cy: y(last.v), r: 3, fill: colour }));
      legend.append(h('li', {}, h('span', { class: 'swatch', style: `background:${colour}` }), `${src}: ${fmt(last.v)}`));
    }
    replace(chart, parts);
  }

  const add = (row) => {
    if (paused) return;
    const tr = h('tr', { class: `kind-${row.kind}`, dataset: { kind: row.kind } },
      h('td', { class: 'mono' }, clock(row.ts)),
      h('td', {}, h('span', { class: `kind ${row.kind}` }, row.kind)),
      h('td', {}, sourceLabel(row)),
      h('td', { class: 'mono value' }, show(row.value)));
    tbody.prepend(tr);
    rows += 1;
    while (tbody.children.length > MAX_ROWS) tbody.lastChild.remove();
    count.textContent = `${rows} row${rows === 1 ? '' : 's'}${rows > MAX_ROWS ? ` (last ${MAX_ROWS} shown)` : ''}`;
    const v = row.kind === 'error' ? null : numeric(row.value);
    if (v !== null) {
      const key = `${row.kind} ${sourceLabel(row)}`;
      if (!series.has(key)) series.set(key, []);
      const pts = series.get(key);
      pts.push({ ts: row.ts, v });
      if (pts.length > MAX_POINTS) pts.shift();
      if (!frame) frame = requestAnimationFrame(draw);
    }
  };

  source = new EventSource(`/api/projects/${projectId}/monitor/${nid}`);
  let opened = false;
  source.addEventListener('open', () => {
    // A reconnected stream sends the recent rows again.
    if (opened) clear();
    opened = true;
    state.textContent = 'live';
    state.className = 'badge applied';
  });
  source.addEventListener('error', () => {
    state.textContent = 'reconnecting';
    state.className = 'badge waiting';
  });
  source.addEventListener('row', (ev) => {
    try {
      add(JSON.parse(ev.data));
    } catch (e) {
      console.error(e);
    }
  });
  draw();
  return { close };
}
