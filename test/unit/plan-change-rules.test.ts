import { describe, expect, it } from 'vitest';
import { decidePlanChange, planChangeIdempotencyKey, type PlanChangeSubject } from '../../domain/plan-change';
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
