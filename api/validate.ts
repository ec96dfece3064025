/** Request validation helpers: strict JSON bodies and zod errors as 400 with field details. */
import type { Context } from 'hono';
import type { z } from 'zod';
import { ApiError } from './errors';

function fieldErrors(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.join('.') || '(body)', message: i.message }));
}

/** Parses a JSON body against a schema: 415 for a non-JSON content type, 400 for bad JSON or fields. */
export async function parseJsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new ApiError(415, 'unsupported_media_type', 'Content-Type must be application/json');
  }
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new ApiError(400, 'invalid_json', 'body is not valid JSON');
  }
  // Postgres text cannot hold NUL: a value with one could only make a query fail, never match.
  if (containsNul(body)) throw new ApiError(400, 'validation_error', 'request body contains a NUL character');
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new ApiError(400, 'validation_error', 'request body is invalid', fieldErrors(parsed.error));
  return parsed.data;
}

/** True if any string (value or key) in a parsed JSON value contains U+0000. */
export function containsNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (Array.isArray(value)) return value.some(containsNul);
  if (value && typeof value === 'object') return Object.entries(value).some(([k, v]) => k.includes('\u0000') || containsNul(v));
  return false;
}

/** Parses the query string against a schema: 400 with field details. */
export function parseQuery<S extends z.ZodType>(c: Context, schema: S): z.infer<S> {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw new ApiError(400, 'validation_error', 'query is invalid', fieldErrors(parsed.error));
  return parsed.data;
}

/** A time Postgres and JS agree on (1970–9999): anything else in a cursor was not issued by us. */
export function isStorableTime(d: Date): boolean {
  const t = d.getTime();
  return Number.isFinite(t) && t >= 0 && t <= Date.UTC(9999, 11, 31, 23, 59, 59);
}
