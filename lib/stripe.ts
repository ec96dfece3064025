/** The Stripe client, pinned to one API version and optionally pointed at a local emulator. */
import Stripe from 'stripe';

/**
 * The API version the client pins; payload normalizers accept older shapes too. The newest version whose
 * OpenAPI spec ships offline with stripe-mock (scripts/tools.sh pins the module; test/unit/fixtures-spec
 * validates every fixture against it). The stripe package's own 2026-10-28.endive has no offline spec.
 */
export const STRIPE_API_VERSION = '2026-08-26.dahlia' as const;

export interface StripeClientOptions {
  secretKey: string;
  apiBase?: string | undefined;
  maxNetworkRetries?: number;
  timeoutMs?: number;
}

/** Creates a Stripe client; STRIPE_API_BASE (e.g. http://127.0.0.1:12111) selects host, port and protocol. */
export function createStripe(opts: StripeClientOptions): Stripe {
  const config: Stripe.StripeConfig = {
    apiVersion: STRIPE_API_VERSION as Stripe.StripeConfig['apiVersion'],
    maxNetworkRetries: opts.maxNetworkRetries ?? 2,
    timeout: opts.timeoutMs ?? 20_000,
    appInfo: { name: 'stripe-billing-engine', version: '0.1.0' },
    telemetry: false,
  };
  if (opts.apiBase) {
    const u = new URL(opts.apiBase);
    config.protocol = u.protocol === 'https:' ? 'https' : 'http';
    config.host = u.hostname.replace(/^\[|\]$/g, '');
    config.port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  }
  return new Stripe(opts.secretKey, config);
}
