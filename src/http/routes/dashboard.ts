import type { AppDeps } from '../context';
import type { DefineRoute } from '../define-route';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';

const ASSET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,100}\.(?:js|css|svg|png|ico)$/;

/** The dashboard page and its static assets (no user data ever in these files). */
export function dashboardRoutes(route: DefineRoute, deps: AppDeps): void {
  route('GET', '/', async (c) => {
    const res = deps.staticFiles ? await deps.staticFiles('index.html') : null;
    return res ?? errorResponse(c, 404, ErrorCode.notFound, 'the dashboard is not installed');
  });
  route('GET', '/assets/:file', async (c) => {
    const file = c.req.param('file') ?? '';
    if (!ASSET_NAME.test(file)) return errorResponse(c, 404, ErrorCode.notFound, 'no such asset');
    const res = deps.staticFiles ? await deps.staticFiles(`assets/${file}`) : null;
    return res ?? errorResponse(c, 404, ErrorCode.notFound, 'no such asset');
  });
}
