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

/** gRPC status codes of Temporal calls that mean "the service is not there right now": retry later. */
const TRANSIENT_GRPC = new Set([1 /* CANCELLED */, 2 /* UNKNOWN */, 4 /* DEADLINE_EXCEEDED */, 8 /* RESOURCE_EXHAUSTED */, 14 /* UNAVAILABLE */]);

/** The gRPC status of a failed Temporal call (the error or its cause), if it has one. */
export function grpcCodeOf(err: unknown): number | null {
  for (let e: unknown = err, depth = 0; e && depth < 3; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'number') return code;
  }
  return null;
}

/**
 * The HTTP error for a failed Temporal call: unreachable or overloaded → 503 (`retry` tells what to do);
 * INVALID_ARGUMENT / FAILED_PRECONDITION / OUT_OF_RANGE (the server refused this request: retrying it
 * will not help) → 422 temporal_rejected; anything else is not ours to explain → rethrown (500, logged).
 */
export function temporalCallError(err: unknown, retry: string): never {
  const code = grpcCodeOf(err);
  if (code === null || TRANSIENT_GRPC.has(code)) throw new ApiError(503, 'temporal_unavailable', `the workflow service is unreachable; ${retry}`);
  if (code === 3 || code === 9 || code === 11) {
    const message = err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
    throw new ApiError(422, 'temporal_rejected', `the workflow service refused the request: ${message}`);
  }
  throw err;
}
