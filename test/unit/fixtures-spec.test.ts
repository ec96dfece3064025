import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { HANDLED_EVENT_TYPES } from '../../domain/events';
import { STRIPE_API_VERSION } from '../../lib/stripe';
import { LEGACY_FIXTURE_TYPES, loadFixture } from '../fixtures';
import {
  createWebhookValidator,
  includableProperties,
  loadStripeSpec,
  pinnedStripeMockVersion,
  stripeSpecPath,
  type StripeSpec,
  type WebhookValidator,
} from '../helpers/stripe-spec';
import { interpretLifecycle, lifecycleArb } from '../sim/lifecycle';
import { renderEnvelope } from '../sim/render';

const FIXTURE_TYPES = readdirSync(join(__dirname, '..', 'fixtures', 'events'))
  .filter((name) => name.endsWith('.json'))
  .map((name) => name.slice(0, -'.json'.length))
  .sort();

let spec: StripeSpec;
let validator: WebhookValidator;

beforeAll(() => {
  spec = loadStripeSpec();
  validator = createWebhookValidator(spec);
});

describe('the pinned Stripe API version', () => {
  it('is the version of the OpenAPI spec in the stripe-mock module that scripts/tools.sh pins', () => {
    expect(stripeSpecPath()).toContain(`stripe-mock@${pinnedStripeMockVersion()}`);
    expect(spec.info.version).toBe(STRIPE_API_VERSION);
  });
});

describe('event fixtures', () => {
  it('include one for every handled event type', () => {
    expect(HANDLED_EVENT_TYPES.filter((type) => !FIXTURE_TYPES.includes(type))).toEqual([]);
  });

  it.each(FIXTURE_TYPES)('%s has the exact shape Stripe sends on the pinned version', (type) => {
    const envelope = loadFixture(type);
    expect(envelope.type).toBe(type);
    expect(validator.validate(envelope)).toEqual([]);
  });

  it('pass the check also as the simulation renders them (ids, statuses, amounts, times substituted)', () => {
    fc.assert(
      fc.property(lifecycleArb, (lifecycle) => {
        const history = interpretLifecycle(lifecycle, 'Tspec', 1_795_000_000);
        for (const event of history.events) expect(validator.validate(renderEnvelope(history, event)), event.type).toEqual([]);
      }),
      { numRuns: 100 },
    );
  });

  it.each(LEGACY_FIXTURE_TYPES)('the 2017-08-15 %s fixture (kept for old endpoints) fails the check', (type) => {
    const errors = validator.validate(loadFixture(type, { legacy: true }));
    expect(errors).toContain(`/api_version: "2017-08-15" is not the spec's ${STRIPE_API_VERSION}`);
    expect(errors.length).toBeGreaterThan(1);
  });
});

describe('the fixture check rejects what Stripe never sends', () => {
  const tampered = (type: string, mutate: (envelope: any) => void): string[] => {
    const envelope = loadFixture(type);
    mutate(envelope);
    return validator.validate(envelope);
  };

  it('an invoice with its payments expanded, decline code and all (the pre-dahlia fixture)', () => {
    const intent = loadFixture('payment_intent.payment_failed').data.object;
    const errors = tampered('invoice.payment_failed', (e) => {
      e.data.object.payments = {
        object: 'list',
        data: [{ id: 'inpay_1', object: 'invoice_payment', payment: { type: 'payment_intent', payment_intent: intent } }],
        has_more: false,
        url: '/v1/invoice_payments',
      };
    });
    expect(errors).toEqual(['/data/object/payments: present only when a request expands it (includable), so never in a webhook']);
  });

  it('an expanded object where the field is expandable, alone or in a list', () => {
    const customer = loadFixture('customer.created').data.object;
    expect(tampered('customer.subscription.created', (e) => (e.data.object.customer = customer))).toEqual([
      "/data/object/customer: expanded, but an expandable field in a webhook is the object's id (must be string)",
    ]);
    expect(tampered('invoice.paid', (e) => (e.data.object.discounts = [{ id: 'di_1', object: 'discount' }]))).toEqual([
      "/data/object/discounts/0: expanded, but an expandable field in a webhook is the object's id (must be string)",
    ]);
  });

  it('a property the spec does not declare, at the top or nested', () => {
    expect(tampered('invoice.paid', (e) => (e.data.object.subscription = 'sub_Fixture01'))).toEqual([
      "/data/object: unknown property 'subscription'",
    ]);
    expect(tampered('customer.subscription.updated', (e) => (e.data.object.items.data[0].plan = { id: 'price_ProMonthly' }))).toEqual([
      "/data/object/items/data/0: unknown property 'plan'",
    ]);
    expect(tampered('customer.created', (e) => (e.extra = true))).toEqual(["(root): unknown property 'extra'"]);
    expect(tampered('customer.subscription.updated', (e) => (e.data.previous_attributes.plan = null))).toEqual([
      "/data/previous_attributes: unknown property 'plan' of subscription",
    ]);
  });

  it('a missing required property, a null that is not nullable, a value outside an enum or format', () => {
    expect(tampered('customer.subscription.created', (e) => delete e.data.object.billing_mode)).toEqual([
      "/data/object: must have required property 'billing_mode'",
    ]);
    expect(tampered('invoice.paid', (e) => (e.data.object.amount_due = null))).toEqual(['/data/object/amount_due: must be integer']);
    expect(tampered('checkout.session.completed', (e) => (e.data.object.ui_mode = 'hosted'))).toEqual([
      '/data/object/ui_mode: must be equal to one of the allowed values ["elements","embedded_page","hosted_page",null]',
    ]);
    expect(tampered('invoice.paid', (e) => (e.data.object.currency = 'USD'))).toEqual(['/data/object/currency: must match format "currency"']);
  });

  it('another API version, or an object that does not match the event type', () => {
    expect(tampered('customer.created', (e) => (e.api_version = '2025-03-31.basil'))).toEqual([
      `/api_version: "2025-03-31.basil" is not the spec's ${STRIPE_API_VERSION}`,
    ]);
    expect(tampered('customer.created', (e) => (e.type = 'payment_method.attached'))[0]).toBe(
      '/data/object/object: payment_method.attached carries a payment_method, not customer',
    );
  });

  it('an invoice without an id, except on invoice.upcoming', () => {
    expect(tampered('invoice.paid', (e) => delete e.data.object.id)).toEqual(["/data/object: must have required property 'id'"]);
    expect(loadFixture('invoice.upcoming').data.object.id).toBeUndefined();
  });
});

describe('includable properties', () => {
  it('are the expandable, optional lists, e.g. invoice.payments', () => {
    const of = (name: string) => includableProperties(spec, spec.components.schemas[name]!);
    expect(of('invoice')).toEqual(['payments']);
    expect(of('customer')).toEqual(expect.arrayContaining(['sources', 'subscriptions', 'tax_ids']));
    expect(of('charge')).toEqual(['refunds']);
    expect(of('checkout.session')).toEqual(['line_items']);
    expect(of('subscription')).toEqual([]);
  });

  it('cover every property the spec calls includable in prose', () => {
    const derived = new Set(
      Object.values(spec.components.schemas).flatMap((schema) => includableProperties(spec, schema)),
    );
    const named = Object.values(spec.paths)
      .flatMap((operations) => Object.values(operations))
      .flatMap((operation) => [...(operation.description ?? '').matchAll(/there is an includable (?:<[^>]+>)*([\w.]+)/gi)])
      .map((match) => match[1]!.split('.').pop()!);
    expect(named).toContain('payments');
    expect(named.filter((name) => !derived.has(name))).toEqual([]);
  });
});
