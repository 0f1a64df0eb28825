// @ts-check
import { apiGet, apiPost } from './api.js';
import { el, replace, time } from './dom.js';

const MAX_LINES = 5000;

const pick = (o, ...keys) => {
  for (const k of keys) if (o && o[k] !== undefined && o[k] !== null) return o[k];
  return null;
};
const listOf = (body, ...keys) => {
  if (Array.isArray(body)) return body;
  for (const k of keys) if (Array.isArray(body?.[k])) return body[k];
  return [];
};
/** Output lines in an `output` event or a logs response, whatever the batch shape. */
const linesOf = (data) => {
  if (typeof data === 'string') return [{ text: data }];
  const list = listOf(data, 'lines', 'logs', 'entries');
  if (list.length > 0) {
    // An `output` event carries plain strings numbered from `first_line`.
    const first = Number(data?.first_line);
    return list.map((l, i) => (typeof l === 'string' ? { line: Number.isFinite(first) ? first + i : null, stream: data?.stream ?? null, text: l } : l));
  }
  return data && typeof data.text === 'string' ? [data] : [];
};

/** What a session committed, as one line of text. */
const resultText = (r) => {
  if (!r || typeof r !== 'object') return '';
  if (!r.commit) return 'no changes';
  const counts = `${Number(r.files_changed)} files, +${Number(r.insertions)} -${Number(r.deletions)}`;
  return r.kind === 'git' ? `${String(r.commit).slice(0, 12)} on ${r.branch} (${counts})` : `patch (${counts})`;
};

/**
 * What a session has spent as its events report it, before the list does: the
 * server stores a session's cost when a budget event arrives (`budget`,
 * `budget_warning`, `budget_exceeded`, each with `spent_usd`) and when it ends,
 * while the provider reports spending in its JSON output lines all along. Those
 * lines are read with the worker's rule (src/sandbox/budget.ts): top-level
 * `total_cost_usd` is cumulative (the largest counts), `cost_usd` incremental
 * (summed; only what this page saw, so a lower bound). The shown cost is the
 * largest of the stored cost and these.
 */
export function costTracker() {
  const live = new Map();
  const entry = (id) => {
    let e = live.get(id);
    if (!e) {
      e = { reported: 0, cumulative: 0, incremental: 0 };
      live.set(id, e);
    }
    return e;
  };
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null);
  return {
    /** Feed one event; true when it changed a session's live cost. */
    onEvent(ev) {
      if (!ev || typeof ev.session_id !== 'string') return false;
      if (ev.type === 'budget' || ev.type === 'budget_warning' || ev.type === 'budget_exceeded') {
        const spent = num(ev.data?.spent_usd);
        if (spent === null) return false;
        const e = entry(ev.session_id);
        e.reported = Math.max(e.reported, spent);
        return true;
      }
      if (ev.type !== 'output') return false;
      let changed = false;
      for (const l of linesOf(ev.data)) {
        const text = typeof l?.text === 'string' ? l.text.trim() : '';
        if (!text.startsWith('{') || !text.includes('cost_usd')) continue;
        let doc;
        try {
          doc = JSON.parse(text);
        } catch {
          continue;
        }
        if (!doc || typeof doc !== 'object' || Array.isArray(doc)) continue;
        const total = num(doc.total_cost_usd);
        const delta = num(doc.cost_usd);
        const e = entry(ev.session_id);
        if (total !== null) e.cumulative = Math.max(e.cumulative, total);
        else if (delta !== null) e.incremental = Math.round((e.incremental + delta) * 1e6) / 1e6;
        else continue;
        changed = true;
      }
      return changed;
    },
    /** The cost to show: the stored cost or what the events reported, whichever is larger. */
    cost(id, stored) {
      const e = live.get(id);
      const base = num(stored) ?? 0;
      return e ? Math.max(base, e.reported, e.cumulative, e.incremental) : stored;
    },
  };
}

const money = (v) => `$${Number(v).toFixed(2)}`;

