/**
 * `loki sessions`, `loki logs ID [-f]`, `loki stop ID` and `loki status`: API
 * clients of the dashboard server (`LOKI_URL`, `LOKI_TOKEN`), with the exit
 * codes of `loki start` (START_EXIT_CODES): 0 done (`logs -f`: the session's
 * outcome code), 2 usage error or request refused (400/401/403/404/409), 3 server
 * unreachable or server error. Every failure is one line on stderr.
 */
import { LokiClient, type ServerStatus } from '../client';
import { SESSION_STATES, type SessionState } from '../db/store';
import { configOrExit } from '../node';
import type { SessionView } from '../sessions/api';
import { terminalSafe } from './common';
import { type ApiAction, apiFailure, followSession, outcomeLine, resultLine, START_EXIT_CODES, say } from './start';

function client(): { client: LokiClient; url: string } {
  const config = configOrExit();
  return { client: new LokiClient({ url: config.url, token: config.token }), url: config.url };
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Columns padded to their widest cell; the last column is not padded. */
function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) process.stdout.write(`${r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i]!))).join('  ').trimEnd()}\n`);
}

/** Seconds as "3h 2m", "4m 5s" or "12s". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** A session's age or run time, for the table. */
function ran(s: SessionView, now: number): string {
  if (!s.started_at) return '-';
  const end = s.ended_at ? Date.parse(s.ended_at) : now;
  return duration((end - Date.parse(s.started_at)) / 1000);
}

export async function runSessions(o: { json?: boolean; status?: string; limit?: string }): Promise<number> {
  if (o.status !== undefined && !(SESSION_STATES as readonly string[]).includes(o.status)) {
    say(`--status must be one of ${SESSION_STATES.join(', ')}, got ${JSON.stringify(o.status)}`);
    return START_EXIT_CODES.usage;
  }
  if (o.limit !== undefined && (!/^\d{1,3}$/.test(o.limit) || Number(o.limit) < 1 || Number(o.limit) > 200)) {
    say(`--limit must be an integer from 1 to 200, got ${JSON.stringify(o.limit)}`);
    return START_EXIT_CODES.usage;
  }
  const { client: c, url } = client();
  try {
    const list = await c.listSessions({ limit: o.limit === undefined ? 50 : Number(o.limit), status: o.status as SessionState | undefined });
    if (o.json) {
      printJson(list);
      return 0;
    }
    if (list.sessions.length === 0) {
      say(o.status ? `no ${o.status} sessions on ${url}` : `no sessions on ${url} (loki start ./prd.md starts one)`);
      return 0;
    }
    const now = Date.now();
    printTable(
      ['ID', 'STATUS', 'WHERE', 'COST', 'BUDGET', 'RAN', 'CREATED', 'NAME / PRD'],
      list.sessions.map((s) => [
        s.id,
        s.status,
        s.host_session ? 'host' : 'sandbox',
        `$${s.cost_usd.toFixed(2)}`,
        s.budget_usd === null ? '-' : `$${s.budget_usd.toFixed(2)}`,
        ran(s, now),
        s.created_at.replace(/\.\d{3}Z$/, 'Z'),
        // Paths come from directory names anyone with access to a workspace root chose.
        terminalSafe(`${s.name ?? s.prd} (${s.workspace})`),
      ]),
    );
    if (list.next_cursor) say(`more sessions than --limit ${o.limit ?? 50}; --json gives next_cursor`);
    return 0;
  } catch (err) {
    return apiFailure(err, url, { what: 'listing sessions', method: 'GET', route: '/api/sessions' });
  }
}

