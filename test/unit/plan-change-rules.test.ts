import type Stripe from 'stripe';
import { describe, expect, it } from 'vitest';
import { createPlanChangeStripeActivities } from '../../activities/plan-change';
import { commitRejection, decidePlanChange, planChangeIdempotencyKey, subscriptionVersion, type PlanChangeSubject } from '../../domain/plan-change';
import type { Plan } from '../../domain/plan-catalog';
import { ConfigError } from '../../lib/config';
import { loadPlanConfig } from '../../lib/plan-catalog-sync';

const plan = (id: string, rank: number, over: Partial<Plan> = {}): Plan => ({
  id,
  stripePriceId: `price_${id}`,
  name: id,
  amount: rank * 100,
  currency: 'usd',
  interval: 'month',
  rank,
  active: true,
  ...over,
});
const CATALOG = [plan('basic', 10), plan('basic-yearly', 11, { interval: 'year' }), plan('pro', 20), plan('team', 20), plan('old', 5, { active: false })];
const NOW = 1_780_000_000;
const sub = (over: Partial<PlanChangeSubject> = {}): PlanChangeSubject => ({
  id: 'sub_1',
  status: 'active',
  planId: 'basic',
  priceId: 'price_basic',
  currentPeriodEnd: NOW + 86_400,
  cancelAtPeriodEnd: false,
  pendingPlanId: null,
  ...over,
});
const decide = (planId: string, s: PlanChangeSubject | null = sub(), prorationDate?: number) =>
  decidePlanChange({ catalog: CATALOG, subscription: s, planId, prorationDate, now: NOW });

describe('decidePlanChange', () => {
  it('calls a higher rank an upgrade and a lower one a downgrade', () => {
    expect(decide('pro')).toMatchObject({ ok: true, kind: 'upgrade', from: { id: 'basic' }, to: { id: 'pro' } });
    expect(decide('basic', sub({ planId: 'pro', priceId: 'price_pro' }))).toMatchObject({ ok: true, kind: 'downgrade' });
  });

  it('treats monthly to yearly of the same tier as an upgrade, and an equal rank as a period-end change', () => {
    expect(decide('basic-yearly')).toMatchObject({ ok: true, kind: 'upgrade' });
    expect(decide('team', sub({ planId: 'pro', priceId: 'price_pro' }))).toMatchObject({ ok: true, kind: 'downgrade' });
  });

  it('ranks a retired current plan, and finds the current plan by price when plan_id is unknown', () => {
    expect(decide('basic', sub({ planId: 'old', priceId: 'price_old' }))).toMatchObject({ ok: true, kind: 'upgrade', from: { id: 'old' } });
    expect(decide('pro', sub({ planId: null, priceId: 'price_basic' }))).toMatchObject({ ok: true, from: { id: 'basic' } });
  });

  it.each([
    ['an unknown plan', 'gold', sub(), 'UnknownPlan'],
    ['a retired plan as the target', 'old', sub(), 'UnknownPlan'],
    ['the current plan', 'basic', sub(), 'SamePlan'],
    ['no subscription', 'pro', null, 'NoSubscription'],
    ['a canceled subscription', 'pro', sub({ status: 'canceled' }), 'SubscriptionCanceled'],
    ['an expired incomplete subscription', 'pro', sub({ status: 'incomplete_expired' }), 'SubscriptionCanceled'],
    ['a paused subscription', 'pro', sub({ status: 'paused' }), 'SubscriptionNotChangeable'],
    ['a price outside the catalog', 'pro', sub({ planId: null, priceId: 'price_other' }), 'UnknownCurrentPlan'],
  ])('rejects %s', (_label, planId, s, type) => {
    expect(decide(planId, s)).toMatchObject({ ok: false, type });
  });

  it('rejects another currency', () => {
    const catalog = [...CATALOG, plan('pro-eur', 30, { currency: 'eur' })];
    expect(decidePlanChange({ catalog, subscription: sub(), planId: 'pro-eur', now: NOW })).toMatchObject({ ok: false, type: 'CurrencyMismatch' });
  });

  it('accepts a proration date from the last 24 h and rejects older or future ones', () => {
    expect(decide('pro', sub(), NOW - 3600)).toMatchObject({ ok: true });
    expect(decide('pro', sub(), NOW - 86_400)).toMatchObject({ ok: true });
    expect(decide('pro', sub(), NOW - 86_401)).toMatchObject({ ok: false, type: 'InvalidProrationDate' });
    expect(decide('pro', sub(), NOW + 301)).toMatchObject({ ok: false, type: 'InvalidProrationDate' });
    expect(decide('pro', sub(), NOW + 0.5)).toMatchObject({ ok: false, type: 'InvalidProrationDate' });
  });
});

