import { describe, expect, it } from 'vitest';
import type { BillingEvent, BillingEventData } from '../../domain/billing-event';
import {
  HANDLED_EVENT_TYPES,
  NO_CUSTOMER_ERROR,
  normalizeStripeEvent,
  type HandledEventType,
  type NormalizeOptions,
  type NormalizeResult,
} from '../../domain/events';
import {
  FIXTURE_CHARGE_ID,
  FIXTURE_CUSTOMER_ID,
  FIXTURE_INVOICE_ID,
  FIXTURE_PAYMENT_INTENT_ID,
  FIXTURE_PAYMENT_METHOD_ID,
  FIXTURE_PLAN_ID,
  FIXTURE_PREVIOUS_PAYMENT_METHOD_ID,
  FIXTURE_PRICE_ID,
  FIXTURE_SUBSCRIPTION_ID,
  LEGACY_FIXTURE_TYPES,
  loadFixture,
  loadFixtureText,
} from '../fixtures';

const P0 = 1764000000;
const P1 = 1766592000;
const P2 = 1769270400;
const TRIAL_START = 1763740800;
const TRIAL_END = 1764950400;
const UPCOMING_KEY = `upcoming:${FIXTURE_CUSTOMER_ID}:${FIXTURE_SUBSCRIPTION_ID}`;

function handled(result: NormalizeResult): BillingEvent {
  if (result.outcome !== 'handled') throw new Error(`expected handled, got ${JSON.stringify(result)}`);
  return result.event;
}

function invalid(result: NormalizeResult): Extract<NormalizeResult, { outcome: 'invalid' }> {
  if (result.outcome !== 'invalid') throw new Error(`expected invalid, got ${JSON.stringify(result)}`);
  return result;
}

function dataOf<K extends BillingEventData['kind']>(event: BillingEvent, kind: K): Extract<BillingEventData, { kind: K }> {
  expect(event.data.kind).toBe(kind);
  return event.data as Extract<BillingEventData, { kind: K }>;
}

const subscription = (over: Partial<Extract<BillingEventData, { kind: 'subscription' }>>): BillingEventData => ({
  kind: 'subscription',
  subscriptionId: FIXTURE_SUBSCRIPTION_ID,
  status: 'active',
  priceId: FIXTURE_PRICE_ID,
  currentPeriodStart: P0,
  currentPeriodEnd: P1,
  cancelAtPeriodEnd: false,
  canceledAt: null,
  trialEnd: null,
  items: [{ id: 'si_Fixture01', priceId: FIXTURE_PRICE_ID, quantity: 1 }],
  trialMissingPaymentMethod: 'create_invoice',
  deleted: false,
  ...over,
});

