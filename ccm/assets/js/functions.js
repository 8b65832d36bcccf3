// The Functions page: the function library. A function has versions (1, 2, ...); saving code
// adds a version (POST /api/functions/NAME), and links and joins use one version each.
// Also exports quickFunction(), the small "new function" editor of the project editor's panel.

import { h, replace, field, datetime } from './dom.js';
import { request, api, get, seg } from './api.js';
import { toast, act } from './store.js';
import { codeEditor, codeView } from './editor.js';

export const TEMPLATE = {
  rhai: 'fn run(x) {\n    x\n}\n',
  python: 'def run(x):\n    return x\n',
};

const HELP = 'Define run(...): Rhai `fn run(x) { ... }` or Python `def run(x): ...`. '
  + 'A link function gets the values of one message; a join function gets one argument per input.';

/** The language the CCM will tell from the code (the same rule as the server's). */
export function langOf(code) {
  for (const line of code.split('\n')) {
    const t = line.trimStart();
    if (/^fn\s+run\s*\(/.test(t)) return 'rhai';
    if (/^def\s+run\s*\(/.test(t)) return 'python';
  }
  return null;
}

/** Saves `code` as a version of function `name`; answers {name, version} or undefined. */
export async function saveVersion(name, code, author) {
  if (!name.trim()) {
    toast('Give the function a name', 'error');
    return undefined;
  }
  if (!langOf(code)) {
    toast('The code must define run: `fn run(x) { ... }` (Rhai) or `def run(x):` (Python).', 'error');
    return undefined;
  }
  const r = await act(() => request('POST', `/api/functions/${seg(name.trim())}`, { code, author: author || '' }),
    (r) => (r.status === 201 ? `Saved ${name.trim()} version ${r.data.version}` : `Unchanged: ${name.trim()} stays at version ${r.data.version}`));
  return r ? { name: name.trim(), version: r.data.version } : undefined;
}

export function render(main, args) {
  const listEl = h('nav', { class: 'fn-list', 'aria-label': 'Functions', id: 'function-list' });
  const detail = h('div', { class: 'fn-detail', id: 'function-detail' });
  replace(main, h('section', { class: 'page' },
    h('div', { class: 'page-head' },
      h('h1', {}, 'Functions'),
      h('p', { class: 'muted' }, HELP),
      h('a', { class: 'button primary', href: '#/functions', id: 'function-new' }, 'New function')),
    h('div', { class: 'split' }, listEl, detail)));
  load(listEl, detail, args[0]);
}

async function load(listEl, detail, selected) {
  let fns;
  try {
    fns = await get('/api/functions');
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  replace(listEl, fns.length
    ? h('ul', {}, fns.map((f) => h('li', {},
      h('a', {
        href: `#/functions/${seg(f.name)}`,
        dataset: { function: f.name },
        'aria-current': f.name === selected ? 'page' : null,
      }, h('span', { class: 'name' }, f.name), h('span', { class: 'muted small' }, ` ${f.lang}, v${f.versions.length ? f.versions[f.versions.length - 1].version : '-'}`)))))
    : h('p', { class: 'empty' }, 'No function yet.'));
  const f = selected && fns.find((x) => x.name === selected);
  if (selected && !f) toast(`No function ${selected}`, 'error');
  if (f) showFunction(detail, f, () => load(listEl, detail, selected));
  else newFunction(detail, () => {});
}

function newFunction(detail) {
  const name = h('input', { id: 'function-name', autocomplete: 'off', required: true });
  const author = h('input', { id: 'function-author', autocomplete: 'name' });
  const ed = codeEditor({ id: 'function-code', value: TEMPLATE.rhai, label: 'Code of the new function', rows: 10 });
  replace(detail,
    h('h2', {}, 'New function'),
    h('form', {
      class: 'fn-form',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const r = await saveVersion(name.value, ed.value, author.value);
        if (r) location.hash = `#/functions/${seg(r.name)}`;
      },
    },
    h('div', { class: 'row' }, field('Name', name), field('Author', author, 'optional')),
    templateButtons(ed),
    ed.el,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'function-save' }, 'Save version 1'))));
}

