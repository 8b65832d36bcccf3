// What several pages share: the registered DAs (kept live through the device event stream),
// the CSM connection state, the status line (toast), and a model draft handed from the
// Devices page to the Models page.

import { get } from './api.js';

/** Text of a network application's state, for people (the colour says it too). */
export const STATE_TEXT = {
  off: 'off',
  waiting: 'waiting',
  applying: 'applying',
  applied: 'running',
  error: 'error',
};

export const store = {
  /** [device]: {id, name, model, idf, odf, online}, online first. */
  devices: [],
  /** true / false when the API tells, null when unknown. */
  csm: null,
  /** Whether the device event stream is open. */
  live: false,
  /** A model for the Models page to open in its form (from "Create model from this device"). */
  modelDraft: null,
};

const listeners = new Set();

/** Calls `f()` after every change of the devices or the connection; answers an unsubscribe. */
export function onDevices(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

function changed() {
  for (const f of listeners) {
    try {
      f();
    } catch (e) {
      console.error(e);
    }
  }
}

function sortDevices() {
  store.devices.sort((a, b) => (b.online - a.online) || a.name.localeCompare(b.name));
}

export async function reloadDevices() {
  try {
    store.devices = await get('/api/devices');
    sortDevices();
  } catch (e) {
    toast(`Devices: ${e.message}`, 'error');
  }
  changed();
}

let source = null;

/** Opens the device event stream (once; the browser reconnects it by itself). */
export function startDeviceStream() {
  if (source) return;
  reloadDevices();
  source = new EventSource('/api/devices/events');
  source.addEventListener('open', () => {
    const wasLive = store.live;
    store.live = true;
    // Events may have been missed while the stream was down.
    if (!wasLive) reloadDevices();
    else changed();
  });
  source.addEventListener('error', () => {
    store.live = false;
    changed();
  });
  // Events were missed (the browser read too slowly): the whole list again.
  source.addEventListener('lagged', () => reloadDevices());
  source.addEventListener('device', (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (typeof msg.connected === 'boolean') store.csm = msg.connected;
    if (typeof msg.csm === 'boolean') store.csm = msg.csm;
    const d = msg.device;
    if (msg.kind === 'csm' || !d) {
      reloadDevices();
      return;
    }
    const i = store.devices.findIndex((x) => x.id === d.id);
    if (msg.kind === 'deregister') {
      if (i >= 0) store.devices.splice(i, 1);
    } else if (i >= 0) {
      store.devices[i] = d;
    } else {
      store.devices.push(d);
    }
    sortDevices();
    changed();
  });
}

export function stopDeviceStream() {
  if (source) source.close();
  source = null;
  store.live = false;
}

/** Sets the CSM connection state (from GET /api/session when it tells). */
export function setCsm(up) {
  if (typeof up === 'boolean' && up !== store.csm) {
    store.csm = up;
    changed();
  }
}

let toastTimer = null;

/**
 * Shows a message in the status line: kind 'ok' (default), 'error' or 'info'. Errors stay
 * until the next message; others fade after a few seconds.
 */
export function toast(text, kind = 'ok') {
  const el = document.getElementById('toast');
  if (!el) return;
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  if (kind !== 'error') toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

/**
 * Runs `f` (an API action) with feedback: `done` (a text, or a function of the result) on
 * success, the API's reason on failure. Answers the result, or undefined on failure.
 */
export async function act(f, done) {
  try {
    const r = await f();
    if (done) toast(typeof done === 'function' ? done(r) : done, 'ok');
    return r;
  } catch (e) {
    toast(e.message || String(e), 'error');
    return undefined;
  }
}
