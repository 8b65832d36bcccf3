// The project editor (#/projects/ID): device objects' input features on the left, output
// features on the right, network applications (joins) in the middle, links drawn as SVG
// lines. Click an input feature, then an output feature: a new network application links
// them. Click a feature, then a join (or a join, then a feature): a link is added. Clicking
// a link or a join opens the side panel (panel.js); the join's panel opens its live monitor
// (monitor.js). The project and its status are polled every 2 s while the editor is open.

import { h, svg, replace, select } from './dom.js';
import { api, get } from './api.js';
import { store, onDevices, toast, act, STATE_TEXT } from './store.js';
import { openPanel } from './panel.js';
import { openMonitor } from './monitor.js';
import { exportProject } from './projects.js';

const POLL_MS = 2000;


export function render(main, args) {
  const id = Number(args[0]);
  const ed = {
    id,
    project: null,
    status: null,
    features: new Map(),
    models: [],
    functions: [],
    /** {type: 'feature', oid, name, dir} or {type: 'join', nid}: the first click of a link. */
    pending: null,
    /** {kind: 'link', nid, lid} or {kind: 'join', nid}: what the panel shows. */
    selected: null,
    panel: null,
    monitor: null,
    lastJson: '',
    /** DAs chosen in a binding select and not bound yet, by object id. */
    bindChoice: new Map(),
    stopped: false,
    els: {},
  };
  replace(main, h('section', { class: 'page editor' }, h('p', { class: 'muted' }, 'Loading the project…')));
  ed.main = main;
  const onKey = (ev) => {
    if (ev.key !== 'Escape') return;
    if (ed.pending) {
      setPending(ed, null);
      toast('Linking cancelled', 'info');
    } else if (ed.selected) {
      closePanel(ed);
    }
  };
  document.addEventListener('keydown', onKey);
  let ro = null;
  const onResize = () => drawLines(ed);
  window.addEventListener('resize', onResize);
  const unsubscribe = onDevices(() => {
    if (ed.project) renderCanvas(ed);
  });
  let timer = null;
  let busy = false;
  const tick = async () => {
    if (busy || ed.stopped || document.hidden) return;
    busy = true;
    try {
      await refresh(ed);
    } finally {
      busy = false;
    }
  };
  (async () => {
    await loadLibrary(ed);
    const ok = await refresh(ed, true);
    if (!ok || ed.stopped) return;
    ro = new ResizeObserver(() => drawLines(ed));
    ro.observe(ed.els.canvas);
    timer = setInterval(tick, POLL_MS);
  })();
  return () => {
    ed.stopped = true;
    clearInterval(timer);
    document.removeEventListener('keydown', onKey);
    window.removeEventListener('resize', onResize);
    unsubscribe();
    if (ro) ro.disconnect();
    if (ed.monitor) ed.monitor.close();
  };
}

/** Features, models and functions of the library (names, directions, widths, versions). */
export async function loadLibrary(ed) {
  try {
    const [features, models, functions] = await Promise.all([
      get('/api/features'), get('/api/models'), get('/api/functions')]);
    ed.features = new Map(features.map((f) => [f.name, f]));
    ed.models = models;
    ed.functions = functions;
  } catch (e) {
    toast(e.message, 'error');
  }
}

/** Reloads the project and its status; renders when anything changed. Answers success. */
async function refresh(ed, first = false) {
  let data;
  try {
    data = await get(`/api/projects/${ed.id}`);
  } catch (e) {
    if (first) {
      replace(ed.main, h('section', { class: 'page' }, h('h1', {}, 'Project'),
        h('p', { class: 'empty' }, `Cannot open project ${ed.id}: ${e.message}`),
        h('a', { href: '#/projects' }, 'Back to the projects')));
    }
    toast(e.message, 'error');
    return false;
  }
  if (ed.stopped) return false;
  const json = JSON.stringify(data);
  if (json === ed.lastJson) return true;
  ed.lastJson = json;
  const revChanged = !ed.project || ed.project.rev !== data.project.rev;
  ed.project = data.project;
  ed.status = data.status || { objects: {}, netapps: {} };
  if (first) layout(ed);
  renderHead(ed);
  renderCanvas(ed);
  syncPanel(ed, revChanged);
  return true;
}

/** After an action: reload now (not at the next poll). */
export async function reload(ed) {
  await refresh(ed);
}