function templateButtons(ed) {
  return h('div', { class: 'actions small' },
    h('span', { class: 'muted' }, 'Start from: '),
    h('button', { type: 'button', class: 'small', onclick: () => { ed.value = TEMPLATE.rhai; ed.textarea.focus(); } }, 'Rhai template'),
    h('button', { type: 'button', class: 'small', onclick: () => { ed.value = TEMPLATE.python; ed.textarea.focus(); } }, 'Python template'),
    h('span', { class: 'muted' }, ' Tab indents; Escape then Tab leaves the editor.'));
}

function showFunction(detail, f, reload) {
  const latest = f.versions[f.versions.length - 1];
  const author = h('input', { id: 'function-author', autocomplete: 'name' });
  const ed = codeEditor({ id: 'function-code', value: latest ? latest.code : TEMPLATE.rhai, label: `Code of ${f.name}`, rows: 10 });
  replace(detail,
    h('div', { class: 'fn-title' },
      h('h2', {}, f.name),
      h('span', { class: 'badge' }, f.lang),
      h('button', {
        type: 'button',
        class: 'danger',
        id: 'function-delete',
        onclick: async () => {
          if (!confirm(`Delete function ${f.name} and all its versions?`)) return;
          if (await act(() => api('DELETE', `/api/functions/${seg(f.name)}`), `Deleted ${f.name}`)) location.hash = '#/functions';
        },
      }, 'Delete function')),
    h('form', {
      class: 'fn-form',
      onsubmit: async (ev) => {
        ev.preventDefault();
        if (await saveVersion(f.name, ed.value, author.value)) reload();
      },
    },
    h('h3', {}, 'New version'),
    h('p', { class: 'muted' }, 'Saving changed code adds a version; links and joins keep the version they use until you pick another.'),
    ed.el,
    h('div', { class: 'row' }, field('Author', author, 'optional'),
      h('button', { type: 'submit', class: 'primary', id: 'function-save' }, `Save as version ${latest ? latest.version + 1 : 1}`))),
    h('h3', {}, 'Versions'),
    h('ol', { class: 'versions', reversed: true },
      [...f.versions].reverse().map((v, i) => h('li', { dataset: { version: v.version } },
        h('details', { open: i === 0 },
          h('summary', {}, `Version ${v.version}`, h('span', { class: 'muted small' },
            ` — ${datetime(v.created)}${v.author ? `, by ${v.author}` : ''}, sha256 ${v.digest.slice(0, 12)}…`)),
          codeView(v.code),
          h('button', { type: 'button', class: 'small', onclick: () => { ed.value = v.code; ed.textarea.focus(); toast(`Version ${v.version} copied into the editor`, 'info'); } }, 'Edit a copy'))))));
}

/**
 * The quick editor of the project editor's panel: a name, code and a save button. Calls
 * `onSaved({name, version})` after a save.
 */
export function quickFunction(onSaved, suggested = '', kind = 'link') {
  const name = h('input', { class: 'quick-fn-name', value: suggested, autocomplete: 'off' });
  const code = kind === 'join' ? 'fn run(x) {\n    x\n}\n' : TEMPLATE.rhai;
  const ed = codeEditor({ value: code, label: 'Code of the new function', rows: 6 });
  ed.textarea.classList.add('quick-fn-code');
  return h('div', { class: 'quick-fn' },
    field('Function name', name),
    ed.el,
    h('div', { class: 'actions' },
      h('button', {
        type: 'button',
        class: 'primary quick-fn-save',
        onclick: async () => {
          const r = await saveVersion(name.value, ed.value, '');
          if (r) onSaved(r);
        },
      }, 'Save function and use it')));
}
