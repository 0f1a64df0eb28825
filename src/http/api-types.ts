/**
 * Call types derived from the OpenAPI document's generated types
 * (src/http/openapi-types.ts): a documented path and method, its path
 * parameters, query, JSON body and success body. Used by the typed client
 * (src/client.ts) and, through JSDoc, by the dashboard (public/assets/api.js).
 * Types only.
 */
import type { components, paths } from './openapi-types';

export type HttpMethod = 'get' | 'post' | 'delete';
/** A documented path (`/api/sessions/{id}`). */
export type ApiPath = keyof paths;
/** The documented methods of a path. */
export type ApiMethod<P extends ApiPath> = { [M in HttpMethod]-?: undefined extends paths[P][M] ? never : M }[HttpMethod];
/** The documented paths that answer a method. */
export type PathWith<M extends HttpMethod> = { [P in ApiPath]: M extends ApiMethod<P> ? P : never }[ApiPath];
type Operation<P extends ApiPath, M extends HttpMethod> = NonNullable<paths[P][M]>;
/** The path's `{name}` parameters. */
export type PathParams<P extends ApiPath, M extends HttpMethod> = Operation<P, M> extends { parameters: { path: infer T } } ? T : never;
type QueryOf<P extends ApiPath, M extends HttpMethod> = Operation<P, M> extends { parameters: { query?: infer T } } ? T : never;
/** The documented query parameters: a text parameter may be given as a number; null or empty is left out. */
export type ApiQuery<P extends ApiPath, M extends HttpMethod> = {
  [K in keyof QueryOf<P, M>]?: QueryOf<P, M>[K] | (string extends QueryOf<P, M>[K] ? number : never) | null;
};
/** The documented JSON request body. */
export type ApiBody<P extends ApiPath, M extends HttpMethod> = Operation<P, M> extends { requestBody?: { content: { 'application/json': infer T } } }
  ? T
  : never;
/** The documented JSON body of a success (200, 201, 202) response. */
export type ApiResult<P extends ApiPath, M extends HttpMethod> = Operation<P, M> extends { responses: infer R }
  ? { [S in keyof R]: S extends 200 | 201 | 202 ? (R[S] extends { content: { 'application/json': infer T } } ? T : never) : never }[keyof R]
  : never;

/** What a dashboard call passes besides its path. */
export interface CallOptions<P extends ApiPath, M extends HttpMethod> {
  params?: PathParams<P, M>;
  query?: ApiQuery<P, M>;
  body?: ApiBody<P, M>;
  signal?: AbortSignal;
}

/** A named schema of the document (`Session`, `Token`, `AuditEntry`, …). */
export type Schema<N extends keyof components['schemas']> = components['schemas'][N];
