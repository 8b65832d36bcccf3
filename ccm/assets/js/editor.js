// A code editor that needs no library: a monospace textarea with a line-number gutter kept
// in step with it. Tab inserts four spaces (Shift+Tab removes them at the line's start);
// Escape, then Tab, moves the focus on as usual.

import { h } from './dom.js';

const INDENT = '    ';

/** Answers {el, textarea, value (get/set)}; `opts`: {value, id, label, rows, readOnly}. */
export function codeEditor(opts = {}) {
  const gutter = h('pre', { class: 'gutter', 'aria-hidden': 'true' });
  const ta = h('textarea', {
    class: 'code',
    id: opts.id,
    rows: opts.rows || 12,
    spellcheck: 'false',
    autocapitalize: 'off',
    autocomplete: 'off',
    wrap: 'off',
    readOnly: !!opts.readOnly,
    'aria-label': opts.label || 'Code',
    value: opts.value || '',
  });
  const el = h('div', { class: 'code-editor' }, gutter, ta);
  let lines = 0;
  const sync = () => {
    const n = ta.value.split('\n').length;
    if (n !== lines) {
      lines = n;
      gutter.textContent = Array.from({ length: n }, (_, i) => String(i + 1)).join('\n');
    }
    gutter.scrollTop = ta.scrollTop;
  };
  let tabReleased = false;
  ta.addEventListener('input', sync);
  ta.addEventListener('scroll', () => { gutter.scrollTop = ta.scrollTop; });
  ta.addEventListener('blur', () => { tabReleased = false; });
  ta.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      if (!tabReleased) {
        // The first Escape frees Tab; a second one reaches the page (closes a panel).
        tabReleased = true;
        ev.stopPropagation();
      }
      return;
    }
    if (ev.key !== 'Tab' || tabReleased || ta.readOnly || ev.ctrlKey || ev.altKey || ev.metaKey) return;
    ev.preventDefault();
    const { selectionStart: s, selectionEnd: e, value: v } = ta;
    if (ev.shiftKey) {
      const lineStart = v.lastIndexOf('\n', s - 1) + 1;
      const lead = v.slice(lineStart, lineStart + INDENT.length).match(/^ */)[0].length;
      if (lead) {
        ta.setRangeText('', lineStart, lineStart + lead, 'preserve');
        ta.setSelectionRange(Math.max(lineStart, s - lead), Math.max(lineStart, e - lead));
      }
    } else {
      ta.setRangeText(INDENT, s, e, 'end');
    }
    sync();
  });
  sync();
  return {
    el,
    textarea: ta,
    get value() {
      return ta.value;
    },
    set value(v) {
      ta.value = v;
      sync();
    },
  };
}

/** Read-only code with line numbers. */
export function codeView(code) {
  const n = code.split('\n').length;
  return h('div', { class: 'code-view' },
    h('pre', { class: 'gutter', 'aria-hidden': 'true' }, Array.from({ length: n }, (_, i) => String(i + 1)).join('\n')),
    h('pre', { class: 'code' }, h('code', {}, code)));
}
