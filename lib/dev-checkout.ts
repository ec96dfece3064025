/**
 * Dev checkout on the local Stripe emulators: "the customer pays on Stripe's hosted page", done by the
 * emulator gateway (scripts/emulator-gateway.ts, POST /_gateway/checkout/sessions/:id/complete: card
 * attached, subscription created on localstripe, signed checkout.session.completed sent to us).
 * Shared by the API's dev page (api/routes/dev-checkout.ts) and the demo (scripts/demo-steps.ts).
 * NEVER in production: devCheckoutEnabled is false there, and api/app.ts mounts nothing then.
 */
import type { Config } from './config';

/** The emulator's always-succeeding test card (localstripe; Stripe test mode knows it too). */
export const DEV_TEST_PAYMENT_METHOD = 'pm_card_visa';

/**
 * Whether the dev checkout page is served and POST /checkout answers its URL: only with
 * NODE_ENV=development, a Stripe emulator (STRIPE_API_BASE) and no live key. Never in production; not
 * under NODE_ENV=test either, where the API's contract (Stripe's own session URL, the documented
 * route set) is what the tests check.
 */
export function devCheckoutEnabled(config: Pick<Config, 'NODE_ENV' | 'STRIPE_API_BASE' | 'STRIPE_SECRET_KEY'>): boolean {
  return config.NODE_ENV === 'development' && Boolean(config.STRIPE_API_BASE) && !/^(sk|rk)_live_/.test(config.STRIPE_SECRET_KEY);
}

/** The dev checkout page of a session, under this API's public base URL. */
export function devCheckoutPageUrl(publicBaseUrl: string, sessionId: string): string {
  return `${publicBaseUrl.replace(/\/+$/, '')}/dev/checkout/${encodeURIComponent(sessionId)}`;
}

/** Where Stripe sends the customer after paying: success_url with its {CHECKOUT_SESSION_ID} placeholder filled. */
export function successRedirectUrl(successUrl: string, sessionId: string): string {
  return successUrl.split('{CHECKOUT_SESSION_ID}').join(encodeURIComponent(sessionId));
}

/** A completed session, as the emulator gateway answers it. */
export interface CompletedCheckout {
  id: string;
  status: string;
  customer: string;
  subscription: string | null;
  success_url: string | null;
  payment_method: string;
}

/** The emulator refused or could not complete the session; `status` is its HTTP status (0: unreachable). */
export class EmulatorCheckoutError extends Error {
  constructor(
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'EmulatorCheckoutError';
  }
}

/**
 * Pays an open checkout session on the emulator gateway at `apiBase` with a test card. Real webhooks
 * follow (localstripe's customer.subscription.created, invoice events; the gateway's
 * checkout.session.completed). Throws EmulatorCheckoutError when the emulator cannot (stripe-mock has
 * no such endpoint: 404; a session already paid: 400).
 */
export async function completeEmulatorCheckout(opts: {
  apiBase: string;
  secretKey: string;
  sessionId: string;
  paymentMethod?: string;
  timeoutMs?: number;
}): Promise<CompletedCheckout> {
  const url = `${opts.apiBase.replace(/\/+$/, '')}/_gateway/checkout/sessions/${encodeURIComponent(opts.sessionId)}/complete`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${opts.secretKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ payment_method: opts.paymentMethod ?? DEV_TEST_PAYMENT_METHOD }),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000),
    });
  } catch (err) {
    throw new EmulatorCheckoutError(0, `the Stripe emulator at ${opts.apiBase} is unreachable: ${(err as Error).message}`, { cause: err });
  }
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = {};
  }
  if (!res.ok) {
    const error = body.error as { message?: string } | undefined;
    throw new EmulatorCheckoutError(res.status, error?.message ?? (text.slice(0, 200) || `HTTP ${res.status}`));
  }
  return body as unknown as CompletedCheckout;
}
