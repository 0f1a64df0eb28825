import type { AppContext } from '../context';

/**
 * A synchronous middleware step: it may set variables and headers, and it
 * answers with a Response to stop the request there.
 */
export type Step = (c: AppContext) => Response | undefined;

/** Run steps in order; the first Response ends the run. */
export function runSteps(c: AppContext, list: readonly Step[]): Response | undefined {
  for (const step of list) {
    const res = step(c);
    if (res) return res;
  }
  return undefined;
}
