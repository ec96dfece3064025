/**
 * Making a verified Stripe payload storable and routable: jsonb-safe strings, the truncated copy of an
 * oversized payload, plausibility of the ids and times the inbox keys on, and log fields of an event
 * that is not routed. Pure helpers of api/ingest.ts.
 */
import Stripe from 'stripe';
import type { NormalizeResult } from '../domain/events';

/** A parsed webhook envelope. */
export type Envelope = Record<string, unknown>;

/** A normalize result, or: cannot be routed yet because Stripe did not answer a lookup (retry later). */
export type Normalized = NormalizeResult | { outcome: 'deferred'; error: string; eventId: string | null; type: string };

const JSONB_UNSAFE = /[\u0000\ud800-\udfff]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** jsonb rejects NUL and unpaired UTF-16 surrogates (a `\ud800` escape is valid JSON): drop / replace them. */
function jsonbSafeString(s: string): string {
  return JSONB_UNSAFE.test(s) ? s.replace(/\u0000/g, '').replace(LONE_SURROGATE, '\ufffd') : s;
}

/**
 * Whether a payload parsed from this raw JSON text can hold what `sanitizeForJsonb` removes: a NUL or
 * a UTF-16 surrogate can only come from a `\u` escape (raw text decoded from UTF-8 has neither), and a
 * polluting key only from its quoted name. False for nearly every real event: no deep copy needed.
 */
export function mayNeedSanitizing(rawText: string): boolean {
  return /\\u0000|\\u[dD][89a-fA-F]|"(?:__proto__|constructor|prototype)"/.test(rawText);
}

/** Makes a parsed payload storable as jsonb (no NUL, no lone surrogates) and drops prototype-polluting keys. */
export function sanitizeForJsonb(value: unknown): unknown {
  if (typeof value === 'string') return jsonbSafeString(value);
  if (Array.isArray(value)) return value.map(sanitizeForJsonb);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === '__proto__' || k === 'constructor' || k === 'prototype') continue;
      out[jsonbSafeString(k)] = sanitizeForJsonb(v);
    }
    return out;
  }
  return value;
}

export function truncatedPayload(env: Envelope, rawBytes: number): Envelope {
  const data = (env.data && typeof env.data === 'object' ? env.data : {}) as Envelope;
  const obj = (data.object && typeof data.object === 'object' ? data.object : {}) as Envelope;
  return {
    id: env.id,
    type: env.type,
    created: env.created,
    api_version: env.api_version,
    livemode: env.livemode,
    data: { object: { id: obj.id, object: obj.object, customer: obj.customer } },
    truncated_from_bytes: rawBytes,
  };
}

/**
 * Correlation ids of an event that is not routed to a workflow (ignored, failed, lookup): the
 * customer if its object names one, and a null workflowId, so every event log line has all three keys.
 */
export function unroutedLogFields(envelope: Envelope): { eventId: unknown; customerId: string | null; workflowId: null } {
  const obj = ((envelope.data as Envelope | undefined)?.object ?? {}) as Envelope;
  const customer = typeof obj.customer === 'string' ? obj.customer : obj.object === 'customer' && typeof obj.id === 'string' ? obj.id : null;
  return { eventId: envelope.id, customerId: customer, workflowId: null };
}

/**
 * Stripe ids are short printable ASCII (`cus_…`, `sub_…`). Anything else cannot be a btree key (too
 * long), a Postgres text (NUL) or a Temporal workflow id / search attribute (invalid UTF-8, over 1,000 chars).
 */
const PLAUSIBLE_ID = /^[\x21-\x7e]{1,255}$/;
/** 9999-12-31T23:59:59Z, the last second Postgres and JS dates agree on. */
const LATEST_UNIX_SECONDS = 253_402_300_799;

export const plausibleUnix = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= LATEST_UNIX_SECONDS;
export const stripNul = (s: string) => (s.includes('\u0000') ? s.replace(/\u0000/g, '') : s);

/** Stripe said the object does not exist (404 / resource_missing); anything else may succeed later. */
export function missingAtStripe(err: unknown): boolean {
  return err instanceof Stripe.errors.StripeError && (err.statusCode === 404 || err.code === 'resource_missing');
}

/** A verified event whose ids or time cannot be stored or routed is recorded as failed instead of dispatched. */
export function implausible(result: Normalized): Normalized {
  if (result.outcome !== 'handled') return result;
  const e = result.event;
  const badId = (id: string) => !PLAUSIBLE_ID.test(id);
  const error = badId(e.customerId)
    ? 'customer id is not a plausible Stripe id'
    : badId(e.objectId)
      ? 'object id is not a plausible Stripe id'
      : !plausibleUnix(e.created)
        ? 'created is not a plausible unix time'
        : null;
  return error ? { outcome: 'invalid', error, eventId: e.eventId, type: e.type } : result;
}

