import type { Hono } from 'hono';
import type { AppContext, AppDeps, AppEnv } from '../context';
import type { TypedRoute } from '../define-route';

export function systemRoutes(app: Hono<AppEnv>, route: TypedRoute, deps: AppDeps): void {
  const now = deps.now ?? Date.now;
  // A load balancer's check: the database must answer (within 2 s), else 503.
  route('GET', '/health', async (c) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const up = await Promise.race([
      deps.store.ping().then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(false), 2_000);
      }),
    ]);
    clearTimeout(timer);
    if (!up) return c.json({ status: 'unhealthy', service: 'loki-dashboard', database: 'down' }, 503);
    return c.json({ status: 'healthy', service: 'loki-dashboard' });
  });

  route('GET', '/api/enterprise/status', (c) =>
    c.json({
      auth_enabled: deps.config.enterpriseAuth || deps.config.oidc !== null,
      oidc_enabled: deps.config.oidc !== null,
      audit_enabled: deps.audit.enabled,
      sandbox_enabled: deps.config.sandboxMode,
    }),
  );

  const status = async (c: AppContext) => {
    const [sessions, tip] = await Promise.all([deps.store.sessions.counts(), deps.audit.enabled ? deps.audit.tip() : null]);
    return c.json({
      status: 'running',
      service: 'loki-dashboard',
      version: deps.version,
      uptime_seconds: Math.floor((now() - deps.startedAt) / 1000),
      runtime: deps.store.kind === 'd1' ? 'workers' : 'node',
      flags: {
        auth_enabled: deps.config.enterpriseAuth || deps.config.oidc !== null,
        oidc_enabled: deps.config.oidc !== null,
        audit_enabled: deps.audit.enabled,
        sandbox_mode: deps.config.sandboxMode,
        branch_protection: deps.config.branchProtection,
        env: deps.config.env,
      },
      sessions: { total: Object.values(sessions).reduce((a, b) => a + b, 0), by_status: sessions },
      audit: tip ? { seq: tip.seq, head_hash: tip.hash, ...deps.audit.stats() } : null,
      streams: { listeners: deps.events.listenerCount, ...deps.events.connections },
      ...(deps.statusExtras?.() ?? {}),
    });
  };
  route('GET', '/api/status', status);
  route('GET', '/status', status);
  void app;
}
