/** The Stripe webhook fixtures (test/fixtures/events/*.json): ids, loaders, per-test re-keying. Shared by test/ and scripts/. */
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

/** Where the Stripe event fixtures live (JSON data, read from disk: nothing here imports test/). */
export const FIXTURE_EVENTS_DIR = join(__dirname, '..', 'test', 'fixtures', 'events');

/** The customer of every fixture in test/fixtures/events. */
export const FIXTURE_CUSTOMER_ID = 'cus_FixtureCustomer01';
/** The subscription of the subscription, invoice and checkout fixtures. */
export const FIXTURE_SUBSCRIPTION_ID = 'sub_Fixture01';
/** Stripe price id (2025+ fixtures) and plan id (legacy fixtures). */
export const FIXTURE_PRICE_ID = 'price_ProMonthly';
/** Our plan id, in checkout.session.completed `metadata.plan_id`. */
export const FIXTURE_PLAN_ID = 'pro';
/** The invoice of every invoice fixture except invoice.upcoming. */
export const FIXTURE_INVOICE_ID = 'in_Fixture01';
/** PaymentIntent of the invoice and charge fixtures. */
export const FIXTURE_PAYMENT_INTENT_ID = 'pi_Fixture01';
/** The charge refunded in charge.refunded and disputed in charge.dispute.created. */
export const FIXTURE_CHARGE_ID = 'ch_Fixture01';
/** The customer's default payment method after customer.updated (attached in payment_method.attached). */
export const FIXTURE_PAYMENT_METHOD_ID = 'pm_FixtureMastercard01';
/** The previous default payment method (replaced in customer.updated, detached in payment_method.detached). */
export const FIXTURE_PREVIOUS_PAYMENT_METHOD_ID = 'pm_FixtureVisa01';

/** Event types that also have a 2017-08-15 (localstripe-shaped) fixture under events/legacy/. */
export const LEGACY_FIXTURE_TYPES = [
  'customer.subscription.created',
  'customer.subscription.deleted',
  'invoice.payment_failed',
  'invoice.payment_succeeded',
] as const;

/** Options for fixture loading. */
export interface FixtureOptions {
  /** Load the 2017-08-15 variant from events/legacy/. */
  legacy?: boolean;
}

/** The raw JSON text of a fixture envelope, e.g. to sign it as a webhook body. */
export function loadFixtureText(type: string, opts: FixtureOptions = {}): string {
  if (!/^[a-z_]+(\.[a-z_]+)+$/.test(type)) throw new Error(`not a Stripe event type: ${type}`);
  return readFileSync(join(FIXTURE_EVENTS_DIR, opts.legacy ? 'legacy' : '', `${type}.json`), 'utf8');
}

/** A fresh, mutable copy of the webhook envelope fixture for `type`. */
export function loadFixture(type: string, opts: FixtureOptions = {}): any {
  return JSON.parse(loadFixtureText(type, opts));
}

/** A fixture with every `…_Fixture…` id rewritten to a unique token and a fresh event id. */
export function uniqueFixture(type: string, opts: { legacy?: boolean; token?: string } = {}): { envelope: any; token: string; customerId: string } {
  const token = opts.token ?? `T${randomBytes(5).toString('hex')}`;
  const text = loadFixtureText(type, opts.legacy ? { legacy: true } : {}).replace(/_Fixture/g, `_${token}`).replace(/Fixture/g, token);
  const envelope = JSON.parse(text);
  envelope.id = `evt_${token}_${type.replace(/\./g, '_')}_${randomBytes(3).toString('hex')}`;
  return { envelope, token, customerId: `cus_${token}Customer01` };
}
