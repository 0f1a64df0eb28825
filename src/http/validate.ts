import { zValidator } from '@hono/zod-validator';
import type { MiddlewareHandler } from 'hono';
import { resolver, uniqueSymbol } from 'hono-openapi';
import type { z } from 'zod';
import type { AppEnv } from './context';
import { ErrorCode } from './errors';
import { errorResponse } from './respond';

type Target = 'json' | 'query' | 'param';

/** What a validator hands the handler: `c.req.valid(target)` is the schema's output. */
export type Validated<T extends Target, S extends z.ZodType> = {
  in: { [K in T]: z.input<S> };
  out: { [K in T]: z.output<S> };
};

/**
 * zod validation with the contract's error shape: 400 `validation_error`,
 * naming the field. Handlers read the typed result with `c.req.valid(target)`.
 * The middleware also carries the schema for the OpenAPI document (read once,
 * when the document is built; nothing per request).
 */
export function validate<T extends Target, S extends z.ZodType>(target: T, schema: S): MiddlewareHandler<AppEnv, string, Validated<T, S>> {
  const middleware = zValidator(target, schema, (result, c) => {
    if (!result.success) {
      const issue = result.error.issues[0];
      const where = issue?.path.length ? issue.path.join('.') : target === 'json' ? 'body' : target;
      return errorResponse(c as never, 400, ErrorCode.validation, `${where}: ${issue?.message ?? 'invalid'}`);
    }
  });
  return Object.assign(middleware, { [uniqueSymbol]: { target, ...resolver(schema) } }) as unknown as MiddlewareHandler<
    AppEnv,
    string,
    Validated<T, S>
  >;
}