function layout(ed) {
  const e = ed.els;
  e.title = h('h1', { id: 'project-title' });
  e.switchBtn = h('button', {
    type: 'button',
    id: 'project-switch',
    role: 'switch',
    class: 'switch',
    onclick: () => toggle(ed),
  }, h('span', { class: 'knob', 'aria-hidden': 'true' }), h('span', { class: 'switch-text' }));
  e.autoBind = h('input', {
    type: 'checkbox',
    id: 'project-auto-bind',
    onchange: async () => {
      const on = e.autoBind.checked;
      await act(() => api('PATCH', `/api/projects/${ed.id}`, { auto_bind: on }), on ? 'Automatic binding on' : 'Automatic binding off');
      reload(ed);
    },
  });
  e.summary = h('p', { class: 'summary', id: 'project-summary', 'aria-live': 'polite' });
  e.modelPick = h('select', { id: 'object-model', 'aria-label': 'Model of the new device object' });
  e.hint = h('p', { class: 'hint-line', id: 'link-hint', 'aria-live': 'polite' });
  e.inputs = h('div', { class: 'col inputs', id: 'inputs' });
  e.joins = h('div', { class: 'col joins', id: 'joins' });
  e.outputs = h('div', { class: 'col outputs', id: 'outputs' });
  e.lines = svg('svg', { class: 'lines', id: 'link-lines', 'aria-hidden': 'false', role: 'group', 'aria-label': 'Links' });
  e.canvas = h('div', { class: 'canvas', id: 'canvas' }, e.lines,
    h('div', { class: 'col-head in' }, 'Input features'),
    h('div', { class: 'col-head mid' }, 'Network applications'),
    h('div', { class: 'col-head out' }, 'Output features'),
    e.inputs, e.joins, e.outputs);
  e.panel = h('aside', { class: 'panel', id: 'panel', hidden: true, 'aria-label': 'Details', tabindex: '-1' });
  e.monitor = h('div', { id: 'monitor-slot' });
  replace(ed.main, h('section', { class: 'page editor' },
    h('div', { class: 'editor-head' },
      h('a', { href: '#/projects', class: 'back' }, '← Projects'),
      e.title,
      h('div', { class: 'switch-wrap' }, e.switchBtn),
      h('label', { class: 'check' }, e.autoBind, ' Bind automatically'),
      h('button', { type: 'button', id: 'project-export', onclick: () => exportProject(ed.id, ed.project.name) }, 'Export'),
      h('button', { type: 'button', id: 'project-rename', onclick: () => rename(ed) }, 'Rename')),
    e.summary,
    h('div', { class: 'toolbar' },
      h('label', { for: 'object-model' }, 'Add device object:'),
      e.modelPick,
      h('button', { type: 'button', id: 'object-add', onclick: () => addObject(ed) }, 'Add'),
      e.hint),
    h('div', { class: 'editor-body' }, e.canvas, e.panel),
    e.monitor));
  showHint(ed);
}

function renderHead(ed) {
  const { project: p, status: s, els: e } = ed;
  e.title.textContent = p.name;
  document.title = `${p.name} — iotctl`;
  e.switchBtn.setAttribute('aria-checked', String(p.on));
  e.switchBtn.dataset.on = String(p.on);
  e.switchBtn.querySelector('.switch-text').textContent = p.on ? 'Project on' : 'Project off';
  e.switchBtn.title = p.on ? 'Turn the project off' : 'Turn the project on';
  e.autoBind.checked = p.auto_bind;
  const counts = {};
  for (const n of p.netapps) {
    const st = (s.netapps[n.id] || {}).state || (p.on ? 'applying' : 'off');
    counts[st] = (counts[st] || 0) + 1;
  }
  const parts = Object.entries(counts).map(([k, v]) => `${v} ${STATE_TEXT[k] || k}`);
  e.summary.textContent = `${p.on ? 'On' : 'Off'}. ${p.objects.length} device object(s), ${p.netapps.length} network application(s)${parts.length ? `: ${parts.join(', ')}` : ''}.`;
  const current = e.modelPick.value;
  replace(e.modelPick, ed.models.length
    ? ed.models.map((m) => h('option', { value: m.name }, m.name))
    : h('option', { value: '' }, 'no model: create one first'));
  if (current) e.modelPick.value = current;
}

function featureDir(ed, name) {
  const f = ed.features.get(name);
  return f ? f.direction : null;
}

