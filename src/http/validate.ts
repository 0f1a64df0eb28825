import { zValidator } from '@hono/zod-validator';
import type { MiddlewareHandler } from 'hono';
import type { ZodType } from 'zod';
import type { AppEnv } from './context';
import { ErrorCode } from './errors';
import { errorResponse } from './respond';

/**
 * zod validation with the contract's error shape: 400 `validation_error`,
 * naming the field. Handlers read the result with `c.req.valid(target)`.
 */
export function validate<T extends ZodType>(target: 'json' | 'query' | 'param', schema: T): MiddlewareHandler<AppEnv> {
  return zValidator(target, schema, (result, c) => {
    if (!result.success) {
      const issue = result.error.issues[0];
      const where = issue?.path.length ? issue.path.join('.') : target === 'json' ? 'body' : target;
      return errorResponse(c as never, 400, ErrorCode.validation, `${where}: ${issue?.message ?? 'invalid'}`);
    }
  }) as unknown as MiddlewareHandler<AppEnv>;
}