const invoice = (over: Partial<Extract<BillingEventData, { kind: 'invoice' }>>): BillingEventData => ({
  kind: 'invoice',
  invoiceId: FIXTURE_INVOICE_ID,
  subscriptionId: FIXTURE_SUBSCRIPTION_ID,
  status: 'open',
  amountDue: 2900,
  amountPaid: 0,
  currency: 'usd',
  attemptCount: 1,
  nextPaymentAttempt: null,
  billingReason: 'subscription_cycle',
  hostedInvoiceUrl: expect.stringMatching(/^https:\/\/invoice\.stripe\.com\//) as unknown as string,
  paymentIntentId: null,
  declineCode: null,
  failureCode: null,
  periodEnd: P1,
  ...over,
});

const customer = (over: Partial<Extract<BillingEventData, { kind: 'customer' }>>): BillingEventData => ({
  kind: 'customer',
  email: 'ada@example.com',
  name: 'Ada Lovelace',
  defaultPaymentMethodId: null,
  deleted: false,
  previousDefaultPaymentMethodId: null,
  defaultPaymentMethodChanged: false,
  timezone: null,
  ...over,
});

interface Expectation {
  objectId: string;
  data: BillingEventData;
  options?: NormalizeOptions;
}

const EXPECTED: Record<HandledEventType, Expectation> = {
  'checkout.session.completed': {
    objectId: 'cs_test_a1FixtureSession01',
    data: {
      kind: 'checkout_session',
      sessionId: 'cs_test_a1FixtureSession01',
      status: 'complete',
      mode: 'subscription',
      subscriptionId: FIXTURE_SUBSCRIPTION_ID,
      clientReferenceId: 'usr_Fixture01',
      planId: FIXTURE_PLAN_ID,
      paymentStatus: 'paid',
    },
  },
  'checkout.session.expired': {
    objectId: 'cs_test_a1FixtureSession02',
    data: {
      kind: 'checkout_session',
      sessionId: 'cs_test_a1FixtureSession02',
      status: 'expired',
      mode: 'subscription',
      subscriptionId: null,
      clientReferenceId: 'usr_Fixture01',
      planId: 'team',
      paymentStatus: 'unpaid',
    },
  },
  'customer.created': { objectId: FIXTURE_CUSTOMER_ID, data: customer({}) },
  'customer.updated': {
    objectId: FIXTURE_CUSTOMER_ID,
    data: customer({
      defaultPaymentMethodId: FIXTURE_PAYMENT_METHOD_ID,
      defaultPaymentMethodChanged: true,
      previousDefaultPaymentMethodId: FIXTURE_PREVIOUS_PAYMENT_METHOD_ID,
    }),
  },
  'customer.deleted': {
    objectId: FIXTURE_CUSTOMER_ID,
    data: customer({ defaultPaymentMethodId: FIXTURE_PAYMENT_METHOD_ID, deleted: true }),
  },
  'customer.subscription.created': { objectId: FIXTURE_SUBSCRIPTION_ID, data: subscription({}) },
  'customer.subscription.updated': {
    objectId: FIXTURE_SUBSCRIPTION_ID,
    data: subscription({ status: 'past_due', currentPeriodStart: P1, currentPeriodEnd: P2 }),
  },
  'customer.subscription.deleted': {
    objectId: FIXTURE_SUBSCRIPTION_ID,
    data: subscription({
      status: 'canceled',
      currentPeriodStart: P1,
      currentPeriodEnd: P2,
      canceledAt: 1768000000,
      deleted: true,
    }),
  },
  'customer.subscription.trial_will_end': {
    objectId: FIXTURE_SUBSCRIPTION_ID,
    data: subscription({ status: 'trialing', currentPeriodStart: TRIAL_START, currentPeriodEnd: TRIAL_END, trialEnd: TRIAL_END, trialMissingPaymentMethod: 'pause' }),
  },
  'customer.subscription.paused': {
    objectId: FIXTURE_SUBSCRIPTION_ID,
    data: subscription({ status: 'paused', currentPeriodStart: TRIAL_START, currentPeriodEnd: TRIAL_END, trialEnd: TRIAL_END, trialMissingPaymentMethod: 'pause' }),
  },
  'customer.subscription.resumed': {
    objectId: FIXTURE_SUBSCRIPTION_ID,
    data: subscription({ currentPeriodStart: 1765000000, currentPeriodEnd: 1765000000 + 31 * 86400, trialEnd: TRIAL_END, trialMissingPaymentMethod: 'pause' }),
  },
  'customer.subscription.pending_update_applied': { objectId: FIXTURE_SUBSCRIPTION_ID, data: subscription({}) },
  'customer.subscription.pending_update_expired': { objectId: FIXTURE_SUBSCRIPTION_ID, data: subscription({}) },
  // The renewal invoice as a draft, an hour before Stripe finalizes it: not payable yet, no hosted page.
  'invoice.created': {
    objectId: FIXTURE_INVOICE_ID,
    data: invoice({ status: 'draft', attemptCount: 0, nextPaymentAttempt: P1 + 3600, hostedInvoiceUrl: null }),
  },
  'invoice.finalized': {
    objectId: FIXTURE_INVOICE_ID,
    data: invoice({ attemptCount: 0, nextPaymentAttempt: P1 + 3600 }),
  },
  'invoice.paid': {
    objectId: FIXTURE_INVOICE_ID,
    data: invoice({ status: 'paid', amountPaid: 2900, attemptCount: 2 }),
  },
  'invoice.payment_succeeded': {
    objectId: FIXTURE_INVOICE_ID,
    data: invoice({ status: 'paid', amountPaid: 2900, attemptCount: 2 }),
  },
  // Webhook invoices (basil+) name no PaymentIntent and carry no decline data: see payment_intent.payment_failed.
  'invoice.payment_failed': { objectId: FIXTURE_INVOICE_ID, data: invoice({ nextPaymentAttempt: P1 + 3600 + 3 * 86400 }) },
  'invoice.payment_action_required': { objectId: FIXTURE_INVOICE_ID, data: invoice({}) },
  'invoice.voided': { objectId: FIXTURE_INVOICE_ID, data: invoice({ status: 'void', nextPaymentAttempt: null }) },
  'invoice.marked_uncollectible': {
    objectId: FIXTURE_INVOICE_ID,
    data: invoice({ status: 'uncollectible', attemptCount: 4, nextPaymentAttempt: null }),
  },
  'payment_intent.payment_failed': {
    objectId: FIXTURE_PAYMENT_INTENT_ID,
    data: {
      kind: 'payment_intent',
      paymentIntentId: FIXTURE_PAYMENT_INTENT_ID,
      status: 'requires_payment_method',
      invoiceId: null,
      declineCode: 'insufficient_funds',
      adviceCode: 'try_again_later',
      networkDeclineCode: '51',
      failureCode: 'card_declined',
    },
  },
  // The declined PaymentIntent paid with the new card: the charge it settled with, no decline left.
  'payment_intent.succeeded': {
    objectId: FIXTURE_PAYMENT_INTENT_ID,
    data: {
      kind: 'payment_intent',
      paymentIntentId: FIXTURE_PAYMENT_INTENT_ID,
      status: 'succeeded',
      invoiceId: null,
      declineCode: null,
      adviceCode: null,
      networkDeclineCode: null,
      failureCode: null,
      latestChargeId: FIXTURE_CHARGE_ID,
      amountReceived: 2900,
      currency: 'usd',
    },
  },
  'setup_intent.succeeded': {
    objectId: 'seti_1SjaFixtureSetup01',
    data: { kind: 'setup_intent', setupIntentId: 'seti_1SjaFixtureSetup01', status: 'succeeded', paymentMethodId: FIXTURE_PAYMENT_METHOD_ID },
  },
  'invoice.upcoming': {
    objectId: UPCOMING_KEY,
    data: invoice({
      invoiceId: UPCOMING_KEY,
      status: 'draft',
      attemptCount: 0,
      nextPaymentAttempt: P1 + 3600,
      billingReason: 'upcoming',
      hostedInvoiceUrl: null,
    }),
  },
  'payment_method.attached': {
    objectId: FIXTURE_PAYMENT_METHOD_ID,
    data: {
      kind: 'payment_method',
      paymentMethodId: FIXTURE_PAYMENT_METHOD_ID,
      type: 'card',
      cardBrand: 'mastercard',
      cardLast4: '4444',
      detached: false,
    },
  },
  'payment_method.detached': {
    objectId: FIXTURE_PREVIOUS_PAYMENT_METHOD_ID,
    data: {
      kind: 'payment_method',
      paymentMethodId: FIXTURE_PREVIOUS_PAYMENT_METHOD_ID,
      type: 'card',
      cardBrand: 'visa',
      cardLast4: '9995',
      detached: true,
    },
  },
  'charge.dispute.created': {
    objectId: 'du_1SmFixtureDispute01',
    // A dispute names only its charge; the caller looks the charge up and supplies the customer.
    options: { fallbackCustomerId: FIXTURE_CUSTOMER_ID },
    data: {
      kind: 'dispute',
      disputeId: 'du_1SmFixtureDispute01',
      chargeId: FIXTURE_CHARGE_ID,
      amount: 2900,
      currency: 'usd',
      reason: 'fraudulent',
      status: 'needs_response',
    },
  },
  'charge.dispute.closed': {
    objectId: 'du_1SmFixtureDispute01',
    options: { fallbackCustomerId: FIXTURE_CUSTOMER_ID },
    data: {
      kind: 'dispute',
      disputeId: 'du_1SmFixtureDispute01',
      chargeId: FIXTURE_CHARGE_ID,
      amount: 2900,
      currency: 'usd',
      reason: 'fraudulent',
      status: 'won',
    },
  },
  'radar.early_fraud_warning.created': {
    objectId: 'issfr_1SmFixtureWarning01',
    // Like a dispute, a warning names only its charge.
    options: { fallbackCustomerId: FIXTURE_CUSTOMER_ID },
    data: {
      kind: 'fraud_warning',
      warningId: 'issfr_1SmFixtureWarning01',
      chargeId: FIXTURE_CHARGE_ID,
      actionable: true,
      fraudType: 'made_with_stolen_card',
    },
  },
  'charge.succeeded': {
    objectId: FIXTURE_CHARGE_ID,
    data: {
      kind: 'charge',
      chargeId: FIXTURE_CHARGE_ID,
      paymentIntentId: FIXTURE_PAYMENT_INTENT_ID,
      invoiceId: null,
      amount: 2900,
      currency: 'usd',
    },
  },
  'charge.refunded': {
    objectId: FIXTURE_CHARGE_ID,
    data: {
      kind: 'charge_refund',
      chargeId: FIXTURE_CHARGE_ID,
      invoiceId: null,
      amount: 2900,
      amountRefunded: 2900,
      currency: 'usd',
      refunded: true,
    },
  },
  'entitlements.active_entitlement_summary.updated': {
    // The summary has no id: the customer is the object.
    objectId: FIXTURE_CUSTOMER_ID,
    data: { kind: 'entitlement_summary', lookupKeys: ['audit_log', 'sso'] },
  },
};

describe('HANDLED_EVENT_TYPES', () => {
  it('lists the 33 handled Stripe event types once each', () => {
    expect(HANDLED_EVENT_TYPES).toHaveLength(33);
    expect(new Set(HANDLED_EVENT_TYPES).size).toBe(33);
    expect([...HANDLED_EVENT_TYPES].sort()).toEqual(Object.keys(EXPECTED).sort());
  });
});

describe('normalizeStripeEvent on the fixtures', () => {
  it.each(HANDLED_EVENT_TYPES)('normalizes the %s fixture', (type) => {
    const envelope = loadFixture(type);
    const expected = EXPECTED[type];
    expect(envelope.type).toBe(type);

    const event = handled(normalizeStripeEvent(envelope, expected.options));

    expect(event).toEqual({
      eventId: envelope.id,
      type,
      created: envelope.created,
      customerId: FIXTURE_CUSTOMER_ID,
      objectId: expected.objectId,
      livemode: false,
      data: expected.data,
    });
  });

  it('gives every fixture a unique event id', () => {
    const ids = [
      ...HANDLED_EVENT_TYPES.map((type) => loadFixture(type).id as string),
      ...LEGACY_FIXTURE_TYPES.map((type) => loadFixture(type, { legacy: true }).id as string),
    ];
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('never carries a card number or the raw Stripe object into the event', () => {
    for (const type of HANDLED_EVENT_TYPES) {
      const serialized = JSON.stringify(normalizeStripeEvent(loadFixture(type), EXPECTED[type].options));
      expect(serialized).not.toMatch(/fingerprint|billing_details|"lines"|\b\d{13,19}\b/);
    }
  });

  it('returns fresh copies from loadFixture', () => {
    const first = loadFixture('customer.created');
    first.data.object.email = 'changed@example.com';
    expect(loadFixture('customer.created').data.object.email).toBe('ada@example.com');
  });

  it('rejects fixture names that are not event types', () => {
    expect(() => loadFixtureText('../index')).toThrow(/not a Stripe event type/);
  });
});

describe('legacy (2017-08-15, localstripe-shaped) payloads', () => {
  it.each(LEGACY_FIXTURE_TYPES)('normalizes the legacy %s fixture to the same ids as the 2025+ one', (type) => {
    const legacyEnvelope = loadFixture(type, { legacy: true });
    expect(legacyEnvelope.api_version).toBe('2017-08-15');
    const legacy = handled(normalizeStripeEvent(legacyEnvelope));
    const current = handled(normalizeStripeEvent(loadFixture(type)));

    expect(legacy.customerId).toBe(current.customerId);
    expect(legacy.objectId).toBe(current.objectId);
    expect(legacy.data.kind).toBe(current.data.kind);
    if (legacy.data.kind === 'subscription' && current.data.kind === 'subscription') {
      expect(legacy.data.subscriptionId).toBe(current.data.subscriptionId);
      expect(legacy.data.priceId).toBe(FIXTURE_PRICE_ID);
      expect(legacy.data.status).toBe(current.data.status);
      expect(legacy.data.deleted).toBe(current.data.deleted);
    } else if (legacy.data.kind === 'invoice' && current.data.kind === 'invoice') {
      expect(legacy.data.invoiceId).toBe(current.data.invoiceId);
      expect(legacy.data.subscriptionId).toBe(FIXTURE_SUBSCRIPTION_ID);
      expect(legacy.data.status).toBe(current.data.status);
      expect(legacy.data.amountPaid).toBe(current.data.amountPaid);
    } else {
      throw new Error(`unexpected kind ${legacy.data.kind}`);
    }
  });

  it('reads the billing period from the subscription itself', () => {
    const sub = dataOf(handled(normalizeStripeEvent(loadFixture('customer.subscription.created', { legacy: true }))), 'subscription');
    expect(sub).toMatchObject({ currentPeriodStart: P0, currentPeriodEnd: P1, status: 'active' });
  });

  it('falls back to the subscription-level plan when items carry no price', () => {
    const envelope = loadFixture('customer.subscription.created', { legacy: true });
    delete envelope.data.object.items;
    envelope.data.object.plan.id = 'plan_Legacy';
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'subscription').priceId).toBe('plan_Legacy');
  });

  it('reads the failure code of the expanded charge and the payment intent id', () => {
    const inv = dataOf(handled(normalizeStripeEvent(loadFixture('invoice.payment_failed', { legacy: true }))), 'invoice');
    expect(inv).toMatchObject({
      failureCode: 'card_declined',
      declineCode: null,
      paymentIntentId: FIXTURE_PAYMENT_INTENT_ID,
      subscriptionId: FIXTURE_SUBSCRIPTION_ID,
    });
  });

  it('derives amountPaid from `paid` on invoices that predate amount_paid', () => {
    const envelope = loadFixture('invoice.payment_succeeded', { legacy: true });
    delete envelope.data.object.amount_paid;
    envelope.data.object.paid = true;
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'invoice').amountPaid).toBe(2900);
  });
});

