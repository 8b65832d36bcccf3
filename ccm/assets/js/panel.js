// The project editor's side panel: the settings of one link (its function, input type,
// range and normalization per value) or of one join (its name and join function), with the
// errors the project's status reports for it. Escape or "Close" closes it.

import { h, replace, field, select, numberOrNull } from './dom.js';
import { api, get } from './api.js';
import { toast, act, STATE_TEXT } from './store.js';
import { quickFunction } from './functions.js';

/** Options of a function select: (none), then every version, newest first. */
function funcOptions(functions) {
  const opts = [{ value: '', label: '(none: values pass unchanged)' }];
  for (const f of functions) {
    const vs = [...f.versions].reverse();
    vs.forEach((v, i) => opts.push({ value: `${f.name}@${v.version}`, label: `${f.name} v${v.version}${i === 0 ? ' (latest)' : ''} — ${f.lang}` }));
  }
  return opts;
}

function funcValue(ref) {
  return ref ? `${ref.name}@${ref.version}` : '';
}

function parseFunc(v) {
  if (!v) return null;
  const i = v.lastIndexOf('@');
  return { name: v.slice(0, i), version: Number(v.slice(i + 1)) };
}

/**
 * A function picker with a "New function" editor under it. Answers {el, value()}. A saved
 * new function is added to the picker and chosen.
 */
function funcPicker(ed, current, id, kind, markDirty) {
  const pick = select(funcOptions(ed.functions), funcValue(current), { id, class: 'func-select' });
  if (current && pick.value !== funcValue(current)) {
    pick.append(h('option', { value: funcValue(current) }, `${current.name} v${current.version} (not in the library)`));
    pick.value = funcValue(current);
  }
  pick.addEventListener('change', markDirty);
  const details = h('details', { class: 'new-fn' }, h('summary', {}, 'New function…'));
  details.append(quickFunction(async (ref) => {
    try {
      ed.functions = await get('/api/functions');
    } catch (e) {
      toast(e.message, 'error');
    }
    replace(pick, funcOptions(ed.functions).map((o) => h('option', { value: o.value }, o.label)));
    pick.value = funcValue(ref);
    details.open = false;
    markDirty();
    toast(`Saved ${ref.name} v${ref.version}: press Save to use it`, 'ok');
    pick.focus();
  }, '', kind));
  return {
    el: h('div', { class: 'func-picker' }, pick, details),
    select: pick,
    value: () => parseFunc(pick.value),
  };
}

function errorBox(cls) {
  return h('div', { class: `errors ${cls}`, role: 'status', 'aria-live': 'polite' });
}

function showErrors(box, items) {
  const list = items.filter(Boolean);
  box.hidden = !list.length;
  replace(box, list.map((t) => h('p', { class: 'error' }, t)));
}

export function openPanel(ed, sel, hooks) {
  return sel.kind === 'link' ? linkPanel(ed, sel, hooks) : joinPanel(ed, sel, hooks);
}

function head(title, hooks, sub) {
  return h('div', { class: 'panel-head' },
    h('h2', { id: 'panel-title' }, title),
    h('button', { type: 'button', class: 'close', id: 'panel-close', 'aria-label': 'Close the panel', onclick: hooks.close }, '×'),
    sub ? h('p', { class: 'muted small' }, sub) : null);
}

function linkPanel(ed, sel, hooks) {
  const n = ed.project.netapps.find((x) => x.id === sel.nid);
  const l = n.links.find((x) => x.id === sel.lid);
  const feature = ed.features.get(l.feature);
  const input = !feature || feature.direction === 'input';
  const width = feature ? Math.max(1, feature.params.length) : Math.max(1, l.params.length, l.input_type.length);
  const obj = ed.project.objects.find((o) => o.id === l.object);
  let dirty = false;
  const markDirty = () => { dirty = true; };

  const fp = funcPicker(ed, l.func, 'link-func', 'link', markDirty);
  const rows = [];
  for (let i = 0; i < width; i += 1) {
    const fparam = feature ? feature.params[i] || {} : {};
    const lp = l.params[i] || {};
    const it = select(['sample', 'variant'], l.input_type[i] || 'sample', { 'aria-label': `Input type of value ${i + 1}`, name: `input-type-${i}` });
    const min = h('input', { type: 'number', step: 'any', value: lp.min ?? '', placeholder: fparam.min ?? '', name: `min-${i}`, 'aria-label': `Min of value ${i + 1}` });
    const max = h('input', { type: 'number', step: 'any', value: lp.max ?? '', placeholder: fparam.max ?? '', name: `max-${i}`, 'aria-label': `Max of value ${i + 1}` });
    const norm = h('input', { type: 'checkbox', checked: !!lp.normalize, name: `normalize-${i}`, 'aria-label': `Normalize value ${i + 1}` });
    for (const x of [it, min, max, norm]) x.addEventListener('input', markDirty);
    rows.push({ it, min, max, norm, unit: fparam.unit || '', type: fparam.type || '' });
  }
  const errors = errorBox('link-errors');
  const el = h('form', {
    class: 'panel-body',
    dataset: { panel: 'link', link: `${n.id}:${l.id}` },
    onsubmit: async (ev) => {
      ev.preventDefault();
      let params;
      try {
        params = rows.map((r, i) => {
          const lo = numberOrNull(r.min);
          const hi = numberOrNull(r.max);
          if (Number.isNaN(lo) || Number.isNaN(hi)) throw new Error(`Value ${i + 1}: min and max must be numbers`);
          return { min: lo, max: hi, normalize: r.norm.checked };
        });
      } catch (e) {
        toast(e.message, 'error');
        return;
      }
      const body = {
        func: fp.value(),
        input_type: input ? rows.map((r) => r.it.value) : [],
        params: params.some((p) => p.min !== null || p.max !== null || p.normalize) ? params : [],
      };
      if (await act(() => api('PUT', `/api/projects/${ed.id}/netapps/${n.id}/links/${l.id}`, body), 'Saved the link')) {
        dirty = false;
        hooks.reload();
      }
    },
  },
  head(`Link: ${l.feature}`, hooks, `${obj ? obj.model : '?'} #${l.object} ${input ? '→' : '←'} ${n.name}`),
  errors,
  field(input ? 'Input function (IDF function)' : 'Output function (ODF function)', fp.el,
    'Runs on each message of this link; none passes values unchanged.'),
  h('fieldset', { class: 'values' },
    h('legend', {}, 'Per value'),
    rows.map((r, i) => h('div', { class: 'value-row', dataset: { value: i } },
      h('div', { class: 'value-name' }, `Value #${i + 1}`,
        r.type || r.unit ? h('span', { class: 'muted small' }, ` (${[r.type, r.unit].filter(Boolean).join(', ')})`) : null),
      h('div', { class: 'value-grid' },
        input ? field('Input type', r.it) : null,
        field('Min', r.min),
        field('Max', r.max),
        h('label', { class: 'check' }, r.norm, ' Normalize')))),
    h('p', { class: 'muted small' }, 'Values are clamped into [min, max] after the function; normalize maps them onto [0, 1]. Input type: sample is the value as sent; variant is its difference from the previous value.')),
  h('div', { class: 'actions' },
    h('button', { type: 'submit', class: 'primary', id: 'link-save' }, 'Save'),
    h('button', {
      type: 'button',
      class: 'danger',
      id: 'link-delete',
      onclick: async () => {
        if (!confirm(`Delete the link of ${l.feature}?`)) return;
        if (await act(() => api('DELETE', `/api/projects/${ed.id}/netapps/${n.id}/links/${l.id}`), 'Link deleted')) {
          hooks.close();
          hooks.reload();
        }
      },
    }, 'Delete link'),
    h('button', { type: 'button', onclick: () => { hooks.close(); } }, 'Close')));

  const status = (s) => {
    const ns = (s.netapps || {})[n.id] || {};
    showErrors(errors, [(ns.link_errors || {})[l.id]]);
  };
  status(ed.status);
  return { el, dirty: () => dirty, status, focus: () => fp.select.focus() };
}