function modelFeatures(ed, modelName) {
  const m = ed.models.find((x) => x.name === modelName);
  return m ? m.features : [];
}

/** Keys of the focused element, to focus its successor after a re-render. */
function focusKey() {
  const a = document.activeElement;
  if (!a || !a.dataset) return null;
  for (const k of ['feature', 'join', 'link', 'bind', 'unbind']) {
    if (a.dataset[k] !== undefined) return `[data-${k}="${CSS.escape(a.dataset[k])}"]`;
  }
  return null;
}

function renderCanvas(ed) {
  if (!ed.project) return;
  const { project: p, status: s, els: e } = ed;
  const key = focusKey();
  const inputs = [];
  const outputs = [];
  for (const o of p.objects) {
    const names = modelFeatures(ed, o.model);
    const ins = names.filter((n) => featureDir(ed, n) === 'input');
    const outs = names.filter((n) => featureDir(ed, n) === 'output');
    const unknown = names.filter((n) => !featureDir(ed, n));
    const bindSide = ins.length || !outs.length ? 'in' : 'out';
    if (ins.length || !outs.length) inputs.push(objectCard(ed, o, ins, 'in', bindSide === 'in', unknown, s));
    if (outs.length) outputs.push(objectCard(ed, o, outs, 'out', bindSide === 'out', [], s));
  }
  replace(e.inputs, inputs.length ? inputs : h('p', { class: 'empty' }, 'Add a device object with input features.'));
  replace(e.outputs, outputs.length ? outputs : h('p', { class: 'empty' }, 'Add a device object with output features.'));
  replace(e.joins, p.netapps.length
    ? p.netapps.map((n) => joinCard(ed, n, s.netapps[n.id]))
    : h('p', { class: 'empty' }, 'Click an input feature, then an output feature, to join them.'));
  markPending(ed);
  markSelected(ed);
  if (key) {
    const el = ed.main.querySelector(key);
    if (el) el.focus();
  }
  requestAnimationFrame(() => drawLines(ed));
}

function objectCard(ed, o, names, side, withBinding, unknown, s) {
  const os = (s.objects || {})[o.id] || {};
  let stateText;
  let state;
  if (!o.da_id) {
    state = 'unbound';
    stateText = 'not bound';
  } else if (os.online === true) {
    state = 'online';
    stateText = `${os.da_name || 'bound'}: online`;
  } else if (os.online === false) {
    state = 'offline';
    stateText = `${os.da_name || 'bound'}: offline`;
  } else {
    state = 'unknown';
    stateText = 'bound DA not registered';
  }
  return h('article', { class: `object side-${side}`, dataset: { object: o.id, side } },
    h('header', {},
      h('h3', {}, o.model, h('span', { class: 'muted small' }, ` #${o.id}`)),
      h('span', { class: `badge ${state}`, dataset: { objectState: state } }, stateText)),
    os.error ? h('p', { class: 'error small' }, os.error) : null,
    h('ul', { class: 'features' }, names.map((n) => h('li', {},
      h('button', {
        type: 'button',
        class: `feature ${side === 'in' ? 'input' : 'output'}`,
        dataset: { feature: `${o.id}:${n}` },
        'aria-pressed': 'false',
        title: side === 'in' ? `Input feature ${n}: click, then an output feature or a join` : `Output feature ${n}: click, then an input feature or a join`,
        onclick: () => clickFeature(ed, o.id, n, side === 'in' ? 'input' : 'output'),
      }, n)))),
    unknown.length ? h('p', { class: 'error small' }, `Not in the feature library: ${unknown.join(', ')}`) : null,
    withBinding ? binding(ed, o) : h('p', { class: 'muted small' }, 'Bound on the left.'));
}