describe('subscription shapes', () => {
  it('accepts the 2020-era shape: period on the subscription, price on the item', () => {
    const envelope = loadFixture('customer.subscription.updated');
    const sub = envelope.data.object;
    const [item] = sub.items.data;
    sub.current_period_start = 1700000000;
    sub.current_period_end = 1702592000;
    delete item.current_period_start;
    delete item.current_period_end;
    item.price.id = 'price_2020';
    item.plan = { id: 'plan_ignored', object: 'plan' }; // older versions' items carry a plan next to the price
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'subscription')).toMatchObject({
      priceId: 'price_2020',
      currentPeriodStart: 1700000000,
      currentPeriodEnd: 1702592000,
    });
  });

  it('uses the item plan when the item has no price', () => {
    const envelope = loadFixture('customer.subscription.created');
    delete envelope.data.object.items.data[0].price;
    envelope.data.object.items.data[0].plan = { id: 'plan_ItemOnly', object: 'plan' };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'subscription').priceId).toBe('plan_ItemOnly');
  });

  it('resolves an expanded customer object', () => {
    const envelope = loadFixture('customer.subscription.created');
    envelope.data.object.customer = { id: 'cus_Expanded', object: 'customer', email: 'x@example.com' };
    expect(handled(normalizeStripeEvent(envelope)).customerId).toBe('cus_Expanded');
  });
});