function joinPanel(ed, sel, hooks) {
  const n = ed.project.netapps.find((x) => x.id === sel.nid);
  let dirty = false;
  const markDirty = () => { dirty = true; };
  const name = h('input', { id: 'join-name', value: n.name, autocomplete: 'off', required: true });
  name.addEventListener('input', markDirty);
  const fp = funcPicker(ed, n.join, 'join-func', 'join', markDirty);
  const stateEl = h('p', { class: 'join-status', id: 'join-status' });
  const errors = errorBox('join-errors');
  const linkList = h('ul', { class: 'panel-links' }, n.links.map((l) => {
    const f = ed.features.get(l.feature);
    const out = f && f.direction === 'output';
    return h('li', {}, h('button', {
      type: 'button',
      class: 'link',
      dataset: { panelLink: `${n.id}:${l.id}` },
      onclick: () => document.querySelector(`.link-chip[data-link="${n.id}:${l.id}"]`)?.click(),
    }, `${out ? 'to' : 'from'} #${l.object} ${l.feature}`), h('span', { class: 'error small', dataset: { linkError: l.id } }));
  }));
  const el = h('form', {
    class: 'panel-body',
    dataset: { panel: 'join', join: n.id },
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { name: name.value.trim(), join: fp.value() };
      if (await act(() => api('PATCH', `/api/projects/${ed.id}/netapps/${n.id}`, body), 'Saved the join')) {
        dirty = false;
        hooks.reload();
      }
    },
  },
  head(`Join: ${n.name}`, hooks, 'Click a feature to link it to this join.'),
  stateEl,
  errors,
  field('Name', name),
  field('Join function', fp.el, 'Gets one argument per input link; its result goes to every output link. None: one input passes through, several make a list.'),
  h('div', { class: 'actions' },
    h('button', { type: 'submit', class: 'primary', id: 'join-save' }, 'Save'),
    h('button', { type: 'button', id: 'join-monitor', onclick: () => hooks.monitor(n.id) }, 'Monitor'),
    h('button', {
      type: 'button',
      class: 'danger',
      id: 'join-delete',
      onclick: async () => {
        if (!confirm(`Delete ${n.name} and its links?`)) return;
        if (await act(() => api('DELETE', `/api/projects/${ed.id}/netapps/${n.id}`), `Deleted ${n.name}`)) {
          hooks.close();
          hooks.reload();
        }
      },
    }, 'Delete join')),
  h('h3', {}, 'Links'),
  linkList);

  const status = (s) => {
    const ns = (s.netapps || {})[n.id] || {};
    const state = ns.state || (ed.project.on ? 'applying' : 'off');
    replace(stateEl, h('span', { class: `badge ${state}`, dataset: { state } }, STATE_TEXT[state] || state),
      ns.graph ? h('span', { class: 'muted small' }, ` graph ${ns.graph}`) : null,
      ns.detail ? h('span', { class: 'detail' }, ` ${ns.detail}`) : null);
    showErrors(errors, [ns.join_error ? `Join function: ${ns.join_error}` : null, state === 'error' && ns.detail ? ns.detail : null]);
    for (const sp of linkList.querySelectorAll('[data-link-error]')) {
      const t = (ns.link_errors || {})[sp.dataset.linkError];
      sp.textContent = t ? ` ${t}` : '';
    }
  };
  status(ed.status);
  return { el, dirty: () => dirty, status, focus: () => name.focus() };
}
