/** One JSON error shape for every route: { error: code, message, details? }. No stacks, no SQL. */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { Logger } from '../lib/logger';

export interface ErrorBody {
  error: string;
  message: string;
  details?: unknown;
}

/** An error with an HTTP status and a stable machine-readable code. */
export class ApiError extends HTTPException {
  constructor(
    status: 400 | 401 | 403 | 404 | 409 | 413 | 415 | 422 | 429 | 503,
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
    const code = err.status === 413 ? 'payload_too_large' : err.status === 404 ? 'not_found' : 'http_error';
    return c.json({ error: code, message: err.message || 'request failed' }, err.status);
  }
  logger.error({ err: { message: err.message, name: err.name }, requestId: c.get('requestId' as never) }, 'unhandled error');
  return c.json({ error: 'internal_error', message: 'internal error' }, 500);
}