describe('invoice shapes', () => {
  it('finds the subscription under parent.subscription_details (2025+)', () => {
    const envelope = loadFixture('invoice.paid');
    expect(envelope.data.object.subscription).toBeUndefined();
    envelope.data.object.parent.subscription_details.subscription = 'sub_FromParent';
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'invoice').subscriptionId).toBe('sub_FromParent');
  });

  it('finds the subscription at invoice.subscription (pre-2025)', () => {
    const envelope = loadFixture('invoice.paid');
    envelope.data.object.parent = null;
    envelope.data.object.subscription = { id: 'sub_Expanded', object: 'subscription' };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'invoice').subscriptionId).toBe('sub_Expanded');
  });

  it('reports no subscription for a one-off invoice', () => {
    const envelope = loadFixture('invoice.paid');
    envelope.data.object.parent = { type: 'quote_details', quote_details: { quote: 'qt_1' }, subscription_details: null };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'invoice').subscriptionId).toBeNull();
  });

  it('takes the payment intent id from invoice.payment_intent in older shapes', () => {
    const envelope = loadFixture('invoice.payment_succeeded');
    envelope.data.object.payment_intent = 'pi_Old';
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'invoice').paymentIntentId).toBe('pi_Old');
  });

  it('prefers last_finalization_error for decline and failure codes', () => {
    const envelope = loadFixture('invoice.payment_failed');
    envelope.data.object.last_finalization_error = { code: 'card_declined', decline_code: 'lost_card', type: 'card_error' };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'invoice')).toMatchObject({
      declineCode: 'lost_card',
      failureCode: 'card_declined',
    });
  });

  it('reads the decline code of an issuer-declined expanded charge', () => {
    const envelope = loadFixture('invoice.payment_action_required');
    envelope.data.object.charge = {
      id: 'ch_Expanded',
      object: 'charge',
      failure_code: 'card_declined',
      outcome: { type: 'issuer_declined', reason: 'do_not_honor', network_status: 'declined_by_network' },
    };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'invoice')).toMatchObject({
      declineCode: 'do_not_honor',
      failureCode: 'card_declined',
    });
  });

  it('ignores the Radar reason of a charge that went through', () => {
    const envelope = loadFixture('invoice.paid');
    envelope.data.object.charge = {
      id: 'ch_Expanded',
      failure_code: null,
      outcome: { type: 'authorized', reason: 'elevated_risk_level' },
    };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'invoice').declineCode).toBeNull();
  });

  it('still handles an invoice whose optional failure details are malformed', () => {
    const envelope = loadFixture('invoice.payment_failed');
    envelope.data.object.charge = 42;
    envelope.data.object.payments = 'not a list';
    const inv = dataOf(handled(normalizeStripeEvent(envelope)), 'invoice');
    expect(inv).toMatchObject({ declineCode: null, failureCode: null, paymentIntentId: null, invoiceId: FIXTURE_INVOICE_ID });
  });

  it('keys an upcoming invoice without a subscription by customer and "none"', () => {
    const envelope = loadFixture('invoice.upcoming');
    envelope.data.object.parent = null;
    const event = handled(normalizeStripeEvent(envelope));
    expect(event.objectId).toBe(`upcoming:${FIXTURE_CUSTOMER_ID}:none`);
    expect(dataOf(event, 'invoice').invoiceId).toBe(event.objectId);
  });

  it('requires an id on every invoice event except invoice.upcoming', () => {
    const envelope = loadFixture('invoice.upcoming');
    envelope.type = 'invoice.finalized';
    expect(invalid(normalizeStripeEvent(envelope)).error).toContain('data.object.id');
  });
});

