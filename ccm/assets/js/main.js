// Starts the GUI: the session (login when authentication is on), the header, and the hash
// router. Pages:
//   #/devices            devices.js   registered DAs, live
//   #/models[/new|/edit/NAME]  models.js   device models and their features
//   #/functions[/NAME]   functions.js the function library
//   #/projects           projects.js  list, create, import, export
//   #/projects/ID        project.js   the project editor (panel.js, monitor.js)
//   #/home               home.js      home devices and scenes: states, runs, the catalog (home-catalog.js)
// A page module exports render(main, args) and may answer a function that cleans up when
// another page opens (closes its event streams, stops its polling).

import { api, onUnauthorized } from './api.js';
import { replace, h } from './dom.js';
import { store, onDevices, startDeviceStream, stopDeviceStream, setCsm, toast, act } from './store.js';
import * as devices from './devices.js';
import * as models from './models.js';
import * as functions from './functions.js';
import * as projects from './projects.js';
import * as project from './project.js';
import * as home from './home.js';

const $ = (id) => document.getElementById(id);

let session = { auth: false, user: null };
let cleanup = null;

function parts() {
  const hash = location.hash.replace(/^#\/?/, '');
  return hash.split('/').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  }).filter((p) => p !== '');
}

async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  const main = $('main');
  const [page, ...args] = parts();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === (page || 'devices')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (session.auth && !session.user) {
    replace(main, h('section', { class: 'page' },
      h('h1', {}, 'Log in'),
      h('p', {}, 'Authentication is on: log in with a controller administrator (the form at the top right).')));
    $('login-form').querySelector('input').focus();
    return;
  }
  main.dataset.page = page || 'devices';
  let r;
  switch (page) {
    case 'models': r = models.render(main, args); break;
    case 'functions': r = functions.render(main, args); break;
    case 'home': r = home.render(main, args); break;
    case 'projects':
      r = args.length ? project.render(main, args) : projects.render(main, args);
      break;
    case 'devices':
    case undefined:
      r = devices.render(main, args);
      break;
    default:
      replace(main, h('section', { class: 'page' }, h('h1', {}, 'Not found'),
        h('p', {}, 'No page here. '), h('a', { href: '#/devices' }, 'Go to Devices')));
  }
  cleanup = typeof r === 'function' ? r : null;
}

function showSession() {
  const needLogin = session.auth && !session.user;
  $('login-form').hidden = !needLogin;
  $('user-box').hidden = !(session.auth && session.user);
  $('user-name').textContent = session.user ? `Signed in as ${session.user}` : '';
}

async function loadSession() {
  try {
    session = await api('GET', '/api/session');
    if ('csm' in session) setCsm(session.csm);
  } catch (e) {
    toast(`Session: ${e.message}`, 'error');
  }
  showSession();
}

function showIndicator() {
  const el = $('csm-indicator');
  let state;
  let text;
  if (!store.live) {
    state = 'down';
    text = 'No connection to the controller';
  } else if (store.csm === false) {
    state = 'down';
    text = 'CSM: disconnected';
  } else if (store.csm === true) {
    state = 'up';
    text = 'CSM: connected';
  } else {
    // The API does not tell the CSM's state: the controller, at least, answers.
    state = 'up';
    text = 'Controller: connected';
  }
  el.dataset.state = state;
  el.querySelector('.text').textContent = text;
}

async function start() {
  onUnauthorized(() => {
    if (session.auth && session.user) {
      session.user = null;
      showSession();
      stopDeviceStream();
      toast('Your session ended: log in again.', 'error');
      route();
    }
  });
  onDevices(showIndicator);
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const r = await act(() => api('POST', '/api/login',
      { username: f.username.value, password: f.password.value }), 'Logged in');
    if (r) {
      f.password.value = '';
      session.user = r.user || f.username.value;
      showSession();
      startDeviceStream();
      route();
    }
  });
  $('logout').addEventListener('click', async () => {
    await act(() => api('POST', '/api/logout'), 'Logged out');
    session.user = null;
    stopDeviceStream();
    showSession();
    showIndicator();
    route();
  });
  window.addEventListener('hashchange', route);
  await loadSession();
  if (!session.auth || session.user) startDeviceStream();
  showIndicator();
  // Keep the indicator honest when the API tells the CSM's state in the session.
  setInterval(async () => {
    if (document.hidden || (session.auth && !session.user)) return;
    try {
      const s = await api('GET', '/api/session');
      if ('csm' in s) setCsm(s.csm);
    } catch {
      /* the stream's state shows it */
    }
  }, 10000);
  route();
}

start();
