/** One JSON error shape for every route: { error: code, message, details? }. No stacks, no SQL. */
import { z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { Logger } from '../lib/logger';
import { grpcCodeOf, isTransientTemporalError } from '../lib/temporal';

export interface ErrorBody {
  error: string;
  message: string;
  details?: unknown;
}

/** The error shape as the OpenAPI document shows it (component `Error`). */
export const ErrorBodySchema = z
  .object({
    error: z.string().describe('Stable machine-readable code, e.g. validation_error, unauthorized, not_found'),
    message: z.string().describe('Human-readable explanation; never a stack trace or SQL'),
    details: z.unknown().optional().describe('For validation_error: a list of { path, message } per invalid field'),
  })
  .openapi('Error');

/** A documented response whose body is the error shape. */
export const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: ErrorBodySchema } } });

/** 413 and 500, which every route can answer. */
export const commonErrors = {
  413: errorResponse('Body larger than the route’s limit (payload_too_large)'),
  500: errorResponse('Unexpected failure (internal_error); details are only in the server log, keyed by X-Request-Id'),
};

/** 401, 403 and 404 of the admin bearer guard (api/auth.ts). */
export const adminAuthErrors = {
  401: errorResponse('No `Authorization: Bearer` header (unauthorized)'),
  403: errorResponse('Wrong admin token (forbidden)'),
  404: errorResponse('Admin API disabled because ADMIN_TOKEN is not set, or the resource does not exist'),
};

/** 401 and 403 of the app API token guard (only when API_TOKEN is set). */
export const apiAuthErrors = {
  401: errorResponse('API_TOKEN is set and no bearer token was given (unauthorized)'),
  403: errorResponse('Wrong API token (forbidden)'),
};

/** 400 and 415 of a JSON body (api/validate.ts jsonBody and the route's schema). */
export const jsonBodyErrors = {
  400: errorResponse('Body is not valid JSON (invalid_json) or fails the schema (validation_error, with details: one { path, message } per field; unknown fields are rejected)'),
  415: errorResponse('Content-Type is not application/json (unsupported_media_type)'),
};

/** Security requirements of the admin and app-facing routes (schemes registered in api/app.ts). */
export const adminSecurity = [{ adminToken: [] as string[] }];
export const apiSecurity = [{ apiToken: [] as string[] }];

/** An error with an HTTP status and a stable machine-readable code. */
export class ApiError extends HTTPException {
  constructor(
    status: 400 | 401 | 403 | 404 | 405 | 409 | 413 | 415 | 422 | 429 | 503,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(status, { message });
  }
}

/** Renders any thrown error as the JSON error shape; unknown errors become an opaque 500. */
export function renderError(err: Error, c: Context, logger: Logger): Response {
  if (err instanceof ApiError) {
    const body: ErrorBody = { error: err.code, message: err.message };
    if (err.details !== undefined) body.details = err.details;
    return c.json(body, err.status);
  }
  if (err instanceof HTTPException) {
    const code = err.status === 413 ? 'payload_too_large' : err.status === 404 ? 'not_found' : err.status === 415 ? 'unsupported_media_type' : 'http_error';
    return c.json({ error: code, message: err.message || 'request failed' }, err.status);
  }
  logger.error({ err: { message: err.message, name: err.name }, requestId: c.get('requestId' as never) }, 'unhandled error');
  return c.json({ error: 'internal_error', message: 'internal error' }, 500);
}

export { grpcCodeOf };

/**
 * The HTTP error for a failed Temporal call: unreachable or overloaded → 503 (`retry` tells what to do);
 * INVALID_ARGUMENT / FAILED_PRECONDITION / OUT_OF_RANGE (the server refused this request: retrying it
 * will not help) → 422 temporal_rejected; anything else is not ours to explain → rethrown (500, logged).
 */
export function temporalCallError(err: unknown, retry: string): never {
  const code = grpcCodeOf(err);
  if (isTransientTemporalError(err)) throw new ApiError(503, 'temporal_unavailable', `the workflow service is unreachable; ${retry}`);
  if (code === 3 || code === 9 || code === 11) {
    const message = err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
    throw new ApiError(422, 'temporal_rejected', `the workflow service refused the request: ${message}`);
  }
  throw err;
}