function binding(ed, o) {
  const das = store.devices.filter((d) => d.model === o.model);
  const options = [{ value: '', label: das.length ? 'Choose a DA…' : `No DA of model ${o.model} registered` }];
  for (const d of das) options.push({ value: d.id, label: `${d.name} (${d.online ? 'online' : 'offline'})` });
  if (o.da_id && !das.some((d) => d.id === o.da_id)) options.push({ value: o.da_id, label: `${o.da_id.slice(0, 8)}… (not registered)` });
  // A DA chosen but not bound yet stays chosen when the editor re-renders.
  const chosen = ed.bindChoice.get(o.id);
  const pick = select(options, chosen !== undefined ? chosen : o.da_id || '', { class: 'bind-select', dataset: { bindSelect: o.id }, 'aria-label': `DA of device object ${o.id}` });
  pick.addEventListener('change', () => ed.bindChoice.set(o.id, pick.value));
  return h('div', { class: 'binding' },
    pick,
    h('button', {
      type: 'button',
      class: 'small',
      dataset: { bind: o.id },
      onclick: async () => {
        if (!pick.value) {
          toast('Choose a DA to bind first', 'error');
          return;
        }
        const r = await act(() => api('POST', `/api/projects/${ed.id}/objects/${o.id}/bind`, { da_id: pick.value }), 'Bound');
        if (r) ed.bindChoice.delete(o.id);
        reload(ed);
      },
    }, 'Bind'),
    o.da_id ? h('button', {
      type: 'button',
      class: 'small',
      dataset: { unbind: o.id },
      onclick: async () => {
        ed.bindChoice.delete(o.id);
        await act(() => api('POST', `/api/projects/${ed.id}/objects/${o.id}/unbind`), 'Unbound');
        reload(ed);
      },
    }, 'Unbind') : null,
    h('button', {
      type: 'button',
      class: 'small danger',
      dataset: { deleteObject: o.id },
      onclick: async () => {
        if (!confirm(`Delete device object ${o.model} #${o.id} and its links?`)) return;
        await act(() => api('DELETE', `/api/projects/${ed.id}/objects/${o.id}`), 'Device object deleted');
        reload(ed);
      },
    }, 'Delete'));
}

function linkLabel(ed, l) {
  const o = ed.project.objects.find((x) => x.id === l.object);
  return `${o ? o.model : '?'} #${l.object} ${l.feature}`;
}

function joinCard(ed, n, ns) {
  ns = ns || {};
  const state = ns.state || (ed.project.on ? 'applying' : 'off');
  const errors = Object.keys(ns.link_errors || {}).length + (ns.join_error ? 1 : 0);
  const ins = n.links.filter((l) => featureDir(ed, l.feature) !== 'output');
  const outs = n.links.filter((l) => featureDir(ed, l.feature) === 'output');
  const chip = (l, dir) => h('li', {}, h('button', {
    type: 'button',
    class: `link-chip ${dir}${(ns.link_errors || {})[l.id] ? ' has-error' : ''}`,
    dataset: { link: `${n.id}:${l.id}` },
    title: `Link of ${linkLabel(ed, l)}${l.func ? `, function ${l.func.name} v${l.func.version}` : ''}`,
    onclick: () => selectItem(ed, { kind: 'link', nid: n.id, lid: l.id }),
  }, dir === 'in' ? `→ ${l.feature}` : `${l.feature} →`, l.func ? h('span', { class: 'fn-tag' }, `ƒ ${l.func.name}`) : null));
  return h('article', { class: `join state-${state}`, dataset: { joinCard: n.id } },
    h('button', {
      type: 'button',
      class: 'join-button',
      dataset: { join: n.id },
      'aria-pressed': 'false',
      onclick: () => clickJoin(ed, n.id),
    },
    h('span', { class: 'join-name' }, n.name),
    h('span', { class: 'join-fn' }, n.join ? `ƒ ${n.join.name} v${n.join.version}` : 'no join function')),
    h('div', { class: 'join-state' },
      h('span', { class: `badge ${state}`, dataset: { state } }, STATE_TEXT[state] || state),
      errors ? h('span', { class: 'badge error' }, `${errors} error${errors > 1 ? 's' : ''}`) : null),
    ns.detail ? h('p', { class: 'detail small' }, ns.detail) : null,
    h('ul', { class: 'link-chips' }, ins.map((l) => chip(l, 'in')), outs.map((l) => chip(l, 'out'))));
}

