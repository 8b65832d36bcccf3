// The Devices page: the DAs registered at the CSM, online or offline (live, through the
// device event stream kept by store.js), their features, and "Create model from this device".

import { h, replace } from './dom.js';
import { get } from './api.js';
import { store, onDevices, toast } from './store.js';

export function render(main) {
  const list = h('div', { class: 'cards', id: 'device-list' });
  const count = h('p', { class: 'muted', id: 'device-count' });
  replace(main, h('section', { class: 'page' },
    h('div', { class: 'page-head' },
      h('h1', {}, 'Devices'),
      h('p', { class: 'muted' },
        'Device applications (DAs) registered at the CSM. A DA is of model M when it registers with that model in its profile.')),
    count, list));

  const draw = () => {
    const online = store.devices.filter((d) => d.online).length;
    count.textContent = `${store.devices.length} registered, ${online} online`;
    if (!store.devices.length) {
      replace(list, h('p', { class: 'empty' }, 'No DA is registered. Start a device application: it appears here when it registers.'));
      return;
    }
    replace(list, store.devices.map(card));
  };
  draw();
  return onDevices(draw);
}

function features(title, names, dir) {
  return h('div', { class: 'feature-list' },
    h('span', { class: 'label' }, title),
    names.length
      ? h('ul', {}, names.map((n) => h('li', { class: `chip ${dir}` }, n)))
      : h('span', { class: 'muted' }, 'none'));
}

function card(d) {
  return h('article', { class: 'card device', dataset: { device: d.id } },
    h('div', { class: 'card-head' },
      h('h2', {}, d.name || '(no name)'),
      h('span', { class: `badge ${d.online ? 'online' : 'offline'}`, dataset: { online: d.online } },
        d.online ? 'online' : 'offline')),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Model'), h('dd', {}, d.model || '(none)'),
      h('dt', {}, 'ID'), h('dd', { class: 'mono small' }, d.id)),
    features('Input features (IDF)', d.idf || [], 'input'),
    features('Output features (ODF)', d.odf || [], 'output'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'model-from-device', onclick: () => modelFrom(d) },
        'Create model from this device')));
}

/**
 * Opens the model form filled from a device: its model name and one feature per IDF/ODF
 * (one value each). When the model exists, its features are kept and the device's added.
 */
async function modelFrom(d) {
  let existing = null;
  try {
    const models = await get('/api/models');
    existing = models.find((m) => m.name === d.model) || null;
  } catch (e) {
    toast(e.message, 'error');
  }
  const feature = (name, direction) => ({
    name, direction, comment: '', params: [{ type: '', unit: '', min: null, max: null }], isNew: true,
  });
  const features = [
    ...(d.idf || []).map((n) => feature(n, 'input')),
    ...(d.odf || []).map((n) => feature(n, 'output')),
  ];
  store.modelDraft = {
    name: d.model || d.name,
    comment: existing ? existing.comment : `Made from device ${d.name}`,
    keep: existing ? existing.features : [],
    features,
    exists: !!existing,
  };
  location.hash = '#/models/new';
}
