// The Home page: the home catalog's devices and scenes (GET /api/home), each device's last
// state (GET /api/home/states, polled while the page is open), run buttons per device and
// scene (POST /api/home/run/TARGET) with the last result tree, and the catalog editor
// (home-catalog.js). It does not edit devices one by one: the editor holds the whole catalog.

import { h, replace } from './dom.js';
import { api, get, seg } from './api.js';
import { toast } from './store.js';
import { catalogEditor } from './home-catalog.js';

const STATE_POLL_MS = 5000;

const HELP = 'Devices and scenes the controller runs commands on: on, off, dim, med, full or dim:N (0 to 100). '
  + 'A scene runs its items in parallel or in sequence and passes its command down to items without their own.';

export function render(main) {
  const devicesEl = h('div', { id: 'home-devices' }, h('p', { class: 'muted' }, 'Loading…'));
  const scenesEl = h('div', { id: 'home-scenes' });
  const resultEl = h('div', { id: 'home-result', 'aria-live': 'polite' },
    h('p', { class: 'empty' }, 'Run a device or a scene: its result shows here, device by device.'));
  const statesErrEl = h('p', { class: 'error small', hidden: true });
  const page = {
    catalog: null, states: {}, statesError: null, stateCells: new Map(), devicesEl, scenesEl, resultEl, statesErrEl,
  };
  const editor = catalogEditor((catalog) => {
    page.catalog = catalog;
    draw(page);
  });
  replace(main, h('section', { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Home'), h('p', { class: 'muted' }, HELP)),
    h('div', { class: 'home-grid' },
      h('div', { class: 'home-lists' },
        h('h2', {}, 'Devices'), devicesEl, statesErrEl,
        h('h2', {}, 'Scenes'), scenesEl,
        editor.el),
      h('aside', { class: 'home-side box', 'aria-label': 'Last result' },
        h('h2', {}, 'Last result'), resultEl))));
  page.run = (target, cmd) => run(page, target, cmd);
  load(page, editor);
  const timer = setInterval(() => {
    if (!document.hidden) refreshStates(page);
  }, STATE_POLL_MS);
  return () => clearInterval(timer);
}

async function load(page, editor) {
  try {
    page.catalog = await get('/api/home');
  } catch (e) {
    replace(page.devicesEl, h('p', { class: 'error' }, `Cannot read the catalog: ${e.message}`));
    return;
  }
  editor.show(page.catalog);
  draw(page);
  await refreshStates(page);
}

async function refreshStates(page) {
  try {
    page.states = await get('/api/home/states');
    page.statesError = null;
  } catch (e) {
    page.statesError = e.message;
  }
  showStates(page);
}

/** Fills the State cells only: the rest (a command being typed) stays as it is. */
function showStates(page) {
  for (const [name, { td, d }] of page.stateCells) fillState(td, page.states[name], d);
  page.statesErrEl.textContent = page.statesError ? `States: ${page.statesError}` : '';
  page.statesErrEl.hidden = !page.statesError;
}

function draw(page) {
  if (!page.catalog) return;
  const devices = Object.entries(page.catalog.devices || {});
  page.stateCells = new Map();
  const scenes = Object.entries(page.catalog.scenes || {});
  replace(page.devicesEl, devices.length
    ? h('table', { class: 'list home-table' },
      h('thead', {}, h('tr', {}, ['Name', 'Driver', 'Settings', 'State', 'Run'].map((t) => h('th', { class: t === 'Run' ? 'run' : null }, t)))),
      h('tbody', {}, devices.map(([name, d]) => deviceRow(page, name, d))))
    : h('p', { class: 'empty' }, 'No device yet: add some in the catalog below, or with `iotctl home import FILE`.'));
  replace(page.scenesEl, scenes.length
    ? h('table', { class: 'list home-table' },
      h('thead', {}, h('tr', {}, ['Name', 'Mode', 'Items', 'Run'].map((t) => h('th', { class: t === 'Run' ? 'run' : null }, t)))),
      h('tbody', {}, scenes.map(([name, s]) => sceneRow(page, name, s))))
    : h('p', { class: 'empty' }, 'No scene yet.'));
}

/** A device's key settings in a few words. */
function settings(d) {
  switch (d.driver) {
    case 'tplink': return `${d.host}:${d.port ?? 9999} (${d.kind})`;
    case 'http': return `GET ${d.url}`;
    case 'mqtt': return `publish ${d.payload ?? '{cmd}'} on ${d.topic}`;
    case 'da': return `DA ${d.da}, ODF ${d.odf}`;
    case 'delay': return `wait ${d.ms} ms`;
    default: {
      const { driver, ...rest } = d;
      return JSON.stringify(rest);
    }
  }
}

function fillState(td, s, d) {
  if (s && typeof s === 'object') {
    const at = typeof s.ts === 'number' ? new Date(s.ts * 1000) : null;
    td.dataset.state = String(s.cmd);
    td.classList.remove('muted');
    replace(td, h('span', { class: 'badge on' }, String(s.cmd)),
      at ? h('span', { class: 'muted small', title: at.toLocaleString() }, ` at ${at.toLocaleTimeString()}`) : null);
  } else {
    delete td.dataset.state;
    td.classList.add('muted');
    td.textContent = d.driver === 'delay' ? 'none (a pause keeps no state)' : 'no command taken yet';
  }
}

function deviceRow(page, name, d) {
  const state = h('td', { class: 'state small' });
  fillState(state, page.states[name], d);
  page.stateCells.set(name, { td: state, d });
  return h('tr', { dataset: { homeDevice: name } },
    h('th', { scope: 'row', class: 'name' }, name),
    h('td', {}, h('span', { class: 'badge' }, String(d.driver))),
    h('td', { class: 'mono small settings' }, settings(d)),
    state,
    h('td', { class: 'actions' }, runControls(page, name)));
}

function sceneRow(page, name, s) {
  const items = Array.isArray(s) ? s : (s.items || []);
  const mode = Array.isArray(s) ? 'parallel' : (s.mode || 'parallel');
  // "evening:off" is what `evening` runs for `off`: running it means running `evening` with `off`.
  const colon = name.indexOf(':');
  const base = colon > 0 ? name.slice(0, colon) : null;
  const variantCmd = base ? name.slice(colon + 1) : null;
  return h('tr', { dataset: { homeScene: name } },
    h('th', { scope: 'row', class: 'name' }, name,
      base ? h('span', { class: 'muted small variant' }, ` what ${base} runs for ${variantCmd}`) : null),
    h('td', {}, h('span', { class: `badge mode-${mode}` }, mode)),
    h('td', {}, h('ul', { class: 'chips' }, items.map((it) => h('li', { class: 'chip mono' }, it)))),
    h('td', { class: 'actions' }, base
      ? h('button', { type: 'button', class: 'small run-variant', onclick: () => page.run(base, variantCmd) },
        `Run ${base} ${variantCmd}`)
      : runControls(page, name)));
}

/** `on`, `off`, and a command box with its button. */
function runControls(page, target) {
  const cmd = h('input', {
    class: 'run-cmd mono', placeholder: 'dim:40', size: 7, autocomplete: 'off', 'aria-label': `Command for ${target}`,
  });
  return h('form', {
    class: 'run-form',
    onsubmit: (ev) => {
      ev.preventDefault();
      page.run(target, cmd.value.trim());
    },
  },
  h('button', { type: 'button', class: 'small run-on', onclick: () => page.run(target, 'on') }, 'on'),
  h('button', { type: 'button', class: 'small run-off', onclick: () => page.run(target, 'off') }, 'off'),
  cmd,
  h('button', { type: 'submit', class: 'small primary run-go' }, 'Run'));
}

async function run(page, target, cmd) {
  const what = `${target} ${cmd || 'on'}`;
  replace(page.resultEl, h('p', { class: 'muted', dataset: { running: what } }, `Running ${what}…`));
  let r;
  try {
    r = await api('POST', `/api/home/run/${seg(target)}`, { cmd });
  } catch (e) {
    replace(page.resultEl, h('p', { class: 'error' }, `Not run: ${e.message}`));
    toast(e.message, 'error');
    return;
  }
  replace(page.resultEl, summary(r), h('ul', { class: 'result-tree' }, resultNode(r)));
  await refreshStates(page);
}

/** Leaves of a result tree (the devices). */
function leaves(r) {
  return r.children && r.children.length ? r.children.flatMap(leaves) : [r];
}

function summary(r) {
  const all = leaves(r);
  const failed = all.filter((l) => !l.ok).length;
  const text = r.ok
    ? `${r.target} ${r.cmd}: ok, ${all.length} device${all.length === 1 ? '' : 's'} in ${r.ms} ms`
    : `${r.target} ${r.cmd}: FAILED, ${failed} of ${all.length} device${all.length === 1 ? '' : 's'} failed (${r.ms} ms)`;
  return h('p', { class: `result-summary ${r.ok ? 'ok' : 'failed'}` }, text);
}

function resultNode(r) {
  return h('li', { dataset: { result: r.target, ok: r.ok } },
    h('div', { class: 'result-line' },
      h('span', { class: `badge ${r.ok ? 'ok' : 'failed'}` }, r.ok ? 'ok' : 'FAILED'),
      h('span', { class: 'target' }, r.target),
      h('span', { class: 'mono small' }, r.cmd),
      h('span', { class: 'muted small' }, `${r.ms} ms`),
      r.detail ? h('span', { class: 'detail' }, r.detail) : null,
      r.retry_after_ms ? h('span', { class: 'muted small' }, `retry after ${r.retry_after_ms} ms`) : null),
    r.children && r.children.length ? h('ul', {}, r.children.map(resultNode)) : null);
}
