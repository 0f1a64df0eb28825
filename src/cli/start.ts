/**
 * `loki start ./prd.md [--sandbox | --host] [--budget 5.00] [--name N]`: an API client
 * (`LOKI_URL`, `LOKI_TOKEN`). It sends the workspace (the git root of the current
 * directory, or the directory itself) and the PRD path relative to it, streams
 * the session's output to stdout until the session ends, and prints the outcome
 * in one line on stderr. Ctrl-C asks the server to stop the session (a second
 * Ctrl-C leaves it running and exits 130).
 *
 * Exit codes (`START_EXIT_CODES`):
 *   0 succeeded · 1 failed · 2 usage error or request refused (400/401/403/404)
 *   3 server unreachable or server error · 4 stopped · 5 timed_out
 *   6 budget_exceeded · 7 oom_killed · 8 lost · 9 disk_exceeded
 *
 * Every session is sandboxed unless `--host` asks for a host session (which the
 * operator's policy must allow); `LOKI_SANDBOX_MODE=true` makes `--host` an error.
 */
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { ROLE_RANK, ROLE_SCOPES, ROLES, expandScopes, type Scope } from '../auth/roles';
import { ApiClientError, LokiClient } from '../client';
import type { SessionState } from '../db/store';
import { configOrExit } from '../node';
import { isProviderName, PROVIDER_NAMES, type ProviderName } from '../sandbox/providers';
import { type Method, neededScope, routeSpec } from '../http/scopes';
import type { LogsPage, SessionView } from '../sessions/api';
import { parseBudget } from '../sessions/service';
import { terminalSafe } from './common';

export const START_EXIT_CODES: Record<SessionState | 'usage' | 'unreachable', number> = {
  succeeded: 0,
  failed: 1,
  usage: 2,
  unreachable: 3,
  stopped: 4,
  timed_out: 5,
  budget_exceeded: 6,
  oom_killed: 7,
  lost: 8,
  disk_exceeded: 9,
  // not outcomes; listed so the table is total
  queued: 1,
  running: 1,
};

/** The exit codes of `loki start` and the other API clients, as `--help` shows them. */
export const API_EXIT_CODES_HELP = `
Exit codes:
  0  done (loki start, loki logs -f: the session succeeded)
  1  the session failed
  2  usage error, or the server refused the request (400, 401, 403, 404, 409)
  3  server unreachable, or a server error
  4  stopped · 5 timed_out · 6 budget_exceeded · 7 oom_killed · 8 lost · 9 disk_exceeded

LOKI_URL (default http://127.0.0.1:57374) and LOKI_TOKEN name the server and the token.`;

/** Log polling backs off from MIN to MAX while nothing arrives; a live event wakes it at once. */
const MIN_POLL_MS = 200;
const MAX_POLL_MS = 2_000;
const PAGE = 1000;

/** A wake-up that is not lost when it fires before anyone waits. */
class Wake {
  private pending = false;
  private resolve: (() => void) | null = null;
  fire(): void {
    if (this.resolve) {
      this.resolve();
      this.resolve = null;
    } else this.pending = true;
  }
  wait(ms: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.resolve = null;
        resolve();
      }, ms);
      this.resolve = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}

export function say(line: string): void {
  process.stderr.write(`loki: ${line}\n`);
}

/** The git work tree containing `dir`, or null (not a repository, or no git). */
export function gitRoot(dir: string): Promise<string | null> {
  return new Promise((resolve) => {
    let out = '';
    const child = spawn('git', ['rev-parse', '--show-toplevel'], { cwd: dir, stdio: ['ignore', 'pipe', 'ignore'] });
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.on('error', () => resolve(null));
    child.on('close', (code) => resolve(code === 0 && out.trim() ? out.trim() : null));
  });
}

/** What a failed request was for, so a refusal can say what was needed. */
export interface ApiAction {
  /** e.g. "listing sessions" */
  what: string;
  method: Method;
  /** The route as in the scope table (src/http/scopes.ts), e.g. /api/sessions/:id/stop. */
  route: string;
  /** The session the request named: a 404 is then "no such session". */
  sessionId?: string;
}

/** The roles whose scopes include `scope`, least privileged first ("viewer, auditor, operator or admin"). */
export function rolesHolding(scope: Scope): string {
  const roles = ROLES.filter((r) => expandScopes(ROLE_SCOPES[r]).has(scope)).sort((a, b) => ROLE_RANK[a] - ROLE_RANK[b]);
  return roles.length > 1 ? `${roles.slice(0, -1).join(', ')} or ${roles[roles.length - 1]}` : (roles[0] ?? 'admin');
}

