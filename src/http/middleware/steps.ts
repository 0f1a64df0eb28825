import type { MiddlewareHandler } from 'hono';
import type { AppContext, AppEnv } from '../context';

/**
 * A synchronous middleware step: it may set variables and headers, and it
 * answers with a Response to stop the request there.
 */
export type Step = (c: AppContext) => Response | undefined;

/**
 * Run several steps as one middleware: checks that need no I/O cost one
 * dispatch (one await) together instead of one each.
 */
export function steps(...list: Step[]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    for (const step of list) {
      const res = step(c);
      if (res) return res;
    }
    await next();
  };
}
