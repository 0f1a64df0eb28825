/**
 * `loki audit witness …`: an independent C2SP tlog-witness (see
 * src/audit/witness.ts). It shares nothing with the dashboard server but the
 * code: its own key, its own state directory, its own process.
 *
 *   loki audit witness init   [--state DIR] [--name NAME] [--log "ORIGIN VKEY"]… [--json]
 *   loki audit witness serve  [--state DIR] [--host H] [--port P] [--log "ORIGIN VKEY"]… [--logs-file F] [--json]
 *   loki audit witness pubkey [--state DIR] [--json]
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { ALG_ED25519, NoteError, type NoteVerifier, noteVerifier } from '../audit/tlog/note';
import { Witness, type WitnessedLog } from '../audit/witness';
import { serveWitness } from '../audit/witness-server';
import {
  addWitnessedLogs,
  createWitnessKey,
  defaultWitnessName,
  fileWitnessStore,
  loadWitnessKey,
  lockStateDir,
  readWitnessedLogsFile,
  WITNESSED_LOGS_FILE,
  WitnessStateError,
} from '../audit/witness-state';
import { configOrExit } from '../node';
import { createLogger } from '../util/logger';
import { fail } from './common';

export const DEFAULT_WITNESS_PORT = 57375;

/** A closed stdout or stderr (`loki … | head`) is not an error worth a stack trace. */
let pipesQuiet = false;
function quietPipes(): void {
  if (pipesQuiet) return;
  pipesQuiet = true;
  for (const s of [process.stdout, process.stderr]) {
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') return;
      if (s !== process.stderr) fail(`cannot write output: ${err.code ?? err.message}`, 1);
    });
  }
}

function stateDir(o: { state?: string }): string {
  if (o.state) return path.resolve(o.state);
  return path.join(configOrExit().home, 'witness');
}

