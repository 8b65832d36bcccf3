// The Projects page: the list, create, delete, import (an export document from a file) and
// export (download). A project opens in the project editor (project.js).

import { h, replace, field } from './dom.js';
import { api, get, request } from './api.js';
import { toast, act } from './store.js';

/** Downloads a project's export document as NAME.json. */
export async function exportProject(id, name) {
  const doc = await act(() => get(`/api/projects/${id}/export`), `Exported ${name}`);
  if (!doc) return;
  const blob = new Blob([JSON.stringify(doc, null, 2)], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: `${name.replace(/[^\w.-]+/g, '_')}.json` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function render(main) {
  const listEl = h('div', { id: 'project-list' }, h('p', { class: 'muted' }, 'Loading…'));
  const name = h('input', { id: 'project-name', autocomplete: 'off', required: true });
  const autoBind = h('input', { type: 'checkbox', id: 'project-auto-bind', checked: true });
  const file = h('input', { type: 'file', id: 'project-import-file', accept: 'application/json,.json' });
  const importName = h('input', { id: 'project-import-name', autocomplete: 'off', placeholder: 'keep the exported name' });

  const reload = () => list(listEl, reload);
  replace(main, h('section', { class: 'page' },
    h('div', { class: 'page-head' },
      h('h1', {}, 'Projects'),
      h('p', { class: 'muted' }, 'A project joins features of device objects through network applications, and runs them on the CSM while it is on.')),
    listEl,
    h('div', { class: 'two-forms' },
      h('form', {
        class: 'box',
        id: 'project-create',
        onsubmit: async (ev) => {
          ev.preventDefault();
          const p = await act(() => api('POST', '/api/projects', { name: name.value.trim(), auto_bind: autoBind.checked }),
            (r) => `Created project ${r.name}`);
          if (p) location.hash = `#/projects/${p.id}`;
        },
      },
      h('h2', {}, 'New project'),
      field('Name', name),
      h('label', { class: 'check' }, autoBind, ' Bind device objects automatically (when exactly one online DA of the model is free)'),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'project-create-button' }, 'Create project'))),
      h('form', {
        class: 'box',
        id: 'project-import',
        onsubmit: async (ev) => {
          ev.preventDefault();
          const f = file.files[0];
          if (!f) {
            toast('Choose an export file first', 'error');
            return;
          }
          const text = await f.text();
          const q = importName.value.trim() ? `?name=${encodeURIComponent(importName.value.trim())}` : '';
          const r = await act(() => request('POST', `/api/projects/import${q}`, text), (x) => `Imported project ${x.data.name}`);
          if (r) {
            file.value = '';
            importName.value = '';
            reload();
          }
        },
      },
      h('h2', {}, 'Import a project'),
      field('Export file', file),
      field('Name', importName, 'optional: import under another name'),
      h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'project-import-button' }, 'Import'))))));
  reload();
}

async function list(el, reload) {
  let projects;
  try {
    projects = await get('/api/projects');
  } catch (e) {
    toast(e.message, 'error');
    replace(el, h('p', { class: 'empty' }, `Cannot load the projects: ${e.message}`));
    return;
  }
  if (!projects.length) {
    replace(el, h('p', { class: 'empty' }, 'No project yet: create one below.'));
    return;
  }
  replace(el, h('table', { class: 'list' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Project'), h('th', {}, 'State'), h('th', {}, 'Device objects'), h('th', {}, 'Network applications'), h('th', {}, h('span', { class: 'sr-only' }, 'Actions')))),
    h('tbody', {}, projects.map((p) => h('tr', { dataset: { project: p.id } },
      h('th', { scope: 'row' }, h('a', { href: `#/projects/${p.id}`, class: 'project-open' }, p.name)),
      h('td', {}, h('span', { class: `badge ${p.on ? 'applied' : 'off'}` }, p.on ? 'on' : 'off')),
      h('td', {}, count(p.objects)),
      h('td', {}, count(p.netapps)),
      h('td', { class: 'actions' },
        h('a', { class: 'button', href: `#/projects/${p.id}` }, 'Open'),
        h('button', { type: 'button', onclick: () => exportProject(p.id, p.name) }, 'Export'),
        h('button', {
          type: 'button',
          class: 'danger',
          onclick: async () => {
            if (!confirm(`Delete project ${p.name}? Its network applications stop.`)) return;
            if (await act(() => api('DELETE', `/api/projects/${p.id}`), `Deleted project ${p.name}`)) reload();
          },
        }, 'Delete')))))));
}

function count(v) {
  return Array.isArray(v) ? v.length : v;
}
