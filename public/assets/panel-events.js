import { el, json, replace, time } from './dom.js';

const MAX_ROWS = 300;

/** The event feed (fed by the page's one event stream: the newest `backlog` events, then live), newest first. */
export function eventsPanel({ backlog }) {
  const state = el('span', { class: 'stream-state' }, 'not connected');
  const typeFilter = el('input', { type: 'text', name: 'types', placeholder: 'types, comma-separated', autocomplete: 'off', spellcheck: 'false' });
  const sessionFilter = el('input', { type: 'text', name: 'session', placeholder: 'session id', autocomplete: 'off', spellcheck: 'false' });
  const tbody = el('tbody', { id: 'event-rows' });
  const events = [];

  const matches = (e) => {
    const types = typeFilter.value
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    if (types.length > 0 && !types.includes(e.type)) return false;
    const session = sessionFilter.value.trim();
    return session === '' || e.session_id === session;
  };
  const rowFor = (e) =>
    el('tr', {}, el('td', {}, String(e.id)), el('td', {}, time(e.ts)), el('td', {}, e.type), el('td', {}, e.session_id ?? ''), el('td', { class: 'data' }, json(e.data)));
  const render = () => replace(tbody, events.filter(matches).map(rowFor));
  typeFilter.addEventListener('input', render);
  sessionFilter.addEventListener('input', render);

  const node = el(
    'section',
    { id: 'panel-events', class: 'panel', 'aria-labelledby': 'h-events' },
    el('h2', { id: 'h-events' }, 'Events'),
    el('p', {}, 'Stream: ', state, el('span', { class: 'hint' }, ` · the newest ${backlog} events when the page opened, then live; at most ${MAX_ROWS} kept`)),
    el('div', { class: 'filters' }, el('label', {}, 'Types ', typeFilter), el('label', {}, 'Session ', sessionFilter)),
    el('table', { class: 'list' }, el('thead', {}, el('tr', {}, el('th', {}, 'ID'), el('th', {}, 'Time'), el('th', {}, 'Type'), el('th', {}, 'Session'), el('th', {}, 'Data'))), tbody),
  );

  return {
    id: 'events',
    title: 'Events',
    node,
    refresh() {},
    onEvent(e) {
      // A restarted stream (a new token) replays its backlog: show each event once.
      if (events.some((x) => x.id === e.id)) return;
      events.unshift(e);
      if (events.length > MAX_ROWS) events.length = MAX_ROWS;
      if (matches(e)) {
        tbody.prepend(rowFor(e));
        while (tbody.childElementCount > MAX_ROWS) tbody.lastElementChild?.remove();
      }
    },
    onStreamState(text) {
      state.textContent = text;
    },
  };
}