function parsePort(v: string): number {
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) fail(`--port must be an integer from 0 to 65535 (got "${v}")`);
  return Number(v);
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** One witnessed log: `VKEY` (the origin is the key's name) or `ORIGIN VKEY`; exits 2 on a bad one. */
export async function parseLogEntry(entry: string, where: string): Promise<WitnessedLog & { line: string }> {
  const s = entry.trim();
  const m = /^(.*\S)\s+(\S+)$/.exec(s);
  const [origin, vkey] = m ? [m[1]!, m[2]!] : [null, s];
  let v: NoteVerifier;
  try {
    v = await noteVerifier(vkey);
  } catch (err) {
    if (err instanceof NoteError) fail(`${where}: ${JSON.stringify(vkey)} is not a note verifier key (${err.message}); expected NAME+KEYID+BASE64, optionally after the origin`);
    throw err;
  }
  if (v.type !== ALG_ED25519) fail(`${where}: ${vkey} is not a log's Ed25519 note key (type 0x01)`);
  const o = origin ?? v.name;
  return { origin: o, verifiers: [v], line: `${o} ${vkey}` };
}

async function readLogsFile(file: string): Promise<WitnessedLog[]> {
  const logs: WitnessedLog[] = [];
  let lines: { line: number; text: string }[];
  try {
    lines = readWitnessedLogsFile(file);
  } catch (err) {
    stateFail(err);
  }
  for (const l of lines) logs.push(await parseLogEntry(l.text, `${file}:${l.line}`));
  return logs;
}

function stateFail(err: unknown): never {
  if (err instanceof WitnessStateError) fail(err.message, err.exitCode);
  throw err;
}

export function witnessCommands(program: Command): void {
  const audit = program.command('audit').description('audit transparency services');
  const witness = audit.command('witness').description("an independent C2SP tlog-witness that cosigns the audit log's checkpoints");

  witness
    .command('init')
    .description('create the witness key in the state directory (never replaces one) and record the logs it witnesses')
    .option('--state <dir>', 'state directory (default $LOKI_HOME/witness)')
    .option('--name <name>', 'the witness key name (default <hostname>/loki-witness)')
    .option('--log <entry>', `a log to witness, added to <state>/${WITNESSED_LOGS_FILE}: "ORIGIN VKEY", or VKEY (origin = key name); repeatable`, collect)
    .option('--json', 'print JSON')
    .action(async (o: { state?: string; name?: string; log?: string[]; json?: boolean }) => {
      quietPipes();
      const logs = [];
      for (const l of o.log ?? []) logs.push(await parseLogEntry(l, `--log ${JSON.stringify(l)}`));
      const dir = stateDir(o);
      process.umask(0o077);
      let key: Awaited<ReturnType<typeof createWitnessKey>>;
      let added: string[];
      try {
        key = await createWitnessKey(dir, o.name, defaultWitnessName(os.hostname()));
        added = addWitnessedLogs(
          dir,
          logs.map((l) => l.line),
        );
      } catch (err) {
        stateFail(err);
      }
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ state_dir: dir, key_file: key.file, created: key.created, verifier_key: key.vkey, logs_added: added })}\n`);
        return;
      }
      process.stdout.write(`${key.created ? 'created' : 'kept the existing'} witness key ${key.file}\n`);
      if (added.length > 0) process.stdout.write(`added ${added.length} log(s) to ${path.join(dir, WITNESSED_LOGS_FILE)}\n`);
      process.stdout.write(`verifier key: ${key.vkey}\n`);
    });

  witness
    .command('serve')
    .description('serve POST /add-checkpoint (c2sp.org/tlog-witness): cosign a checkpoint only when it is consistent with the last one cosigned for its log')
    .option('--state <dir>', 'state directory: key, witnessed logs, per-log state (default $LOKI_HOME/witness)')
    .option('--host <host>', 'bind address', '127.0.0.1')
    .option('--port <port>', 'port (0: any free port)', parsePort, DEFAULT_WITNESS_PORT)
    .option('--log <entry>', 'a log to witness (besides <state>/witnessed-logs): "ORIGIN VKEY", or VKEY (origin = key name); repeatable', collect)
    .option('--logs-file <file>', `logs to witness, one "ORIGIN VKEY" or "VKEY" per line (default <state>/${WITNESSED_LOGS_FILE})`)
    .option('--json', 'print the start-up line as JSON')
    .action(async (o: { state?: string; host: string; port: number; log?: string[]; logsFile?: string; json?: boolean }) => {
      quietPipes();
      const dir = stateDir(o);
      const logs: WitnessedLog[] = [];
      for (const l of o.log ?? []) logs.push(await parseLogEntry(l, `--log ${JSON.stringify(l)}`));
      const logsFile = o.logsFile ? path.resolve(o.logsFile) : path.join(dir, WITNESSED_LOGS_FILE);
      if (o.logsFile || existsSync(logsFile)) logs.push(...(await readLogsFile(logsFile)));
      if (logs.length === 0) fail(`no log to witness: give --log "ORIGIN VKEY", or list the logs in ${logsFile} (loki audit witness init --log …)`);
      process.umask(0o077);
      let key: Awaited<ReturnType<typeof loadWitnessKey>>;
      let store: ReturnType<typeof fileWitnessStore>;
      let unlock: () => void;
      try {
        key = await loadWitnessKey(dir);
        unlock = lockStateDir(dir);
      } catch (err) {
        stateFail(err);
      }
      process.once('exit', () => unlock());
      try {
        store = fileWitnessStore(dir);
      } catch (err) {
        stateFail(err);
      }
      const logger = createLogger();
      const w = await Witness.create({ skey: key.skey, logs, store });
      let running: Awaited<ReturnType<typeof serveWitness>>;
      try {
        running = await serveWitness(w, { host: o.host, port: o.port, logger });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        fail(`cannot start the witness: ${e.code === 'EADDRINUSE' ? `port ${o.port} on ${o.host} is already in use` : e.message}`, 1);
      }
      const known = w.origins.map((origin) => ({ origin, size: store.get(origin)?.size ?? 0 }));
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ url: running.url, name: w.name, verifier_key: w.vkey, state_dir: dir, logs: known })}\n`);
      } else {
        process.stdout.write(`witness ${w.name} listening on ${running.url} (verifier key ${w.vkey}; ${known.map((l) => `${l.origin} at ${l.size}`).join(', ')})\n`);
      }
      logger.info('witness started', { url: running.url, state_dir: dir, verifier_key: w.vkey, logs: known });
      const stop = (sig: NodeJS.Signals) => {
        logger.info('witness stopping', { signal: sig });
        void running.close().then(() => process.exit(0));
        setTimeout(() => process.exit(0), 2_000).unref();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });

  witness
    .command('pubkey')
    .description("print the witness's verifier key (NAME+KEYID+BASE64, type 0x04): what LOKI_AUDIT_WITNESSES and --witness-key take")
    .option('--state <dir>', 'state directory (default $LOKI_HOME/witness)')
    .option('--json', 'print JSON')
    .action(async (o: { state?: string; json?: boolean }) => {
      quietPipes();
      const dir = stateDir(o);
      let key: Awaited<ReturnType<typeof loadWitnessKey>>;
      try {
        key = await loadWitnessKey(dir);
      } catch (err) {
        stateFail(err);
      }
      const [name, keyId] = key.vkey.split('+');
      if (o.json) process.stdout.write(`${JSON.stringify({ verifier_key: key.vkey, name, key_id: keyId })}\n`);
      else process.stdout.write(`${key.vkey}\n`);
    });
}