export async function runLogs(id: string, o: { follow?: boolean; json?: boolean }): Promise<number> {
  const { client: c, url } = client();
  const action: ApiAction = { what: 'reading session output', method: 'GET', route: '/api/sessions/:id/logs', sessionId: id };
  let interrupted = false;
  // Ctrl-C while following leaves the session running (it is `loki stop`'s job to stop it).
  const onInterrupt = () => {
    if (interrupted) return;
    interrupted = true;
    say(`left session ${id} running (loki stop ${id} stops it)`);
    process.exit(130);
  };
  if (o.follow) process.on('SIGINT', onInterrupt);
  try {
    return await followSession(c, id, { url, follow: Boolean(o.follow), json: o.json, action });
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

export async function runStop(id: string, o: { json?: boolean }): Promise<number> {
  const { client: c, url } = client();
  try {
    const r = await c.stopSession(id);
    if (o.json) printJson(r);
    else if (r.session.status === 'stopped') {
      const committed = resultLine(r.session);
      if (committed) say(committed);
      say(outcomeLine(r.session));
    } else say(`stop requested for session ${id} (${r.session.status}); its worker stops it shortly (loki logs -f ${id} follows it to the end)`);
    return 0;
  } catch (err) {
    return apiFailure(err, url, { what: 'stopping a session', method: 'POST', route: '/api/sessions/:id/stop', sessionId: id });
  }
}

/** `a=1, b.c=x` for an object the server added to its status that `loki status` has no words for. */
function flat(value: unknown, prefix = ''): string[] {
  if (value === null || typeof value !== 'object') return [`${prefix || 'value'}=${value === null ? '-' : String(value)}`];
  if (Array.isArray(value)) return value.length === 0 ? [prefix ? `${prefix}=none` : 'none'] : value.flatMap((v, i) => flat(v, `${prefix}[${i}]`));
  const entries = Object.entries(value);
  if (entries.length === 0) return [`${prefix || 'value'}=none`];
  return entries.flatMap(([k, v]) => flat(v, prefix ? `${prefix}.${k}` : k));
}

const onOff = (v: unknown) => (v === true ? 'on' : v === false ? 'off' : '?');

export function statusLines(s: ServerStatus, url: string): string[] {
  const flags = s.flags ?? {};
  const lines: [string, string][] = [];
  lines.push(['server', `${url}: ${s.status}, version ${s.version}, up ${duration(s.uptime_seconds)}${s.runtime ? ` (${s.runtime})` : ''}`]);
  lines.push(['auth', `tokens ${onOff(flags.auth_enabled)}, OIDC ${onOff(flags.oidc_enabled)}${flags.env ? `, env ${String(flags.env)}` : ''}`]);
  const audit = s.audit
    ? `on: ${s.audit.seq} entries, head ${s.audit.head_hash.slice(0, 16)}${typeof s.audit.write_failures === 'number' && s.audit.write_failures > 0 ? `, ${s.audit.write_failures} write failures` : ''}`
    : flags.audit_enabled === false
      ? 'off'
      : 'on: no entries';
  lines.push(['audit', audit]);
  lines.push(['sandbox', `sandbox mode ${onOff(flags.sandbox_mode)}, branch protection ${onOff(flags.branch_protection)}`]);
  if (s.sessions) {
    const by = Object.entries(s.sessions.by_status)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${n} ${k}`);
    lines.push(['sessions', `${s.sessions.total} total${by.length ? `: ${by.join(', ')}` : ''}`]);
  }
  const known = new Set(['status', 'service', 'version', 'uptime_seconds', 'runtime', 'flags', 'sessions', 'audit']);
  for (const [k, v] of Object.entries(s)) if (!known.has(k)) lines.push([k.replaceAll('_', ' '), v === null ? 'off' : flat(v).join(', ')]);
  const width = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
}

export async function runStatus(o: { json?: boolean }): Promise<number> {
  const { client: c, url } = client();
  try {
    const s = await c.serverStatus();
    if (o.json) printJson(s);
    else for (const l of statusLines(s, url)) process.stdout.write(`${l}\n`);
    return 0;
  } catch (err) {
    return apiFailure(err, url, { what: 'reading the server status', method: 'GET', route: '/api/status' });
  }
}
