/**
 * The signature of outgoing app webhooks: header `Billing-Signature: t=<unix>,v1=<hex>`, where v1 is
 * HMAC-SHA256 of `<t>.<raw body>` keyed by APP_WEBHOOK_SECRET (Stripe's scheme, so apps know it).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** The header carrying the signature. */
export const APP_WEBHOOK_SIGNATURE_HEADER = 'Billing-Signature';
/** The header carrying the event id (also in the body): the app dedups on it. */
export const APP_WEBHOOK_EVENT_ID_HEADER = 'Billing-Event-Id';
/** Default age (either way) past which verifyAppWebhook refuses a signature. */
export const APP_WEBHOOK_TOLERANCE_SEC = 300;

const hmacHex = (secret: string, timestampSec: number, body: string): string =>
  createHmac('sha256', secret).update(`${timestampSec}.${body}`, 'utf8').digest('hex');

/** The `Billing-Signature` value of `body` signed at `timestampSec`: `t=<unix>,v1=<hex HMAC-SHA256>`. */
export function signAppWebhook(body: string, secret: string, timestampSec: number): string {
  if (!Number.isSafeInteger(timestampSec) || timestampSec < 0) throw new RangeError('timestampSec must be a non-negative integer');
  return `t=${timestampSec},v1=${hmacHex(secret, timestampSec, body)}`;
}

/**
 * True when `header` holds a v1 signature of `body` by `secret` (any of several v1 entries, for
 * rotation) whose timestamp is within `toleranceSec` of now in either direction. Constant-time compare.
 */
export function verifyAppWebhook(
  body: string,
  header: string,
  secret: string,
  opts: { toleranceSec?: number; nowSec?: number } = {},
): boolean {
  let timestamp: number | null = null;
  const candidates: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't') {
      // Two timestamps would let a signer of one replay under the other: refuse the header.
      if (timestamp !== null || !/^\d{1,12}$/.test(value)) return false;
      timestamp = Number(value);
    } else if (key === 'v1' && /^[0-9a-f]{64}$/i.test(value)) {
      candidates.push(value.toLowerCase());
    }
  }
  if (timestamp === null || candidates.length === 0) return false;
  const tolerance = opts.toleranceSec ?? APP_WEBHOOK_TOLERANCE_SEC;
  const now = opts.nowSec ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > tolerance) return false;
  const expected = Buffer.from(hmacHex(secret, timestamp, body), 'hex');
  // Every candidate is compared (no early exit), so the time taken says nothing about which matched.
  let ok = false;
  for (const c of candidates) ok = timingSafeEqual(expected, Buffer.from(c, 'hex')) || ok;
  return ok;
}
