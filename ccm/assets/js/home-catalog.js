// The Home page's catalog editor: the whole home catalog as JSON (the TOML import format of
// docs/home.md written as JSON) in a code editor, saved with PUT /api/home?replace=true. A
// refusal (not JSON, an unknown item, scenes that contain each other) is shown beside the
// editor and the text stays as typed; only "Reload" or a successful save replace it.

import { h, replace } from './dom.js';
import { api, get } from './api.js';
import { toast } from './store.js';
import { codeEditor } from './editor.js';

const EXAMPLE = {
  devices: {
    lamp: { driver: 'tplink', host: '192.168.1.40', port: 9999, kind: 'bulb' },
    porch: { driver: 'http', url: 'http://192.168.1.50/porch/{cmd}' },
    pause: { driver: 'delay', ms: 500 },
  },
  scenes: {
    evening: ['lamp:dim:30', 'porch'],
    'evening:off': ['lamp', 'porch'],
    wakeup: { mode: 'sequence', items: ['lamp:dim:10', 'pause', 'lamp:full'] },
  },
};

const HELP = 'The whole catalog: {"devices": {name: {"driver": …}}, "scenes": {name: [items] or {"mode": "sequence", "items": […]}}}. '
  + 'Drivers: tplink (host, port, kind plug or bulb), http (url with {cmd}), mqtt (topic, payload), da (da, odf), delay (ms). '
  + 'Saving replaces the catalog; a refused catalog changes nothing.';

const pretty = (c) => `${JSON.stringify(c, null, 2)}\n`;

/**
 * Answers {el, show(catalog)}: `show` puts a catalog in the editor; `onSaved(catalog)` is
 * called with the controller's catalog after a save.
 */
export function catalogEditor(onSaved) {
  const ed = codeEditor({ id: 'home-catalog', label: 'The home catalog as JSON', rows: 16 });
  const errorEl = h('div', { class: 'errors', id: 'home-catalog-error', role: 'alert', hidden: true });
  const showError = (text) => {
    errorEl.hidden = !text;
    replace(errorEl, text ? [h('strong', {}, 'Not saved: '), text] : []);
  };
  const save = async () => {
    let doc;
    try {
      doc = JSON.parse(ed.value);
    } catch (e) {
      showError(`this is not JSON (${e.message}).`);
      return;
    }
    if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
      showError('the catalog is an object: {"devices": {…}, "scenes": {…}}.');
      return;
    }
    let saved;
    try {
      saved = await api('PUT', '/api/home?replace=true', doc);
    } catch (e) {
      showError(e.message);
      return;
    }
    showError('');
    ed.value = pretty(saved);
    const n = (o, what) => {
      const k = Object.keys(o || {}).length;
      return `${k} ${what}${k === 1 ? '' : 's'}`;
    };
    toast(`Saved the catalog: ${n(saved.devices, 'device')}, ${n(saved.scenes, 'scene')}`);
    onSaved(saved);
  };
  const reload = async () => {
    try {
      ed.value = pretty(await get('/api/home'));
      showError('');
      toast('Reloaded the catalog from the controller', 'info');
    } catch (e) {
      toast(e.message, 'error');
    }
  };
  const el = h('section', { class: 'home-editor box', 'aria-labelledby': 'home-editor-title' },
    h('h2', { id: 'home-editor-title' }, 'Edit the catalog'),
    h('p', { class: 'muted small' }, HELP),
    errorEl,
    ed.el,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'primary', id: 'home-catalog-save', onclick: save }, 'Save catalog'),
      h('button', {
        type: 'button',
        id: 'home-catalog-reload',
        onclick: () => {
          if (confirm('Replace the text with the catalog the controller has? Your changes are lost.')) reload();
        },
      }, 'Reload'),
      h('button', {
        type: 'button',
        id: 'home-catalog-example',
        onclick: () => {
          if (ed.value.trim() && !confirm('Replace the text with an example catalog?')) return;
          ed.value = pretty(EXAMPLE);
          showError('');
          ed.textarea.focus();
        },
      }, 'Put an example in the editor')));
  return {
    el,
    show(catalog) {
      ed.value = pretty(catalog);
    },
  };
}