describe('customer default payment method changes', () => {
  const updated = (mutate: (envelope: ReturnType<typeof loadFixture>) => void) => {
    const envelope = loadFixture('customer.updated');
    mutate(envelope);
    return dataOf(handled(normalizeStripeEvent(envelope)), 'customer');
  };

  it('detects a first default payment method (previously null)', () => {
    const data = updated((e) => {
      e.data.previous_attributes = { invoice_settings: { default_payment_method: null } };
    });
    expect(data).toMatchObject({ defaultPaymentMethodChanged: true, previousDefaultPaymentMethodId: null });
  });

  it('ignores other invoice_settings changes', () => {
    const data = updated((e) => {
      e.data.previous_attributes = { invoice_settings: { footer: 'Old footer' } };
    });
    expect(data).toMatchObject({ defaultPaymentMethodChanged: false, previousDefaultPaymentMethodId: null });
  });

  it('ignores updates without previous_attributes', () => {
    const data = updated((e) => {
      delete e.data.previous_attributes;
    });
    expect(data.defaultPaymentMethodChanged).toBe(false);
  });

  it('detects a default_source change in the old sources shape', () => {
    const data = updated((e) => {
      e.data.object.invoice_settings.default_payment_method = null;
      e.data.object.default_source = 'card_New';
      e.data.previous_attributes = { default_source: 'card_Old' };
    });
    expect(data).toMatchObject({
      defaultPaymentMethodId: 'card_New',
      defaultPaymentMethodChanged: true,
      previousDefaultPaymentMethodId: 'card_Old',
    });
  });

  it('reads the timezone of quiet hours from metadata.timezone when it is a known IANA zone', () => {
    const envelope = loadFixture('customer.updated');
    envelope.data.object.metadata = { timezone: 'Europe/Paris' };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'customer').timezone).toBe('Europe/Paris');
    for (const bad of ['Mars/Olympus_Mons', '', 42, 'x'.repeat(100)]) {
      envelope.data.object.metadata = { timezone: bad };
      expect(dataOf(handled(normalizeStripeEvent(envelope)), 'customer').timezone, String(bad)).toBeNull();
    }
  });

  it('does not report changes for customer.created even with previous_attributes', () => {
    const envelope = loadFixture('customer.created');
    envelope.data.previous_attributes = { invoice_settings: { default_payment_method: 'pm_X' } };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'customer').defaultPaymentMethodChanged).toBe(false);
  });
});