/** Sessions: start, list, stop, and the live output of one session. */
export function sessionsPanel() {
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  // A background list refresh clears only its own error, never one from the user's last action.
  let errorFromRefresh = false;
  const showError = (err, fromRefresh = false) => {
    if (!err && fromRefresh && !errorFromRefresh) return;
    errorFromRefresh = Boolean(err) && fromRefresh;
    error.hidden = !err;
    error.textContent = err ? err.message : '';
  };
  const f = {
    workspace: el('input', { type: 'text', name: 'workspace', required: true, autocomplete: 'off', spellcheck: 'false' }),
    prd: el('input', { type: 'text', name: 'prd', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'prd.md' }),
    budget: el('input', { type: 'number', name: 'budget', min: '0.01', step: '0.01', placeholder: 'USD' }),
    name: el('input', { type: 'text', name: 'name', maxlength: '255', autocomplete: 'off' }),
    host: el('input', { type: 'checkbox', name: 'host' }),
  };
  const form = el(
    'form',
    { class: 'inline-form', on: { submit: (ev) => start(ev) } },
    el('label', {}, 'Workspace ', f.workspace),
    el('label', {}, 'PRD ', f.prd),
    el('label', {}, 'Budget ', f.budget),
    el('label', {}, 'Name ', f.name),
    el('label', { title: 'Outside the sandbox, on the worker host: only if the operator allows host sessions' }, f.host, ' host session'),
    el('button', { type: 'submit' }, 'Start session'),
  );
  const tbody = el('tbody', { id: 'session-rows' });
  const outputTitle = el('h3', {}, 'Output');
  const output = el('pre', { id: 'session-output', class: 'output' });
  let selected = null;
  let lastLine = 0;
  const costs = costTracker();
  /** Stored budget and cost of each listed session, for live cost updates between list refreshes. */
  const listed = new Map();
  const costText = (cost, budget) => (cost === null || cost === undefined ? '' : `${money(cost)}${budget === null ? '' : ` / ${money(budget)}`}`);
  const updateCost = (id) => {
    const s = listed.get(id);
    const cell = [...tbody.querySelectorAll('td.cost')].find((td) => td.getAttribute('data-cost') === id);
    if (s && cell) cell.textContent = costText(costs.cost(id, s.cost), s.budget);
  };

  async function start(ev) {
    ev.preventDefault();
    /** @type {import('../../src/http/api-types').ApiBody<'/api/sessions', 'post'>} */
    const body = { workspace: f.workspace.value.trim(), prd: f.prd.value.trim() };
    if (f.name.value.trim()) body.name = f.name.value.trim();
    if (f.budget.value) body.budget_usd = Number(f.budget.value);
    // Every session is sandboxed unless a host session is asked for (the operator decides).
    body.sandbox = !f.host.checked;
    try {
      await apiPost('/api/sessions', { body });
      showError(null);
      await refresh();
    } catch (err) {
      showError(err);
    }
  }

  async function stop(id, button) {
    button.disabled = true;
    try {
      await apiPost('/api/sessions/{id}/stop', { params: { id } });
      showError(null);
      await refresh();
    } catch (err) {
      showError(err);
      button.disabled = false;
    }
  }

  function appendLines(lines) {
    for (const l of lines) {
      const n = Number(pick(l, 'line'));
      if (Number.isFinite(n) && n > 0) {
        if (n <= lastLine) continue;
        lastLine = n;
      }
      const stream = pick(l, 'stream');
      output.appendChild(el('span', { class: stream === 'stderr' ? 'line stderr' : 'line' }, `${pick(l, 'text') ?? ''}\n`));
    }
    while (output.childElementCount > MAX_LINES) output.firstElementChild?.remove();
    output.scrollTop = output.scrollHeight;
  }

  async function show(session) {
    selected = pick(session, 'id');
    lastLine = 0;
    replace(outputTitle, 'Output of ', pick(session, 'name') ?? selected);
    replace(output);
    try {
      const body = await apiGet('/api/sessions/{id}/logs', { params: { id: selected }, query: { limit: 1000 } });
      appendLines(linesOf(body));
      showError(null);
    } catch (err) {
      showError(err);
    }
  }

  const rowFor = (s) => {
    const id = pick(s, 'id');
    const status = pick(s, 'status', 'state') ?? '';
    const budget = pick(s, 'budget_usd', 'budgetUsd');
    const cost = costs.cost(id, pick(s, 'cost_usd', 'costUsd'));
    const stopButton = el('button', { type: 'button', class: 'danger', on: { click: () => stop(id, stopButton) } }, 'Stop');
    const terminal = ['succeeded', 'failed', 'stopped', 'timed_out', 'budget_exceeded', 'oom_killed', 'disk_exceeded', 'lost'].includes(status);
    const host = pick(s, 'host_session') === true;
    return el(
      'tr',
      { 'data-session': id },
      el('td', {}, id),
      el('td', { class: 'name' }, pick(s, 'name') ?? ''),
      el('td', {}, status),
      el('td', host ? { class: 'host-session', title: 'ran on the worker host, outside the sandbox' } : {}, host ? 'HOST' : 'sandbox'),
      el('td', { class: 'path' }, pick(s, 'workspace') ?? ''),
      el('td', { class: 'path' }, pick(s, 'prd') ?? ''),
      el('td', { class: 'cost', 'data-cost': id }, costText(cost, budget)),
      el('td', { class: 'path' }, resultText(pick(s, 'result'))),
      el('td', {}, time(pick(s, 'created_at', 'createdAt'))),
      el('td', { class: 'actions' }, el('button', { type: 'button', on: { click: () => show(s) } }, 'Output'), terminal ? null : ' ', terminal ? null : stopButton),
    );
  };

  async function refresh() {
    try {
      const body = await apiGet('/api/sessions', { query: { limit: 100 } });
      const list = listOf(body, 'sessions', 'items');
      listed.clear();
      for (const s of list) listed.set(pick(s, 'id'), { cost: pick(s, 'cost_usd', 'costUsd'), budget: pick(s, 'budget_usd', 'budgetUsd') });
      replace(tbody, list.map(rowFor));
      showError(null, true);
    } catch (err) {
      showError(err, true);
    }
  }

  const node = el(
    'section',
    { id: 'panel-sessions', class: 'panel', 'aria-labelledby': 'h-sessions' },
    el('h2', { id: 'h-sessions' }, 'Sessions'),
    error,
    form,
    el(
      'table',
      { class: 'list' },
      el(
        'thead',
        {},
        el('tr', {}, el('th', {}, 'ID'), el('th', {}, 'Name'), el('th', {}, 'Status'), el('th', {}, 'Where'), el('th', {}, 'Workspace'), el('th', {}, 'PRD'), el('th', {}, 'Cost'), el('th', {}, 'Result'), el('th', {}, 'Created'), el('th', {}, '')),
      ),
      tbody,
    ),
    outputTitle,
    output,
  );

  let refreshTimer = null;
  return {
    id: 'sessions',
    title: 'Sessions',
    node,
    refresh,
    onEvent(e) {
      if (costs.onEvent(e)) updateCost(e.session_id);
      if (e.type === 'output' && selected !== null && e.session_id === selected) appendLines(linesOf(e.data));
      if (e.type === 'session_state' || e.type === 'budget_warning' || e.type === 'budget_exceeded' || e.type === 'session_result') {
        // Coalesce bursts of state changes into one list refresh.
        clearTimeout(refreshTimer);
        refreshTimer = setTimeout(refresh, 300);
      }
    },
  };
}
