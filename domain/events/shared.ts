import { z } from 'zod';
import type { BillingEventData } from '../billing-event';

/** What a handler may read besides `data.object`. */
export interface HandlerContext {
  readonly type: string;
  readonly previousAttributes: Readonly<Record<string, unknown>> | null;
}

/** A handler's view of one Stripe object: whom it concerns, what it is, and the slim data. */
export interface HandledObject {
  customerId: string | null;
  objectId: string;
  data: BillingEventData;
}

/** Outcome of one handler: the slim object, or a readable schema error. */
export type HandlerResult = { ok: true; value: HandledObject } | { ok: false; error: string };

/** Parses `data.object` of one Stripe event type and maps it to `BillingEventData`. */
export type EventHandler = (object: unknown, context: HandlerContext) => HandlerResult;

/** Binds a lenient object schema to its mapping; schema failures become readable errors. */
export function defineHandler<S extends z.ZodType>(
  schema: S,
  map: (object: z.output<S>, context: HandlerContext) => HandledObject,
): EventHandler {
  return (object, context) => {
    const parsed = schema.safeParse(object);
    if (!parsed.success) return { ok: false, error: formatIssues(parsed.error, 'data.object') };
    return { ok: true, value: map(parsed.data, context) };
  };
}

/** Renders zod issues as `path: message; …`, paths rooted at `prefix`. */
export function formatIssues(error: z.ZodError, prefix?: string): string {
  return error.issues
    .map((issue) => {
      const path = [...(prefix ? [prefix] : []), ...issue.path.map(String)].join('.');
      return `${path || '(root)'}: ${issue.message}`;
    })
    .join('; ');
}

/** Unix seconds, absent or null in some API versions. */
export const TimestampSchema = z.number().int().nullish();

/** A reference Stripe may send as an id or as the expanded object. */
export const IdRefSchema = z.union([z.string(), z.looseObject({ id: z.string() })]);

/** Id of a string-or-expanded reference; null for absent, empty, or unexpected values. */
export function idOf(ref: unknown): string | null {
  if (typeof ref === 'string') return ref === '' ? null : ref;
  if (isRecord(ref) && typeof ref.id === 'string' && ref.id !== '') return ref.id;
  return null;
}

/** True for a plain (non-array) object. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Own-property check, immune to keys inherited from (or injected into) prototypes. */
export function hasOwn(value: unknown, key: string): boolean {
  return isRecord(value) && Object.prototype.hasOwnProperty.call(value, key);
}

/**
 * For fields read opportunistically (decline details, payment intents): a malformed value
 * becomes null instead of rejecting an otherwise valid billing event.
 */
export function lenient<S extends z.ZodType>(schema: S) {
  return schema.nullish().catch(null);
}

/** `undefined` → `null`, the null-not-undefined convention of BillingEventData. */
export function orNull<T>(value: T | null | undefined): T | null {
  return value ?? null;
}