/** Exit code and one line for an API failure. */
export function apiFailure(err: unknown, url: string, action?: ApiAction): number {
  if (err instanceof ApiClientError) {
    if (err.status === 0) {
      say(`${err.message}; is the dashboard running (loki dashboard) and LOKI_URL right?`);
      return START_EXIT_CODES.unreachable;
    }
    if (err.status === 401) {
      say(`the server refused the token (${err.code}): ${err.message}; set LOKI_TOKEN to a valid token`);
      return START_EXIT_CODES.usage;
    }
    if (err.status === 403 && err.code === 'insufficient_scope' && action) {
      const spec = routeSpec(action.method, action.route);
      const scope = spec ? neededScope(spec.scope) : null;
      if (scope) {
        const role = scope === '*' ? 'the admin role' : `the ${rolesHolding(scope)} role (scope "${scope}")`;
        say(`not allowed: ${action.what} needs ${role}; the token in LOKI_TOKEN lacks it`);
        return START_EXIT_CODES.usage;
      }
    }
    if (err.status === 403) {
      say(`not allowed (${err.code}): ${err.message}`);
      return START_EXIT_CODES.usage;
    }
    if (err.status === 404 && action?.sessionId !== undefined && err.code === 'not_found') {
      say(`no session ${action.sessionId} on ${url} (loki sessions lists them)`);
      return START_EXIT_CODES.usage;
    }
    if (err.status === 400 || err.status === 404 || err.status === 409) {
      say(`${err.message} (${err.code})`);
      return START_EXIT_CODES.usage;
    }
    say(`the server at ${url} answered ${err.status} (${err.code}): ${err.message}`);
    return START_EXIT_CODES.unreachable;
  }
  say(`unexpected error: ${(err as Error).message}`);
  return START_EXIT_CODES.unreachable;
}

export function outcomeLine(s: SessionView): string {
  const secs = s.started_at && s.ended_at ? ` in ${((Date.parse(s.ended_at) - Date.parse(s.started_at)) / 1000).toFixed(1)} s` : '';
  const cost = s.cost_usd > 0 ? `, $${s.cost_usd.toFixed(2)} spent` : '';
  const code = s.exit_code !== null ? `, exit code ${s.exit_code}` : '';
  const why = s.reason ? `: ${s.reason}` : '';
  return `session ${s.id} ${s.status}${secs}${code}${cost}${why}`;
}

/** What the session committed, in one line (null: no result). */
export function resultLine(s: SessionView): string | null {
  const r = s.result;
  if (!r) return null;
  const counts = `${r.files_changed} file${r.files_changed === 1 ? '' : 's'} changed, +${r.insertions} -${r.deletions}`;
  if (!r.commit) return 'the agent changed nothing';
  if (r.kind === 'git') return `committed ${r.commit.slice(0, 12)} on branch ${r.branch} (${counts}); your checkout was not touched`;
  return r.has_patch
    ? `${counts}; the patch: GET /api/sessions/${s.id}/patch (apply it with git apply)`
    : `${counts}; the patch was too large to send, it is kept on the worker`;
}

