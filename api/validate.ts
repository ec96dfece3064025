/**
 * Request validation for the OpenAPI routes: every route module builds its app with createRouter(),
 * whose defaultHook turns a failed zod check into the one error shape (400 validation_error, one plain
 * message per field), and JSON routes put jsonBody() first so content type, JSON syntax and NUL are
 * checked before the schema (415 unsupported_media_type, 400 invalid_json).
 */
import { OpenAPIHono, z, type Hook } from '@hono/zod-openapi';
import type { Env, MiddlewareHandler } from 'hono';
import { ApiError } from './errors';

/** One invalid field: its dotted path and one plain sentence. */
export interface FieldError {
  path: string;
  message: string;
}

type Issue = z.core.$ZodIssue;

/** zod's own wording ("Invalid input: expected string, received undefined"); messages a schema sets are kept. */
const ZOD_WORDING = /^(Invalid|Too (small|big)|Unrecognized key|Expected)/;

const article = (type: string) => (/^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`);

function plainMessage(issue: Issue, field: string, missing: boolean): string {
  if (issue.code === 'invalid_type' && missing) return `${field} is required`;
  if (!ZOD_WORDING.test(issue.message)) return issue.message;
  switch (issue.code) {
    case 'invalid_type':
      return `${field} must be ${article(issue.expected === 'int' ? 'integer' : issue.expected)}`;
    case 'too_small': {
      const n = Number(issue.minimum);
      if (issue.origin === 'string') return n <= 1 ? `${field} must not be empty` : `${field} must be at least ${n} characters`;
      if (issue.origin === 'array' || issue.origin === 'set') return `${field} must have at least ${n} items`;
      return issue.inclusive === false ? `${field} must be greater than ${n}` : `${field} must be at least ${n}`;
    }
    case 'too_big': {
      const n = Number(issue.maximum);
      if (issue.origin === 'string') return `${field} must be at most ${n} characters`;
      if (issue.origin === 'array' || issue.origin === 'set') return `${field} must have at most ${n} items`;
      return issue.inclusive === false ? `${field} must be less than ${n}` : `${field} must be at most ${n}`;
    }
    case 'invalid_value':
      return `${field} must be one of: ${issue.values.map(String).join(', ')}`;
    case 'invalid_format':
      return issue.format === 'regex' ? `${field} has an invalid format` : `${field} must be a valid ${issue.format}`;
    case 'not_multiple_of':
      return `${field} must be a multiple of ${String(issue.divisor)}`;
    default:
      return `${field} is invalid`;
  }
}

/** The value at a path of the parsed input (undefined when absent). */
function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let v = input;
  for (const key of path) v = v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[key] : undefined;
  return v;
}

/** One plain message per invalid field; an unknown field is named as such; `input` tells a missing field from a wrong one. */
export function fieldErrors(error: z.ZodError, input?: unknown): FieldError[] {
  const out: FieldError[] = [];
  for (const issue of error.issues) {
    const at = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: at ? `${at}.${key}` : key, message: `${key} is not a known field` });
      continue;
    }
    out.push({ path: at || '(body)', message: plainMessage(issue, at || 'the body', input !== undefined && issue.path.length > 0 && valueAt(input, issue.path) === undefined) });
  }
  return out;
}

/** Path parameters with their own error code (a malformed id is not a validation_error today). */
const PARAM_ERRORS: Record<string, [code: string, message: string]> = {
  customerId: ['invalid_customer_id', 'customerId must look like cus_…'],
  sessionId: ['invalid_session_id', 'sessionId must look like cs_…'],
};

/** The ApiError for a failed check of one request part. */
export function validationError(target: string, error: z.ZodError, input?: unknown): ApiError {
  if (target === 'param') {
    const known = PARAM_ERRORS[String(error.issues[0]?.path[0])];
    if (known) return new ApiError(400, known[0], known[1]);
    return new ApiError(400, 'validation_error', 'path is invalid', fieldErrors(error, input));
  }
  if (target === 'json') return new ApiError(400, 'validation_error', 'request body is invalid', fieldErrors(error, input));
  if (target === 'query') return new ApiError(400, 'validation_error', 'query is invalid', fieldErrors(error, input));
  return new ApiError(400, 'validation_error', `${target} is invalid`, fieldErrors(error, input));
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const defaultHook: Hook<any, any, any, any> = (result) => {
  // On failure `data` is the raw input the schema was given.
  if (!result.success) throw validationError(result.target, result.error, (result as { data?: unknown }).data);
};

/** An OpenAPIHono whose validation failures are thrown as ApiError (rendered by the app's onError). */
export function createRouter<E extends Env = Env>(): OpenAPIHono<E> {
  return new OpenAPIHono<E>({ defaultHook });
}

/**
 * Route middleware of every JSON-body route: 415 for a non-JSON content type, 400 invalid_json for bad
 * JSON, 400 validation_error for a NUL anywhere. The parsed body is cached, so the validator reuses it.
 * `optional`: a request without a Content-Type has no body (the validator then sees `{}`).
 */
export function jsonBody(opts: { optional?: boolean } = {}): MiddlewareHandler {
  return async (c, next) => {
    const type = c.req.header('content-type');
    if (opts.optional && !type) return next();
    if (!/^application\/json\s*(;|$)/i.test(type ?? '')) {
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
    return next();
  };
}

/** True if any string (value or key) in a parsed JSON value contains U+0000. */
export function containsNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (Array.isArray(value)) return value.some(containsNul);
  if (value && typeof value === 'object') return Object.entries(value).some(([k, v]) => k.includes('\u0000') || containsNul(v));
  return false;
}

/** A time Postgres and JS agree on (1970–9999): anything else in a cursor was not issued by us. */
export function isStorableTime(d: Date): boolean {
  const t = d.getTime();
  return Number.isFinite(t) && t >= 0 && t <= Date.UTC(9999, 11, 31, 23, 59, 59);
}

/** ISO 8601 timestamps in response schemas. */
export const IsoTimeSchema = z.string().describe('ISO 8601 timestamp');

/** A JSON response of the document. */
export const jsonResponse = <S extends z.ZodType>(schema: S, description: string) => ({ description, content: { 'application/json': { schema } } });
