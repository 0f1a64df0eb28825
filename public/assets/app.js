/**
 * The dashboard: a token field (sessionStorage, sent as a bearer header) and
 * five panels. One event stream feeds the event feed, live session output and
 * refreshes. All text is rendered through dom.js (textContent only).
 */
import { api, followEvents, getToken, setToken } from './api.js';
import { el, replace } from './dom.js';
import { auditPanel } from './panel-audit.js';
import { eventsPanel } from './panel-events.js';
import { sessionsPanel } from './panel-sessions.js';
import { statusPanel } from './panel-status.js';
import { tokensPanel } from './panel-tokens.js';

const panels = [statusPanel(), sessionsPanel(), eventsPanel(), auditPanel(), tokensPanel()];
const byId = new Map(panels.map((p) => [p.id, p]));
let stopEvents = null;

const authState = el('span', { id: 'auth-state', class: 'auth-state' });
const tokenInput = el('input', {
  type: 'password',
  id: 'token',
  name: 'token',
  autocomplete: 'off',
  spellcheck: 'false',
  placeholder: 'loki_… bearer token',
  'aria-label': 'API token',
});

function describeAuth(enterprise) {
  const has = getToken() !== '';
  if (!enterprise) authState.textContent = has ? 'token set' : 'no token';
  else if (!enterprise.auth_enabled) authState.textContent = has ? 'auth off (token sent anyway)' : 'auth off: local access';
  else authState.textContent = has ? 'auth on: token set' : 'auth on: enter a token';
}

let enterprise = null;
async function loadEnterprise() {
  try {
    enterprise = await api('/api/enterprise/status');
  } catch {
    enterprise = null;
  }
  describeAuth(enterprise);
}

function startEvents() {
  stopEvents?.();
  const feed = byId.get('events');
  stopEvents = followEvents({
    onEvent: (e) => {
      for (const p of panels) p.onEvent?.(e);
    },
    onState: (text) => feed.onStreamState(text),
  });
}

function show(id) {
  for (const p of panels) {
    const active = p.id === id;
    p.node.hidden = !active;
    document.getElementById(`tab-${p.id}`)?.setAttribute('aria-selected', String(active));
  }
  void byId.get(id)?.refresh();
  if (location.hash !== `#${id}`) history.replaceState(null, '', `#${id}`);
}

function tokenForm() {
  tokenInput.value = getToken();
  return el(
    'form',
    {
      id: 'token-form',
      class: 'token-form',
      on: {
        submit: (ev) => {
          ev.preventDefault();
          setToken(tokenInput.value.trim());
          describeAuth(enterprise);
          startEvents();
          show(currentPanel());
        },
      },
    },
    tokenInput,
    el('button', { type: 'submit' }, 'Use token'),
    el(
      'button',
      {
        type: 'button',
        on: {
          click: () => {
            setToken('');
            tokenInput.value = '';
            describeAuth(enterprise);
            startEvents();
            show(currentPanel());
          },
        },
      },
      'Forget',
    ),
    authState,
  );
}

function currentPanel() {
  const id = location.hash.slice(1);
  return byId.has(id) ? id : 'status';
}

function main() {
  const header = document.getElementById('top');
  const nav = document.getElementById('tabs');
  const mainEl = document.getElementById('panels');
  replace(header, el('h1', {}, 'Loki'), tokenForm());
  replace(
    nav,
    panels.map((p) => el('button', { type: 'button', id: `tab-${p.id}`, 'aria-selected': 'false', on: { click: () => show(p.id) } }, p.title)),
  );
  replace(
    mainEl,
    panels.map((p) => p.node),
  );
  window.addEventListener('hashchange', () => show(currentPanel()));
  void loadEnterprise();
  startEvents();
  show(currentPanel());
}

main();