export async function runStart(prd: string, o: { sandbox?: boolean; host?: boolean; provider?: string; budget?: string; name?: string }): Promise<number> {
  if (o.host && o.sandbox) {
    say('--host and --sandbox exclude each other');
    return START_EXIT_CODES.usage;
  }
  if (o.provider !== undefined && !isProviderName(o.provider)) {
    say(`--provider must be one of ${PROVIDER_NAMES.join(', ')}, got ${JSON.stringify(o.provider)}`);
    return START_EXIT_CODES.usage;
  }
  let budget: number | undefined;
  if (o.budget !== undefined) {
    const b = parseBudget(o.budget);
    if ('error' in b) {
      say(`--budget: ${b.error}`);
      return START_EXIT_CODES.usage;
    }
    budget = b.usd;
  }
  const config = configOrExit();
  if (o.host && config.sandboxMode) {
    say('--host is refused: LOKI_SANDBOX_MODE=true requests a sandbox for every session');
    return START_EXIT_CODES.usage;
  }
  const cwd = realpathSync(process.cwd());
  const workspace = (await gitRoot(cwd)) ?? cwd;
  const prdRelative = path.relative(workspace, path.resolve(cwd, prd));
  if (prdRelative === '' || prdRelative.startsWith('..') || path.isAbsolute(prdRelative)) {
    say(`the PRD ${prd} is not inside the workspace ${workspace}`);
    return START_EXIT_CODES.usage;
  }

  const client = new LokiClient({ url: config.url, token: config.token });
  let session: SessionView;
  try {
    session = await client.createSession({
      workspace,
      prd: prdRelative.split(path.sep).join('/'),
      sandbox: !o.host,
      ...(o.provider ? { provider: o.provider as ProviderName } : {}),
      ...(budget !== undefined ? { budget_usd: budget } : {}),
      ...(o.name !== undefined ? { name: o.name } : {}),
    });
  } catch (err) {
    return apiFailure(err, config.url, { what: 'starting a session', method: 'POST', route: '/api/sessions' });
  }
  const where = session.host_session ? 'HOST SESSION: runs on the worker host, outside the sandbox' : 'sandbox';
  const policy = session.policy_sha256 ? `, policy ${session.policy_sha256.slice(0, 12)}` : '';
  say(`session ${session.id} queued (${where}${session.budget_usd !== null ? `, budget $${session.budget_usd.toFixed(2)}` : ''}${policy})`);

  let interrupts = 0;
  const onInterrupt = () => {
    interrupts++;
    if (interrupts > 1) {
      say(`left session ${session.id} running`);
      process.exit(130);
    }
    say(`stopping session ${session.id} (Ctrl-C again to leave it running)`);
    client.stopSession(session.id).catch((err) => say(`stop failed: ${(err as Error).message}`));
  };
  process.on('SIGINT', onInterrupt);
  try {
    return await followSession(client, session.id, {
      url: config.url,
      action: { what: 'reading the session output', method: 'GET', route: '/api/sessions/:id/logs', sessionId: session.id },
    });
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

/**
 * Print a session's stored output from line `after` on (each line as text, or as
 * a JSON object with `json`). With `follow`, keep printing until the session
 * ends, then print what it committed and its outcome on stderr and return the
 * outcome's exit code; without, return 0 once the stored lines are printed.
 */
export async function followSession(
  client: LokiClient,
  id: string,
  o: { url: string; follow?: boolean; json?: boolean; after?: number; action?: ApiAction },
): Promise<number> {
  const follow = o.follow ?? true;
  // An agent's output is untrusted: on a terminal its control characters (retitle,
  // clear, OSC 52 clipboard writes) are shown escaped; a pipe or file gets the text as it is.
  const text = (t: string) => (process.stdout.isTTY ? terminalSafe(t) : t);
  const print = (l: LogsPage['lines'][number]) => process.stdout.write(o.json ? `${JSON.stringify(l)}\n` : `${text(l.text)}\n`);
  // Live events only wake the reader; the stored log is what is printed, so
  // nothing is missed or doubled when the stream is unavailable or drops.
  const live = new AbortController();
  const wake = new Wake();
  if (follow) {
    void client.watchEvents({ session: id, types: ['output', 'session_state'] }, () => wake.fire(), live.signal).catch(() => undefined);
  }
  try {
    let after = o.after ?? 0;
    let failures = 0;
    let reached = false;
    let idle = MIN_POLL_MS;
    for (;;) {
      let page: LogsPage;
      try {
        page = await client.sessionLogs(id, { after, limit: PAGE });
        failures = 0;
        reached = true;
      } catch (err) {
        // A restarting server is not the end of the session: retry for a while
        // (once it has answered: a server that never did is just unreachable).
        if (follow && reached && err instanceof ApiClientError && err.status === 0 && ++failures < 120) {
          await new Promise((r) => setTimeout(r, 1000));
          continue;
        }
        return apiFailure(err, o.url, o.action);
      }
      for (const l of page.lines) print(l);
      after = page.next_after;
      if (page.lines.length < PAGE && (page.ended || !follow)) break;
      if (page.lines.length > 0) idle = MIN_POLL_MS;
      if (page.lines.length < PAGE) {
        await wake.wait(idle);
        idle = Math.min(MAX_POLL_MS, idle * 2);
      }
    }
    if (!follow) return 0;
    const final = await client.getSession(id);
    const committed = resultLine(final);
    if (committed) say(committed);
    say(outcomeLine(final));
    return START_EXIT_CODES[final.status];
  } catch (err) {
    return apiFailure(err, o.url, o.action);
  } finally {
    live.abort();
  }
}