describe('other per-type details', () => {
  it('reads the invoice of a pre-basil charge', () => {
    const envelope = loadFixture('charge.refunded');
    envelope.data.object.invoice = FIXTURE_INVOICE_ID;
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'charge_refund').invoiceId).toBe(FIXTURE_INVOICE_ID);
  });

  it('reads the invoice of a pre-basil succeeded charge and an expanded payment intent by id', () => {
    const envelope = loadFixture('charge.succeeded');
    envelope.data.object.invoice = FIXTURE_INVOICE_ID;
    envelope.data.object.payment_intent = { id: 'pi_Expanded', object: 'payment_intent' };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'charge')).toMatchObject({ invoiceId: FIXTURE_INVOICE_ID, paymentIntentId: 'pi_Expanded' });
  });

  it('rejects a succeeded charge without an amount or currency', () => {
    const envelope = loadFixture('charge.succeeded');
    delete envelope.data.object.amount;
    envelope.data.object.currency = null;
    const error = invalid(normalizeStripeEvent(envelope)).error;
    expect(error).toContain('data.object.amount');
    expect(error).toContain('data.object.currency');
  });

  it('rejects a succeeded charge or payment intent without a customer (a guest payment is not ours to record)', () => {
    for (const type of ['charge.succeeded', 'payment_intent.succeeded']) {
      const envelope = loadFixture(type);
      envelope.data.object.customer = null;
      expect(invalid(normalizeStripeEvent(envelope)).error).toBe(NO_CUSTOMER_ERROR);
    }
  });

  it('reads the invoice of a pre-basil succeeded payment intent; no charge yet is no charge', () => {
    const envelope = loadFixture('payment_intent.succeeded');
    envelope.data.object.invoice = FIXTURE_INVOICE_ID;
    envelope.data.object.latest_charge = null;
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'payment_intent')).toMatchObject({
      invoiceId: FIXTURE_INVOICE_ID,
      latestChargeId: null,
      amountReceived: 2900,
    });
  });

  it('resolves the customer of a dispute whose charge is expanded', () => {
    const envelope = loadFixture('charge.dispute.created');
    envelope.data.object.charge = { id: FIXTURE_CHARGE_ID, object: 'charge', customer: 'cus_OfCharge' };
    const event = handled(normalizeStripeEvent(envelope, { fallbackCustomerId: 'cus_Fallback' }));
    expect(event.customerId).toBe('cus_OfCharge');
    expect(dataOf(event, 'dispute').chargeId).toBe(FIXTURE_CHARGE_ID);
  });

  it('subscription-mode checkout sessions expose an expanded subscription by id', () => {
    const envelope = loadFixture('checkout.session.completed');
    envelope.data.object.subscription = { id: 'sub_Expanded', object: 'subscription' };
    expect(dataOf(handled(normalizeStripeEvent(envelope)), 'checkout_session').subscriptionId).toBe('sub_Expanded');
  });

  it('copies livemode from the envelope', () => {
    const envelope = loadFixture('customer.created');
    envelope.livemode = true;
    expect(handled(normalizeStripeEvent(envelope)).livemode).toBe(true);
  });
});

