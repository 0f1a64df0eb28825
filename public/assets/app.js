// @ts-check
/**
 * The dashboard: a token field (sessionStorage, sent as a bearer header) and
 * five panels. One event stream feeds the event feed, live session output and
 * refreshes. All text is rendered through dom.js (textContent only).
 */
import { apiGet, followEvents, getToken, setToken } from './api.js';
import { el, replace } from './dom.js';
import { auditPanel } from './panel-audit.js';
import { eventsPanel } from './panel-events.js';
import { sessionsPanel } from './panel-sessions.js';
import { statusPanel } from './panel-status.js';
import { tokensPanel } from './panel-tokens.js';

/** How many of the newest events the page replays when it opens (the Events panel's backlog). */
const EVENT_BACKLOG = 100;
const panels = [statusPanel(), sessionsPanel(), eventsPanel({ backlog: EVENT_BACKLOG }), auditPanel(), tokensPanel()];
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
    enterprise = await apiGet('/api/enterprise/status');
  } catch {
    enterprise = null;
  }
  describeAuth(enterprise);
}

function startEvents() {
  stopEvents?.();
  const feed = byId.get('events');
  stopEvents = followEvents({
    backlog: EVENT_BACKLOG,
    onEvent: (e) => {
      for (const p of panels) p.onEvent?.(e);
    },
    onState: (text) => feed?.onStreamState(text),
  });
}

function show(id, { focus = false } = {}) {
  for (const p of panels) {
    const active = p.id === id;
    p.node.hidden = !active;
    const tab = document.getElementById(`tab-${p.id}`);
    if (!tab) continue;
    tab.setAttribute('aria-selected', String(active));
    // Roving tabindex: Tab reaches the selected tab only; arrows move between tabs.
    tab.setAttribute('tabindex', active ? '0' : '-1');
    if (active && focus) tab.focus();
  }
  void byId.get(id)?.refresh();
  if (location.hash !== `#${id}`) history.replaceState(null, '', `#${id}`);
}

/** WAI-ARIA tabs keyboard: Left/Right (wrapping), Home, End select and focus a tab. */
function onTabKey(ev) {
  const ids = panels.map((p) => p.id);
  const at = ids.indexOf(currentPanel());
  const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: ids.length - 1 }[ev.key];
  if (next === undefined) return;
  ev.preventDefault();
  show(ids[(next + ids.length) % ids.length], { focus: true });
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
    el(
      'div',
      { role: 'tablist', 'aria-label': 'Panels', class: 'tablist', on: { keydown: onTabKey } },
      panels.map((p) =>
        el('button', { type: 'button', role: 'tab', id: `tab-${p.id}`, 'aria-controls': `panel-${p.id}`, 'aria-selected': 'false', tabindex: '-1', on: { click: () => show(p.id) } }, p.title),
      ),
    ),
  );
  for (const p of panels) {
    p.node.setAttribute('role', 'tabpanel');
    p.node.setAttribute('aria-labelledby', `tab-${p.id}`);
    p.node.setAttribute('tabindex', '0');
  }
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
