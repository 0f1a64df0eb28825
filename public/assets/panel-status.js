// @ts-check
import { apiGet, getToken } from './api.js';
import { el, replace, time } from './dom.js';

/**
 * How often the Status panel re-reads /api/status while it is shown (each read
 * is an audit entry, so not often); session events refresh it sooner.
 */
const REFRESH_MS = 30_000;

const SESSION_STATES = ['queued', 'running', 'succeeded', 'failed', 'stopped', 'timed_out', 'budget_exceeded', 'oom_killed', 'disk_exceeded', 'lost'];

const onOff = (v) => (v ? 'on' : 'off');
const count = (n, one, many = `${one}s`) => `${Number(n ?? 0).toLocaleString('en')} ${Number(n) === 1 ? one : many}`;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

export function duration(seconds) {
  let s = Math.max(0, Math.floor(Number(seconds) || 0));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s} s`;
  return `${s} s`;
}

/** A value of an unknown status field as one line of text (never raw JSON braces). */
function plain(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (Array.isArray(v)) return v.length === 0 ? 'none' : v.map(plain).join('; ');
  if (isObject(v)) {
    const parts = Object.entries(v).map(([k, x]) => `${k.replaceAll('_', ' ')} ${plain(x)}`);
    return parts.length === 0 ? '—' : parts.join(', ');
  }
  return String(v);
}

const shortHash = (h) => (typeof h === 'string' && h.length > 16 ? `${h.slice(0, 16)}…` : (h ?? ''));

/** Server status, readably: sessions by state, the audit log, syslog and witnesses, streams, the embedded worker. */
export function statusPanel() {
  const body = el('div', { class: 'panel-body status-grid' });
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const updated = el('span', { class: 'hint', id: 'status-updated' });
  const node = el('section', { id: 'panel-status', class: 'panel', 'aria-labelledby': 'h-status' }, el('h2', { id: 'h-status' }, 'Status ', updated), error, body);

  const row = (label, value, attrs = {}) => el('tr', {}, el('th', { scope: 'row' }, label), el('td', attrs, value));
  const card = (id, title, ...rows) => el('section', { class: 'card', id: `status-${id}`, 'aria-label': title }, el('h3', {}, title), el('table', { class: 'kv' }, el('tbody', {}, rows)));

  function serverCard(s) {
    const f = s.flags ?? {};
    return card(
      'server',
      'Server',
      row('Version', s.version ?? ''),
      row('Runtime', s.runtime === 'workers' ? 'Cloudflare Workers' : s.runtime === 'node' ? 'Node.js' : (s.runtime ?? '')),
      row('Uptime', duration(s.uptime_seconds)),
      row('Environment', f.env ?? ''),
      row('Auth', f.auth_enabled ? `on${f.oidc_enabled ? ' (tokens and OIDC)' : ' (tokens)'}` : 'off: loopback callers only'),
      row('OIDC', onOff(f.oidc_enabled)),
      row('Sandbox mode', onOff(f.sandbox_mode)),
      row('Branch protection', onOff(f.branch_protection)),
    );
  }

  function sessionsCard(s) {
    const by = isObject(s.sessions?.by_status) ? s.sessions.by_status : {};
    const states = [...SESSION_STATES.filter((k) => k in by), ...Object.keys(by).filter((k) => !SESSION_STATES.includes(k))];
    const rows = states.map((k) => row(k.replaceAll('_', ' '), String(by[k]), { 'data-state': k }));
    return card('sessions', 'Sessions', row('Total', String(s.sessions?.total ?? 0)), rows.length > 0 ? rows : row('By state', 'no sessions yet'));
  }

  function auditCard(s, checkpoint) {
    const f = s.flags ?? {};
    if (!f.audit_enabled && !s.audit) return card('audit', 'Audit log', row('State', 'off (LOKI_AUDIT_DISABLED)'));
    const a = s.audit ?? {};
    const rows = [
      row('Tip', a.seq === undefined ? '—' : `entry #${Number(a.seq).toLocaleString('en')}`),
      row('Head hash', shortHash(a.head_hash), { class: 'mono', title: a.head_hash ?? '' }),
      row('Since start-up', `${count(a.committed, 'entry', 'entries')} written, ${count(a.queued, 'waiting', 'waiting')}, ${count(a.write_failures, 'write failure')}`, a.write_failures > 0 ? { class: 'bad' } : {}),
    ];
    if (checkpoint.error) rows.push(row('Last checkpoint', `not shown: ${checkpoint.error}`));
    else if (!checkpoint.value) rows.push(row('Last checkpoint', 'none yet'));
    else {
      const cp = checkpoint.value;
      const behind = typeof a.seq === 'number' && typeof cp.size === 'number' ? a.seq - cp.size : null;
      rows.push(
        row('Last checkpoint', `${cp.kind ?? 'checkpoint'} at ${time(cp.time)}, size ${Number(cp.size).toLocaleString('en')}${behind === null ? '' : behind <= 0 ? ' (covers the tip)' : ` (${count(behind, 'entry', 'entries')} since)`}`),
        row('Signature', cp.jws ? 'signed (JWS)' : 'unsigned'),
      );
    }
    const v = s.audit_volume;
    if (isObject(v)) {
      const text = Number(v.suppressed) > 0 ? `${count(v.suppressed, 'failed request')} counted in ${count(v.summaries, 'summary', 'summaries')}` : 'none';
      rows.push(row('Suppressed failures', `${text}${v.healthy === false ? ' (summaries cannot be written)' : ''}`, v.healthy === false ? { class: 'bad' } : {}));
    }
    return card('audit', 'Audit log', rows);
  }

  function forwardingCard(s) {
    const rows = [];
    const sl = s.syslog;
    if (!isObject(sl)) rows.push(row('Syslog', 'not configured (LOKI_AUDIT_SYSLOG_HOST)'));
    else {
      rows.push(
        row('Syslog', sl.connected ? 'connected' : 'not connected', { class: sl.connected ? 'ok' : 'bad' }),
        row('Syslog messages', `${count(sl.sent, 'sent', 'sent')}, ${count(sl.queued, 'queued', 'queued')}, ${count(sl.dropped, 'dropped', 'dropped')}`, sl.dropped > 0 ? { class: 'bad' } : {}),
      );
    }
    const ws = Array.isArray(s.witnesses) ? s.witnesses : [];
    if (ws.length === 0) rows.push(row('Witnesses', 'none configured (LOKI_AUDIT_WITNESSES)'));
    for (const w of ws) {
      const cosigned = w.last_cosigned_size === null || w.last_cosigned_size === undefined ? 'nothing cosigned yet' : `cosigned size ${Number(w.last_cosigned_size).toLocaleString('en')} at ${time(w.last_cosigned_at)}`;
      const failing = w.consecutive_failures > 0 ? `; ${count(w.consecutive_failures, 'failure')} in a row: ${w.last_error ?? ''}` : '';
      rows.push(row(`Witness ${w.url ?? ''}`, `${cosigned}${failing}`, failing ? { class: 'bad' } : {}));
    }
    return card('forwarding', 'Syslog and witnesses', rows);
  }

  function runtimeCard(s) {
    const st = isObject(s.streams) ? s.streams : {};
    const rows = [row('Live streams', `${count(st.sse, 'SSE stream')}, ${count(st.ws, 'WebSocket', 'WebSockets')} (${count(st.listeners, 'listener')})`)];
    const w = s.embedded_worker;
    if (isObject(w)) {
      const running = w.state === 'running';
      const parts = [String(w.state ?? 'unknown')];
      if (w.pid !== undefined && w.pid !== null) parts.push(`pid ${w.pid}`);
      if (w.worker_id) parts.push(`worker id ${w.worker_id}`);
      if (w.reason) parts.push(String(w.reason));
      if (running || Number(w.restarts) > 0) parts.push(count(w.restarts, 'restart'));
      rows.push(row('Embedded worker', parts.join(' · '), { class: running ? 'ok' : '', id: 'status-embedded-worker' }));
    }
    if (isObject(s.policy)) rows.push(row('Sandbox policy', `${s.policy.source ?? 'built-in defaults (no policy file)'}; host sessions ${s.policy.host_sessions ? 'allowed' : 'refused'}`));
    return card('runtime', 'Streams and workers', rows);
  }

  const KNOWN = new Set(['status', 'service', 'version', 'uptime_seconds', 'runtime', 'flags', 'sessions', 'audit', 'streams', 'syslog', 'audit_volume', 'witnesses', 'policy', 'embedded_worker']);
  function otherCard(s) {
    const rest = Object.keys(s).filter((k) => !KNOWN.has(k));
    return rest.length === 0 ? null : card('other', 'More', rest.map((k) => row(k.replaceAll('_', ' '), plain(s[k]))));
  }

  // A token without the audit scope is refused once, not again at every refresh (each refusal is an audit entry).
  let denied = null;
  async function loadCheckpoint(s) {
    if (!s.audit) return { value: null };
    if (denied && denied.token === getToken()) return { error: denied.message };
    try {
      const r = await apiGet('/api/enterprise/audit/checkpoint');
      return { value: r?.checkpoint ?? null };
    } catch (err) {
      if (err.status === 403) denied = { token: getToken(), message: err.message };
      return { error: err.message };
    }
  }

  async function refresh() {
    try {
      const s = await apiGet('/api/status');
      const checkpoint = await loadCheckpoint(s);
      error.hidden = true;
      updated.textContent = `updated ${time(Date.now())}`;
      replace(body, serverCard(s), sessionsCard(s), auditCard(s, checkpoint), forwardingCard(s), runtimeCard(s), otherCard(s));
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
      updated.textContent = '';
      replace(body);
    }
  }

  setInterval(() => {
    if (!node.hidden && document.visibilityState === 'visible') void refresh();
  }, REFRESH_MS);

  let eventTimer = null;
  return {
    id: 'status',
    title: 'Status',
    node,
    refresh,
    onEvent(e) {
      if (node.hidden || e.type !== 'session_state') return;
      clearTimeout(eventTimer);
      eventTimer = setTimeout(refresh, 1000);
    },
  };
}
