/**
 * Node entry: parse the environment, serve, handle signals.
 * SIGTERM/SIGINT: stop the embedded sandbox worker (src/embedded-worker.ts) and
 * revoke its token, stop accepting, end streams, let in-flight requests finish
 * (LOKI_SHUTDOWN_TIMEOUT_MS), write a shutdown checkpoint, close the database,
 * exit 0. A second signal exits 130 at once.
 */
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { EmbeddedWorkerError } from './embedded-worker';
import { ConfigError, checkBind, type Config, loadConfig, readProcessEnv } from './env';
import { loadOperatorPolicy, type OperatorPolicy, PolicyFileError } from './sandbox/session-policy';
import { startServer } from './server';
import { TlsSetupError } from './tls';
import { createLogger } from './util/logger';

/** Parse configuration or exit 2 with one line naming the variable. */
export function configOrExit(overrides: Record<string, string | undefined> = {}): Config {
  try {
    const env = { ...readProcessEnv() };
    for (const [k, v] of Object.entries(overrides)) if (v !== undefined) env[k] = v;
    const config = loadConfig(env, { home: os.homedir(), cwd: process.cwd() });
    return config;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`loki: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** Load the operator's sandbox policy or exit 2 with one line naming the file and the key. */
export function policyOrExit(config: Config): OperatorPolicy {
  try {
    return loadOperatorPolicy(config.policyFile, { allowHostSessions: config.allowHostSessions });
  } catch (err) {
    if (err instanceof PolicyFileError) {
      process.stderr.write(`loki: invalid operator policy: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

export async function runDashboard(overrides: { host?: string; port?: string } = {}): Promise<void> {
  const config = configOrExit({ LOKI_DASHBOARD_HOST: overrides.host, LOKI_DASHBOARD_PORT: overrides.port });
  try {
    checkBind(config);
  } catch (err) {
    process.stderr.write(`loki: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const operatorPolicy = policyOrExit(config);
  process.umask(0o077);
  const logger = createLogger();
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config, { logger, operatorPolicy, embeddedWorker: true });
  } catch (err) {
    if (err instanceof EmbeddedWorkerError || err instanceof TlsSetupError) {
      process.stderr.write(`loki: ${err.message}\n`);
      process.exit(2);
    }
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EADDRINUSE' ? `port ${config.port} on ${config.host} is already in use` : e.message;
    process.stderr.write(`loki: cannot start the dashboard: ${why}\n`);
    process.exit(1);
  }
  logger.info('loki dashboard listening', {
    url: server.url,
    policy: operatorPolicy.source ?? 'built-in defaults (no policy file)',
    host_sessions: operatorPolicy.hostSessions,
    db: config.dbPath,
    auth: config.enterpriseAuth || config.oidc !== null,
    audit: config.auditEnabled,
    embedded_worker: server.runtime.embeddedWorker.status().state,
  });
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      process.stderr.write(`loki: second ${sig}, exiting now\n`);
      process.exit(130);
    }
    logger.info('shutting down', { signal: sig, deadline_ms: config.shutdownTimeoutMs });
    server
      .stop()
      .then(() => {
        logger.info('shutdown complete; database closed');
        process.exit(0);
      })
      .catch((err) => {
        logger.error('shutdown failed', { err: String(err) });
        process.exit(1);
      });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void runDashboard();
}