/** Anchors of each link's line: the feature's edge facing the middle, and the join's. */
function drawLines(ed) {
  const e = ed.els;
  if (!e.canvas || !ed.project) return;
  const base = e.canvas.getBoundingClientRect();
  const paths = [];
  for (const n of ed.project.netapps) {
    const jb = e.canvas.querySelector(`[data-join="${n.id}"]`);
    if (!jb) continue;
    const jr = jb.getBoundingClientRect();
    const ns = ed.status.netapps[n.id] || {};
    for (const l of n.links) {
      const fb = e.canvas.querySelector(`[data-feature="${CSS.escape(`${l.object}:${l.feature}`)}"]`);
      if (!fb) continue;
      const fr = fb.getBoundingClientRect();
      const input = fb.classList.contains('input');
      const x1 = (input ? fr.right : fr.left) - base.left;
      const y1 = fr.top + fr.height / 2 - base.top;
      const x2 = (input ? jr.left : jr.right) - base.left;
      const y2 = jr.top + jr.height / 2 - base.top;
      const dx = Math.max(30, Math.abs(x2 - x1) / 2) * (x2 > x1 ? 1 : -1);
      const d = `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`;
      const err = (ns.link_errors || {})[l.id];
      const selected = ed.selected && ed.selected.kind === 'link' && ed.selected.nid === n.id && ed.selected.lid === l.id;
      const g = svg('g', {
        class: `link-line${err ? ' has-error' : ''}${selected ? ' selected' : ''}${input ? ' in' : ' out'}`,
        dataset: { link: `${n.id}:${l.id}` },
      },
      svg('title', {}, `${linkLabel(ed, l)} ${input ? '→' : '←'} ${n.name}${err ? `: ${err}` : ''}`),
      svg('path', { d, class: 'hit' }),
      svg('path', { d, class: 'wire' }),
      svg('circle', { cx: x1, cy: y1, r: 3.5, class: 'end' }),
      svg('circle', { cx: x2, cy: y2, r: 3.5, class: 'end' }));
      g.addEventListener('click', () => selectItem(ed, { kind: 'link', nid: n.id, lid: l.id }));
      paths.push(g);
    }
  }
  replace(e.lines, paths);
}

function showHint(ed) {
  const p = ed.pending;
  let text;
  if (!p) text = 'To link: click an input feature, then an output feature (or a join).';
  else if (p.type === 'feature') text = `${p.name} selected: now click ${p.dir === 'input' ? 'an output' : 'an input'} feature (new network application) or a join. Escape cancels.`;
  else text = 'Join selected: click a feature to link it to this join. Escape cancels.';
  ed.els.hint.textContent = text;
  ed.els.hint.dataset.pending = p ? p.type : '';
}

function setPending(ed, p) {
  ed.pending = p;
  markPending(ed);
  showHint(ed);
}

function markPending(ed) {
  const p = ed.pending;
  for (const b of ed.main.querySelectorAll('[data-feature]')) {
    const on = !!(p && p.type === 'feature' && b.dataset.feature === `${p.oid}:${p.name}`);
    b.classList.toggle('pending', on);
    b.setAttribute('aria-pressed', String(on));
  }
  for (const b of ed.main.querySelectorAll('[data-join]')) {
    const on = !!(p && p.type === 'join' && b.dataset.join === String(p.nid));
    b.classList.toggle('pending', on);
    b.setAttribute('aria-pressed', String(on));
  }
}

function markSelected(ed) {
  const s = ed.selected;
  for (const b of ed.main.querySelectorAll('[data-join-card]')) {
    b.classList.toggle('selected', !!(s && s.kind === 'join' && b.dataset.joinCard === String(s.nid)));
  }
  for (const b of ed.main.querySelectorAll('.link-chip')) {
    b.classList.toggle('selected', !!(s && s.kind === 'link' && b.dataset.link === `${s.nid}:${s.lid}`));
  }
}

function nextJoinName(ed) {
  const names = new Set(ed.project.netapps.map((n) => n.name));
  let i = 1;
  while (names.has(`Join ${i}`)) i += 1;
  return `Join ${i}`;
}

async function clickFeature(ed, oid, name, dir) {
  const p = ed.pending;
  if (p && p.type === 'feature') {
    if (p.oid === oid && p.name === name) {
      setPending(ed, null);
      return;
    }
    if (p.dir === dir) {
      setPending(ed, { type: 'feature', oid, name, dir });
      toast(`Both are ${dir} features: ${name} is selected instead; now click ${dir === 'input' ? 'an output' : 'an input'} feature.`, 'info');
      return;
    }
    setPending(ed, null);
    const joinName = nextJoinName(ed);
    const na = await act(() => api('POST', `/api/projects/${ed.id}/netapps`, {
      name: joinName,
      links: [{ object: p.oid, feature: p.name }, { object: oid, feature: name }],
    }), `Linked ${p.name} and ${name} through ${joinName}`);
    await reload(ed);
    if (na) selectItem(ed, { kind: 'join', nid: na.id });
    return;
  }
  if (p && p.type === 'join') {
    setPending(ed, null);
    await addLink(ed, p.nid, oid, name);
    return;
  }
  setPending(ed, { type: 'feature', oid, name, dir });
}

