// The Models page: device models and their features. A feature (name, direction, one param
// per value: type, unit, min, max; comment) is shared by every model that lists it; saving
// the form writes each feature (PUT /api/features/NAME), then the model (PUT /api/models/NAME).

import { h, replace, field, select, numberOrNull } from './dom.js';
import { api, get, seg } from './api.js';
import { store, toast, act } from './store.js';

const TYPES = [
  { value: '', label: 'any' }, 'int', 'float', 'bool', 'string', 'json',
];

export function render(main, args) {
  const page = h('section', { class: 'page' });
  replace(main, page);
  if (args[0] === 'new') {
    const draft = store.modelDraft;
    store.modelDraft = null;
    form(page, draft);
  } else if (args[0] === 'edit' && args[1]) {
    form(page, { name: args[1], edit: true });
  } else {
    list(page);
  }
}

async function list(page) {
  replace(page,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Models'),
      h('p', { class: 'muted' }, 'A device model is a kind of device and the features it has.'),
      h('a', { class: 'button primary', href: '#/models/new', id: 'model-new' }, 'New model')),
    h('p', { class: 'muted' }, 'Loading…'));
  let models;
  let features;
  try {
    [models, features] = await Promise.all([get('/api/models'), get('/api/features')]);
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  const byName = new Map(features.map((f) => [f.name, f]));
  const body = models.length
    ? h('table', { class: 'list', id: 'model-list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Model'), h('th', {}, 'Features'), h('th', {}, 'Comment'), h('th', {}, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', {}, models.map((m) => h('tr', { dataset: { model: m.name } },
        h('th', { scope: 'row' }, m.name),
        h('td', {}, h('ul', { class: 'chips' }, m.features.map((n) => {
          const f = byName.get(n);
          const dir = f ? f.direction : 'missing';
          return h('li', { class: `chip ${dir}`, title: f ? `${dir}, ${f.params.length} value(s)` : 'not in the library' },
            n, f ? h('span', { class: 'sr-only' }, ` (${dir})`) : null);
        }))),
        h('td', { class: 'muted' }, m.comment),
        h('td', { class: 'actions' },
          h('a', { class: 'button', href: `#/models/edit/${seg(m.name)}` }, 'Edit'),
          h('button', {
            type: 'button',
            class: 'danger',
            onclick: async () => {
              if (!confirm(`Delete model ${m.name}? Its features stay in the library.`)) return;
              if (await act(() => api('DELETE', `/api/models/${seg(m.name)}`), `Deleted model ${m.name}`)) list(page);
            },
          }, 'Delete'))))))
    : h('p', { class: 'empty' }, 'No model yet. Create one, or open Devices and use "Create model from this device".');
  page.lastChild.replaceWith(body);
}

function emptyParam() {
  return { type: '', unit: '', min: null, max: null };
}

/** The model form. `init`: {name, comment, features: [feature], keep: [names], edit}. */
async function form(page, init) {
  init = init || {};
  let library = [];
  try {
    library = await get('/api/features');
  } catch (e) {
    toast(e.message, 'error');
  }
  const byName = new Map(library.map((f) => [f.name, f]));
  let model = { name: init.name || '', comment: init.comment || '', features: [] };
  const initial = [];
  if (init.edit) {
    try {
      model = await get(`/api/models/${seg(init.name)}`);
    } catch (e) {
      toast(e.message, 'error');
      return;
    }
    for (const n of model.features) initial.push(byName.get(n) || { name: n, direction: 'input', params: [emptyParam()], comment: '' });
  } else {
    for (const n of init.keep || []) if (byName.has(n)) initial.push(byName.get(n));
    for (const f of init.features || []) {
      if (initial.some((x) => x.name === f.name)) continue;
      // A feature already in the library keeps its definition.
      initial.push(byName.get(f.name) || f);
    }
  }

  const name = h('input', { id: 'model-name', name: 'model-name', value: model.name, required: true, readOnly: !!init.edit, autocomplete: 'off' });
  const comment = h('input', { id: 'model-comment', value: model.comment || '' });
  const rows = h('div', { class: 'feature-editors', id: 'feature-editors' });
  const editors = [];

  const addEditor = (f) => {
    const ed = featureEditor(structuredClone(f), () => {
      editors.splice(editors.indexOf(ed), 1);
      ed.el.remove();
    });
    editors.push(ed);
    rows.append(ed.el);
    return ed;
  };
  for (const f of initial) addEditor(f);

  const pick = select([{ value: '', label: 'Add a feature of the library…' },
    ...library.map((f) => ({ value: f.name, label: `${f.name} (${f.direction})` }))], '', { id: 'feature-pick', 'aria-label': 'Feature of the library' });
  pick.addEventListener('change', () => {
    const f = byName.get(pick.value);
    pick.value = '';
    if (!f) return;
    if (editors.some((e) => e.name() === f.name)) {
      toast(`${f.name} is in the model already`, 'error');
      return;
    }
    addEditor(f).focus();
  });

  const save = async (ev) => {
    ev.preventDefault();
    const n = name.value.trim();
    if (!n) {
      toast('Give the model a name', 'error');
      name.focus();
      return;
    }
    let feats;
    try {
      feats = editors.map((e) => e.value());
    } catch (e) {
      toast(e.message, 'error');
      return;
    }
    if (!feats.length) {
      toast('A model needs at least one feature', 'error');
      return;
    }
    const ok = await act(async () => {
      for (const f of feats) await api('PUT', `/api/features/${seg(f.name)}`, f);
      return api('PUT', `/api/models/${seg(n)}`, { name: n, features: feats.map((f) => f.name), comment: comment.value });
    }, `Saved model ${n}`);
    if (ok) location.hash = '#/models';
  };

  replace(page,
    h('div', { class: 'page-head' },
      h('h1', {}, init.edit ? `Edit model ${model.name}` : 'New model'),
      init.exists ? h('p', { class: 'note' }, `Model ${init.name} exists: its features are kept and the device's added.`) : null),
    h('form', { class: 'model-form', id: 'model-form', onsubmit: save },
      h('div', { class: 'row' },
        field('Model name', name, init.edit ? 'The name cannot change; create another model instead.' : 'DAs register with this name as their model.'),
        field('Comment', comment)),
      h('h2', {}, 'Features'),
      h('p', { class: 'muted' }, 'Each value of a feature\'s message is a param. A feature is shared by every model that lists it: changing it here changes it for all of them.'),
      rows,
      h('div', { class: 'actions' },
        h('button', { type: 'button', id: 'feature-add', onclick: () => addEditor({ name: '', direction: 'input', comment: '', params: [emptyParam()] }).focus() }, 'Add a new feature'),
        pick),
      h('div', { class: 'actions sticky' },
        h('button', { type: 'submit', class: 'primary', id: 'model-save' }, 'Save model'),
        h('a', { class: 'button', href: '#/models' }, 'Cancel'))));
  (init.edit ? comment : name).focus();
}