describe('planChangeIdempotencyKey', () => {
  it('derives keys from the customer and the request, never from anything per attempt', () => {
    expect(planChangeIdempotencyKey('cus_1', 'req-9')).toBe('plan-change:cus_1:req-9');
    expect(planChangeIdempotencyKey('cus_1', 'req-9', 'phases')).toBe('plan-change:cus_1:req-9:phases');
  });
});

describe('loadPlanConfig', () => {
  it('loads the shipped default catalog: three tiers, monthly and yearly, ranked', () => {
    const plans = loadPlanConfig({});
    expect(plans.map((p) => p.id)).toEqual(['basic-monthly', 'basic-yearly', 'pro-monthly', 'pro-yearly', 'enterprise-monthly', 'enterprise-yearly']);
    const ranks = plans.map((p) => p.rank);
    expect([...ranks].sort((a, b) => a - b)).toEqual(ranks);
    expect(plans.every((p) => p.active)).toBe(true);
  });

  it('prefers PLANS_JSON and applies defaults', () => {
    const json = JSON.stringify([{ id: 'solo', stripePriceId: 'price_solo', name: 'Solo', amount: 500, currency: 'usd', interval: 'month', rank: 1 }]);
    expect(loadPlanConfig({ PLANS_JSON: json, PLANS_FILE: '/nonexistent.json' })).toEqual([
      { id: 'solo', stripePriceId: 'price_solo', name: 'Solo', amount: 500, currency: 'usd', interval: 'month', rank: 1, active: true },
    ]);
  });

  it.each([
    ['not JSON', '{', /PLANS_JSON: not valid JSON/],
    ['an empty list', '[]', /at least one plan/],
    ['a duplicate price', JSON.stringify([plan('a', 1), plan('b', 2, { stripePriceId: 'price_a' })]), /duplicate stripePriceId price_a/],
    ['a fractional amount', JSON.stringify([plan('a', 1, { amount: 9.99 })]), /plans\.0\.amount/],
  ])('fails with a ConfigError naming PLANS_JSON for %s', (_label, json, message) => {
    let err: unknown;
    try {
      loadPlanConfig({ PLANS_JSON: json });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).variables).toEqual(['PLANS_JSON']);
    expect((err as ConfigError).message).toMatch(message);
  });

  it('names PLANS_FILE when the file cannot be read', () => {
    expect(() => loadPlanConfig({ PLANS_FILE: '/nonexistent/plans.json' })).toThrow(/PLANS_FILE: cannot read/);
  });
});

describe('commitRejection (preview and commit agree; no downgrade of a canceling subscription)', () => {
  const local = sub();
  const version = subscriptionVersion(local);

  it('requires the preview of an upgrade: its prorationDate and subscriptionVersion', () => {
    expect(commitRejection({ kind: 'upgrade', subscription: local, local })).toMatchObject({ type: 'PreviewRequired', message: expect.stringContaining('preview') });
    expect(commitRejection({ kind: 'upgrade', subscription: local, local, prorationDate: NOW })).toMatchObject({ type: 'PreviewRequired' });
    expect(commitRejection({ kind: 'upgrade', subscription: local, local, prorationDate: NOW, subscriptionVersion: version })).toBeNull();
    expect(commitRejection({ kind: 'downgrade', subscription: local, local })).toBeNull();
  });

  it.each([
    ['its period', { currentPeriodEnd: NOW + 2 * 86_400 }],
    ['its price', { priceId: 'price_pro', planId: 'pro' }],
    ['its status', { status: 'past_due' as const }],
    ['its cancel flag', { cancelAtPeriodEnd: true }],
    ['its scheduled change', { pendingPlanId: 'basic-yearly' }],
  ])('answers SubscriptionChanged when %s changed since the preview', (_label, change) => {
    const now = sub(change);
    expect(subscriptionVersion(now)).not.toBe(version);
    expect(commitRejection({ kind: 'upgrade', subscription: now, local: now, prorationDate: NOW, subscriptionVersion: version })).toMatchObject({ type: 'SubscriptionChanged' });
  });

  it('refuses a downgrade of a subscription set to cancel at period end, and asks to resume first', () => {
    const canceling = sub({ cancelAtPeriodEnd: true });
    expect(commitRejection({ kind: 'downgrade', subscription: canceling, local: canceling })).toMatchObject({ type: 'SubscriptionCanceling', message: expect.stringContaining('resume') });
    expect(commitRejection({ kind: 'upgrade', subscription: canceling, local: canceling, prorationDate: NOW, subscriptionVersion: subscriptionVersion(canceling) })).toBeNull();
  });
});