describe('ignored events', () => {
  it('ignores an unhandled event type', () => {
    const envelope = loadFixture('charge.refunded');
    envelope.type = 'charge.captured';
    expect(normalizeStripeEvent(envelope)).toEqual({
      outcome: 'ignored',
      reason: expect.stringContaining('charge.captured'),
      eventId: envelope.id,
      type: 'charge.captured',
    });
  });

  it.each(['constructor', '__proto__', 'toString', 'hasOwnProperty'])('ignores the type %j', (type) => {
    const envelope = loadFixture('customer.created');
    envelope.type = type;
    expect(normalizeStripeEvent(envelope).outcome).toBe('ignored');
  });
});

describe('invalid events', () => {
  it.each([null, 'evt_1', 42, [], {}])('rejects a non-envelope %j without ids', (envelope) => {
    const result = invalid(normalizeStripeEvent(envelope));
    expect(result.eventId).toBeNull();
    expect(result.type).toBeNull();
    expect(result.error).toMatch(/envelope/);
  });

  it.each([
    ['id', (e: Record<string, unknown>) => delete e.id],
    ['type', (e: Record<string, unknown>) => delete e.type],
    ['created', (e: Record<string, unknown>) => (e.created = '1764000000')],
    ['data.object', (e: { data: Record<string, unknown> }) => delete e.data.object],
    ['data', (e: Record<string, unknown>) => delete e.data],
  ])('names the missing envelope field %s', (field, mutate) => {
    const envelope = loadFixture('customer.subscription.created');
    mutate(envelope);
    const result = invalid(normalizeStripeEvent(envelope));
    expect(result.error).toContain(`${field}:`);
    expect(result.eventId).toBe(field === 'id' ? null : envelope.id);
    expect(result.type).toBe(field === 'type' ? null : 'customer.subscription.created');
  });

  it('names every failing path of a handled object', () => {
    const envelope = loadFixture('invoice.payment_failed');
    delete envelope.data.object.amount_due;
    envelope.data.object.currency = 840;
    const result = invalid(normalizeStripeEvent(envelope));
    expect(result.error).toContain('data.object.amount_due');
    expect(result.error).toContain('data.object.currency');
    expect(result).toMatchObject({ eventId: envelope.id, type: 'invoice.payment_failed' });
  });

  it('rejects a subscription status outside the enum', () => {
    const envelope = loadFixture('customer.subscription.updated');
    envelope.data.object.status = 'frozen';
    expect(invalid(normalizeStripeEvent(envelope)).error).toContain('data.object.status');
  });

  it('rejects a handled object without a customer', () => {
    const envelope = loadFixture('customer.subscription.updated');
    envelope.data.object.customer = null;
    expect(invalid(normalizeStripeEvent(envelope)).error).toBe(NO_CUSTOMER_ERROR);
  });

  it('rejects a dispute on an unexpanded charge unless the caller supplies the customer', () => {
    const envelope = loadFixture('charge.dispute.created');
    expect(invalid(normalizeStripeEvent(envelope)).error).toBe(NO_CUSTOMER_ERROR);
    expect(handled(normalizeStripeEvent(envelope, { fallbackCustomerId: 'cus_Looked_Up' })).customerId).toBe('cus_Looked_Up');
  });

  it('rejects a detached payment method without previous_attributes.customer', () => {
    const envelope = loadFixture('payment_method.detached');
    delete envelope.data.previous_attributes;
    expect(invalid(normalizeStripeEvent(envelope)).error).toBe(NO_CUSTOMER_ERROR);
  });

  it('rejects an expired checkout session that never had a customer', () => {
    const envelope = loadFixture('checkout.session.expired');
    envelope.data.object.customer = null;
    expect(invalid(normalizeStripeEvent(envelope)).error).toBe(NO_CUSTOMER_ERROR);
  });
});