/** The editor of one feature: answers {el, value(), name(), focus()}. */
function featureEditor(f, remove) {
  const name = h('input', { class: 'feature-name', name: 'feature-name', value: f.name, required: true, autocomplete: 'off', 'aria-label': 'Feature name' });
  const direction = select([{ value: 'input', label: 'input (IDF)' }, { value: 'output', label: 'output (ODF)' }], f.direction, { class: 'feature-direction', name: 'direction', 'aria-label': 'Direction' });
  const comment = h('input', { class: 'feature-comment', value: f.comment || '', 'aria-label': 'Feature comment', placeholder: 'comment' });
  const params = h('tbody');
  const paramRows = [];
  const addParam = (p) => {
    const type = select(TYPES, p.type || '', { 'aria-label': 'Type' });
    const unit = h('input', { value: p.unit || '', size: 6, 'aria-label': 'Unit' });
    const min = h('input', { type: 'number', step: 'any', value: p.min ?? '', 'aria-label': 'Min' });
    const max = h('input', { type: 'number', step: 'any', value: p.max ?? '', 'aria-label': 'Max' });
    const row = { type, unit, min, max };
    const idx = h('td', { class: 'muted' });
    const tr = h('tr', {}, idx, h('td', {}, type), h('td', {}, unit), h('td', {}, min), h('td', {}, max),
      h('td', {}, h('button', {
        type: 'button',
        class: 'small',
        onclick: () => {
          if (paramRows.length === 1) {
            toast('A feature has at least one value', 'error');
            return;
          }
          paramRows.splice(paramRows.indexOf(row), 1);
          tr.remove();
          renumber();
        },
      }, 'Remove value')));
    row.tr = tr;
    row.idx = idx;
    paramRows.push(row);
    params.append(tr);
    renumber();
  };
  const renumber = () => paramRows.forEach((r, i) => { r.idx.textContent = `#${i + 1}`; });
  for (const p of f.params.length ? f.params : [emptyParam()]) addParam(p);

  const el = h('fieldset', { class: 'feature-editor', dataset: { featureEditor: f.name || 'new' } },
    h('legend', {}, f.name ? `Feature ${f.name}` : 'New feature'),
    h('div', { class: 'row' }, field('Name', name), field('Direction', direction), field('Comment', comment),
      h('button', { type: 'button', class: 'danger small', onclick: remove }, 'Remove from model')),
    h('table', { class: 'params' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Value'), h('th', {}, 'Type'), h('th', {}, 'Unit'), h('th', {}, 'Min'), h('th', {}, 'Max'), h('th', {}))),
      params),
    h('button', { type: 'button', class: 'small', onclick: () => addParam(emptyParam()) }, 'Add value'));

  return {
    el,
    name: () => name.value.trim(),
    focus: () => name.focus(),
    value() {
      const n = name.value.trim();
      if (!n) {
        name.focus();
        throw new Error('Every feature needs a name');
      }
      return {
        name: n,
        direction: direction.value,
        comment: comment.value,
        params: paramRows.map((r, i) => {
          const lo = numberOrNull(r.min);
          const hi = numberOrNull(r.max);
          if (Number.isNaN(lo) || Number.isNaN(hi)) throw new Error(`Feature ${n}, value #${i + 1}: min and max must be numbers`);
          return { type: r.type.value, unit: r.unit.value, min: lo, max: hi };
        }),
      };
    },
  };
}