describe('scheduleSubscriptionDowngrade (request shape, fake Stripe client)', () => {
  const START = NOW - 10 * 86_400;
  const END = NOW + 20 * 86_400;
  function fakeStripe() {
    const updates: { id: string; params: Stripe.SubscriptionScheduleUpdateParams }[] = [];
    const subscription = {
      id: 'sub_1',
      schedule: null,
      metadata: { tenant: 't_1' },
      items: { data: [{ id: 'si_1', price: { id: 'price_pro' }, quantity: 7, current_period_start: START, current_period_end: END }] },
    };
    const schedule = {
      id: 'sub_sched_1',
      current_phase: { start_date: START, end_date: END },
      phases: [
        {
          start_date: START,
          end_date: END,
          default_tax_rates: [{ id: 'txr_vat' }],
          discounts: [{ coupon: null, discount: 'di_sub', promotion_code: null }, { coupon: 'co_loyal', discount: null, promotion_code: null }],
          metadata: { tenant: 't_1', source: 'sales' },
          items: [
            {
              price: 'price_pro',
              quantity: 7,
              tax_rates: [{ id: 'txr_state' }],
              discounts: [{ coupon: null, discount: 'di_item', promotion_code: null }],
              metadata: { seat_kind: 'editor' },
            },
          ],
        },
      ],
    };
    const stripe = {
      subscriptions: { retrieve: async () => subscription },
      subscriptionSchedules: {
        create: async () => schedule,
        retrieve: async () => schedule,
        update: async (id: string, params: Stripe.SubscriptionScheduleUpdateParams) => {
          updates.push({ id, params });
          return schedule;
        },
      },
      invoicePayments: {},
    } as unknown as Pick<Stripe, 'subscriptions' | 'subscriptionSchedules' | 'invoicePayments'>;
    return { stripe, updates };
  }

  it('keeps the current phase’s discounts, tax rates, quantity and metadata in both phases', async () => {
    const { stripe, updates } = fakeStripe();
    const out = await createPlanChangeStripeActivities({ stripe }).scheduleSubscriptionDowngrade({
      customerId: 'cus_1',
      subscriptionId: 'sub_1',
      requestId: 'down-1',
      fromPriceId: 'price_pro',
      toPriceId: 'price_basic',
      toInterval: 'month',
    });
    expect(out).toEqual({ scheduleId: 'sub_sched_1', effectiveAt: END });
    expect(updates).toHaveLength(1);
    const phases = updates[0]!.params.phases!;
    expect(phases).toHaveLength(2);
    const kept = {
      default_tax_rates: ['txr_vat'],
      discounts: [{ discount: 'di_sub' }, { coupon: 'co_loyal' }],
      metadata: { tenant: 't_1', source: 'sales' },
    };
    const item = { quantity: 7, tax_rates: ['txr_state'], discounts: [{ discount: 'di_item' }], metadata: { seat_kind: 'editor' } };
    expect(phases[0]).toMatchObject({ ...kept, start_date: START, end_date: END, items: [{ price: 'price_pro', ...item }] });
    expect(phases[1]).toMatchObject({ ...kept, duration: { interval: 'month', interval_count: 1 }, items: [{ price: 'price_basic', ...item }] });
    expect(updates[0]!.params).toMatchObject({ end_behavior: 'release', proration_behavior: 'none' });
  });
});
