import type { AppContext, AppDeps } from '../context';
import type { TypedRoute } from '../define-route';
import { ErrorCode } from '../errors';
import { PAGE_CSP } from '../middleware/security-headers';
import { errorResponse } from '../respond';

const ASSET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,100}\.(?:js|css|svg|png|ico)$/;

/** The dashboard page and its static assets (no user data is ever in these files). */
export function dashboardRoutes(route: TypedRoute, deps: AppDeps): void {
  // Re-emit through the context so the security headers apply, with the page's own CSP.
  const serve = async (c: AppContext, rel: string) => {
    const res = deps.staticFiles ? await deps.staticFiles(rel) : null;
    if (!res?.ok) return errorResponse(c, 404, ErrorCode.notFound, rel === 'index.html' ? 'the dashboard is not installed' : 'no such asset');
    return c.body(await res.arrayBuffer(), 200, {
      'Content-Type': res.headers.get('content-type') ?? 'application/octet-stream',
      'Content-Security-Policy': PAGE_CSP,
      'Cache-Control': 'no-cache',
    });
  };
  route('GET', '/', (c) => serve(c, 'index.html'));
  route('GET', '/assets/:file', (c) => {
    const file = c.req.param('file') ?? '';
    if (!ASSET_NAME.test(file)) return errorResponse(c, 404, ErrorCode.notFound, 'no such asset');
    return serve(c, `assets/${file}`);
  });
}