async function addLink(ed, nid, oid, name) {
  const n = ed.project.netapps.find((x) => x.id === nid);
  const l = await act(() => api('POST', `/api/projects/${ed.id}/netapps/${nid}/links`, { object: oid, feature: name }),
    `Linked ${name} to ${n ? n.name : 'the join'}`);
  await reload(ed);
  return l;
}

async function clickJoin(ed, nid) {
  const p = ed.pending;
  if (p && p.type === 'feature') {
    setPending(ed, null);
    await addLink(ed, nid, p.oid, p.name);
    return;
  }
  if (p && p.type === 'join' && p.nid === nid) {
    setPending(ed, null);
    return;
  }
  selectItem(ed, { kind: 'join', nid });
  setPending(ed, { type: 'join', nid });
}

function selectItem(ed, sel) {
  ed.selected = sel;
  if (sel.kind === 'link' && ed.pending) setPending(ed, null);
  buildPanel(ed);
  markSelected(ed);
  drawLines(ed);
}

export function closePanel(ed) {
  const was = ed.selected;
  ed.selected = null;
  ed.panel = null;
  ed.els.panel.hidden = true;
  replace(ed.els.panel);
  markSelected(ed);
  drawLines(ed);
  // Focus goes back to what opened the panel.
  if (was) {
    const el = ed.main.querySelector(was.kind === 'join' ? `[data-join="${was.nid}"]` : `.link-chip[data-link="${was.nid}:${was.lid}"]`);
    if (el) el.focus();
  }
}

function buildPanel(ed) {
  ed.panel = openPanel(ed, ed.selected, {
    close: () => closePanel(ed),
    reload: () => reload(ed),
    monitor: (nid) => showMonitor(ed, nid),
  });
  ed.els.panel.hidden = false;
  replace(ed.els.panel, ed.panel.el);
  ed.panel.focus();
}

/** After a poll: the panel keeps what is typed in it; it is rebuilt when the project changed and nothing is typed. */
function syncPanel(ed, revChanged) {
  if (!ed.selected) return;
  const n = ed.project.netapps.find((x) => x.id === ed.selected.nid);
  const gone = !n || (ed.selected.kind === 'link' && !n.links.some((l) => l.id === ed.selected.lid));
  if (gone) {
    closePanel(ed);
    return;
  }
  if (revChanged && ed.panel && !ed.panel.dirty()) {
    const focused = ed.els.panel.contains(document.activeElement) ? document.activeElement : null;
    const key = focused && (focused.id || focused.name);
    ed.panel = openPanel(ed, ed.selected, {
      close: () => closePanel(ed),
      reload: () => reload(ed),
      monitor: (nid) => showMonitor(ed, nid),
    });
    replace(ed.els.panel, ed.panel.el);
    if (key) {
      const again = ed.els.panel.querySelector(`#${CSS.escape(key)}`) || ed.els.panel.querySelector(`[name="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  } else if (ed.panel) {
    ed.panel.status(ed.status);
  }
}

function showMonitor(ed, nid) {
  const n = ed.project.netapps.find((x) => x.id === nid);
  if (ed.monitor) ed.monitor.close();
  ed.monitor = openMonitor(ed.els.monitor, ed.id, nid, n ? n.name : `#${nid}`, () => { ed.monitor = null; });
}

async function toggle(ed) {
  const on = !ed.project.on;
  await act(() => api('POST', `/api/projects/${ed.id}/${on ? 'on' : 'off'}`), on ? 'Project turned on' : 'Project turned off');
  reload(ed);
}

async function addObject(ed) {
  const model = ed.els.modelPick.value;
  if (!model) {
    toast('Create a model first (Models page)', 'error');
    return;
  }
  await act(() => api('POST', `/api/projects/${ed.id}/objects`, { model }), (o) => `Added ${model} #${o.id}`);
  reload(ed);
}

async function rename(ed) {
  const name = prompt('New name of the project', ed.project.name);
  if (!name || name === ed.project.name) return;
  await act(() => api('PATCH', `/api/projects/${ed.id}`, { name }), 'Renamed');
  reload(ed);
}
