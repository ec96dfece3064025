/**
 * Sending webhooks like Stripe: sign a body, POST it, and retry every non-2xx answer and connection error
 * with backoff. One implementation for the chaos run, the bench load generator and the emulator gateway.
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';

type Obj = Record<string, unknown>;

/** The Stripe-Signature header for `payload` (what Stripe and localstripe send: `t=…,v1=HMAC(secret, "t.payload")`). */
export function signWebhookPayload(payload: string, secret: string, timestamp = Math.floor(Date.now() / 1000)): string {
  const v1 = createHmac('sha256', secret).update(`${timestamp}.${payload}`).digest('hex');
  return `t=${timestamp},v1=${v1}`;
}

/** POSTs one signed body over `agent`; resolves with the status code (0 on a network error or timeout). */
export function postSigned(agent: http.Agent, url: URL, body: string, signature: string, timeoutMs?: number): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        ...(timeoutMs !== undefined ? { timeout: timeoutMs } : {}),
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'stripe-signature': signature },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(0));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end(body);
  });
}

/** One delivery of a signed event to a webhook endpoint; returns the status and the JSON answer. */
export async function deliverWebhook(url: string, secret: string, event: Obj): Promise<{ status: number; body: Obj }> {
  const payload = JSON.stringify(event, null, 2);
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': signWebhookPayload(payload, secret) },
    body: payload,
  });
  const text = await res.text();
  let body: Obj = {};
  try {
    body = JSON.parse(text) as Obj;
  } catch {
    body = { text };
  }
  return { status: res.status, body };
}

/** How often and how patiently {@link sendWithRetry} tries. */
export interface RetryPolicy {
  /** Wait before attempt `attempt` (0-based; attempt 0 is the first send). */
  delayMs: (attempt: number) => number;
  /** Give up after this many attempts (default: never). */
  maxAttempts?: number;
}

/** Stripe's retry schedule compressed from hours to seconds: none first, then 100 ms doubling up to 2 s. */
export const STRIPE_LIKE_BACKOFF: RetryPolicy = { delayMs: (attempt) => (attempt === 0 ? 0 : Math.min(2000, 100 * 2 ** Math.min(attempt - 1, 5))) };

/**
 * Calls `attempt(n)` (which sends once and answers the status, 0 for a connection error) until it answers
 * 2xx, waiting `policy.delayMs(n)` before each try. An error `attempt` throws ends the loop (a give-up).
 * Resolves with the last answer: 2xx, or the last failure once `maxAttempts` is used up.
 */
export async function sendWithRetry(attempt: (n: number) => Promise<number>, policy: RetryPolicy = STRIPE_LIKE_BACKOFF): Promise<{ status: number; attempts: number }> {
  const max = policy.maxAttempts ?? Number.POSITIVE_INFINITY;
  let status = 0;
  let n = 0;
  for (; n < max; n++) {
    const wait = policy.delayMs(n);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    status = await attempt(n);
    if (status >= 200 && status < 300) return { status, attempts: n + 1 };
  }
  return { status, attempts: n };
}