describe('prototype pollution', () => {
  const POISON = '{"polluted":"yes","plan_id":"evil","default_source":"card_Evil","status":"active"}';

  function poisoned(type: string, inject: (text: string) => string): unknown {
    const original = JSON.stringify(loadFixture(type));
    const text = inject(original);
    expect(text).not.toBe(original);
    expect(text).toContain('"__proto__"');
    return JSON.parse(text);
  }

  it('neither crashes nor pollutes Object.prototype, and never reads injected keys', () => {
    const checkout = poisoned('checkout.session.completed', (text) =>
      text
        .replace('{"id":', `{"__proto__":${POISON},"constructor":{"prototype":${POISON}},"id":`)
        .replace('"metadata":{"plan_id":"pro"}', `"metadata":{"__proto__":${POISON}}`),
    );
    const session = dataOf(handled(normalizeStripeEvent(checkout)), 'checkout_session');
    expect(session.planId).toBeNull();

    const customer = poisoned('customer.updated', (text) =>
      text.replace(/"previous_attributes":\{.*?\}\}/, `"previous_attributes":{"__proto__":${POISON}}`),
    );
    expect(dataOf(handled(normalizeStripeEvent(customer)), 'customer').defaultPaymentMethodChanged).toBe(false);

    const sub = poisoned('customer.subscription.created', (text) =>
      text.replace('"status":"active"', `"__proto__":{"status":"active"}`),
    );
    expect(invalid(normalizeStripeEvent(sub)).error).toContain('data.object.status');

    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
    expect(Object.prototype).not.toHaveProperty('plan_id');
  });
});
