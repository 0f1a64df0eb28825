/**
 * Builds and runs the third-party Go verifier (test/tlog-verify/main.go) against
 * Debian's golang.org/x/mod (GOPATH mode). Without Go or that package the suites
 * are skipped with the reason; with CI=true they fail instead.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'vitest';
import { runProcess } from '../helpers/process';

export const GOPATH = '/usr/share/gocode';
const SRC = path.resolve(import.meta.dirname);

function goEnv(): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: os.tmpdir(),
    GO111MODULE: 'off',
    GOPATH,
    GOCACHE: path.join(os.tmpdir(), 'loki-tlog-verify-gocache'),
    GOFLAGS: '',
  };
}

export type GoProbe = { ok: true; bin: string } | { ok: false; reason: string };

/** Build the verifier once per test file; the reason when it cannot be built. */
export async function buildVerifier(): Promise<GoProbe> {
  if (!existsSync(path.join(GOPATH, 'src/golang.org/x/mod/sumdb/tlog/tlog.go'))) {
    return { ok: false, reason: `golang.org/x/mod is not in ${GOPATH} (apt-get install golang-golang-x-mod-dev)` };
  }
  const bin = path.join(mkdtempSync(path.join(os.tmpdir(), 'loki-tlog-verify-')), 'tlog-verify');
  let r: Awaited<ReturnType<typeof runProcess>>;
  try {
    r = await runProcess('go', ['build', '-o', bin, '.'], { cwd: SRC, env: goEnv(), timeoutMs: 300_000 });
  } catch (err) {
    return { ok: false, reason: `no go toolchain (${(err as Error).message}); apt-get install golang-go` };
  }
  if (r.code !== 0) throw new Error(`go build failed: ${r.stderr}`);
  return { ok: true, bin };
}

/** Run the built verifier; `env` adds variables (TLOG_TOKEN). */
export function runVerifier(bin: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  return runProcess(bin, args, { env: { PATH: process.env.PATH ?? '', ...opts.env }, input: opts.input, timeoutMs: 120_000 });
}

/** `describe` that runs only with the Go verifier built; fails in CI without it, else skips with the reason. */
export function describeGo(name: string, probe: GoProbe, fn: (bin: string) => void): void {
  if (probe.ok) {
    describe(name, () => fn(probe.bin));
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('needs Go and golang.org/x/mod in CI', () => {
        throw new Error(probe.reason);
      });
    });
    return;
  }
  describe.skip(`${name} (skipped: ${probe.reason})`, () => {
    it('needs Go and golang.org/x/mod', () => {});
  });
}
