/**
 * The card-update link in customer emails: a stable URL, `<PUBLIC_BASE_URL>/billing/card-update/<token>`,
 * that opens a fresh Stripe Billing Portal session each time it is followed (a portal session URL
 * itself expires within minutes, so it cannot go into an email). The token names the customer and is
 * signed with HMAC-SHA256 (LINK_SIGNING_SECRET, else a key derived from the webhook secret), so a link
 * cannot be forged for another customer.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { publicBaseUrl, webhookSecrets, type Config } from './config';

type LinkConfig = Pick<Config, 'LINK_SIGNING_SECRET' | 'STRIPE_WEBHOOK_SECRET' | 'PUBLIC_BASE_URL' | 'PORT'>;

function signingKey(config: LinkConfig): string {
  if (config.LINK_SIGNING_SECRET) return config.LINK_SIGNING_SECRET;
  // Derived, never the webhook secret itself: a leaked link key must not let anyone sign webhooks.
  const base = webhookSecrets(config)[0] ?? '';
  return createHmac('sha256', base).update('billing-engine:card-update-link:v1').digest('hex');
}

function mac(customerId: string, key: string): string {
  return createHmac('sha256', key).update(`card-update:${customerId}`).digest('base64url').slice(0, 32);
}

/** The signed token of a customer's card-update link. */
export function cardUpdateToken(customerId: string, config: LinkConfig): string {
  return `${Buffer.from(customerId, 'utf8').toString('base64url')}.${mac(customerId, signingKey(config))}`;
}

/** The customer a token stands for, or null when it is malformed or its signature does not match. */
export function verifyCardUpdateToken(token: string, config: LinkConfig): string | null {
  const m = /^([A-Za-z0-9_-]{1,128})\.([A-Za-z0-9_-]{32})$/.exec(token);
  if (!m) return null;
  const customerId = Buffer.from(m[1]!, 'base64url').toString('utf8');
  if (!/^cus_[A-Za-z0-9_]+$/.test(customerId)) return null;
  const expected = Buffer.from(mac(customerId, signingKey(config)));
  const given = Buffer.from(m[2]!);
  return expected.length === given.length && timingSafeEqual(expected, given) ? customerId : null;
}

/** The stable card-update URL of a customer, for emails. */
export function cardUpdateUrl(customerId: string, config: LinkConfig): string {
  return `${publicBaseUrl(config)}/billing/card-update/${cardUpdateToken(customerId, config)}`;
}
