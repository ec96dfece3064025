import type Stripe from 'stripe';
import { describe, expect, it } from 'vitest';
import { createSeatStripeActivities } from '../../activities/seats';
import type { LocalSubscription } from '../../domain/billing/state';
import { commitRejection, subscriptionVersion, subscriptionVersionV1 } from '../../domain/plan-change';
import { decideSeatChange, MAX_SEATS, seatChangeIdempotencyKey, seatCommitRejection } from '../../domain/seats';

const NOW = 1_780_000_000;
const sub = (over: Partial<LocalSubscription> = {}): LocalSubscription => ({
  id: 'sub_1',
  status: 'active',
  planId: 'team',
  priceId: 'price_team',
  currentPeriodEnd: NOW + 86_400,
  cancelAtPeriodEnd: false,
  pendingPlanId: null,
  quantity: 3,
  ...over,
});
const decide = (quantity: number, s: LocalSubscription | null = sub(), prorationDate?: number) => decideSeatChange({ subscription: s, quantity, prorationDate, now: NOW });

describe('decideSeatChange', () => {
  it('calls more seats an increase and fewer a decrease, from the stored quantity (1 when absent)', () => {
    expect(decide(5)).toEqual({ ok: true, kind: 'increase', from: 3, to: 5 });
    expect(decide(1)).toEqual({ ok: true, kind: 'decrease', from: 3, to: 1 });
    const { quantity: _q, ...recordedBefore } = sub();
    expect(decide(2, recordedBefore)).toEqual({ ok: true, kind: 'increase', from: 1, to: 2 });
    expect(decide(MAX_SEATS)).toMatchObject({ ok: true });
  });

  it.each([
    ['quantity 0', 0, sub(), 'InvalidQuantity'],
    ['a negative quantity', -2, sub(), 'InvalidQuantity'],
    ['a fractional quantity', 2.5, sub(), 'InvalidQuantity'],
    ['more than the maximum', MAX_SEATS + 1, sub(), 'InvalidQuantity'],
    ['no subscription', 4, null, 'NoSubscription'],
    ['a canceled subscription', 4, sub({ status: 'canceled' }), 'SubscriptionCanceled'],
    ['an expired incomplete subscription', 4, sub({ status: 'incomplete_expired' }), 'SubscriptionCanceled'],
    ['a paused subscription', 4, sub({ status: 'paused' }), 'SubscriptionNotChangeable'],
    ['a subscription set to cancel at period end', 4, sub({ cancelAtPeriodEnd: true }), 'SubscriptionCanceling'],
    ['the current quantity', 3, sub(), 'SameQuantity'],
  ])('rejects %s', (_label, quantity, s, type) => {
    expect(decide(quantity, s)).toMatchObject({ ok: false, type });
  });

  it('rejects a proration date that is not a recent preview’s', () => {
    expect(decide(4, sub(), NOW - 3600)).toMatchObject({ ok: true });
    expect(decide(4, sub(), NOW - 86_401)).toMatchObject({ ok: false, type: 'InvalidProrationDate' });
  });
});

describe('seat commits and the subscription version', () => {
  const local = sub();
  const version = subscriptionVersion(local);

  it('requires the preview of an increase (naming the seat preview), not of a decrease', () => {
    expect(seatCommitRejection({ kind: 'increase', subscription: local, local })).toMatchObject({ type: 'PreviewRequired', message: expect.stringContaining('/quantity/preview') });
    expect(seatCommitRejection({ kind: 'increase', subscription: local, local, prorationDate: NOW, subscriptionVersion: version })).toBeNull();
    expect(seatCommitRejection({ kind: 'decrease', subscription: local, local })).toBeNull();
  });

  it('covers the seats: a quantity change invalidates seat and plan previews taken before it', () => {
    const changed = sub({ quantity: 4 });
    expect(subscriptionVersion(changed)).not.toBe(version);
    expect(seatCommitRejection({ kind: 'increase', subscription: changed, local: changed, prorationDate: NOW, subscriptionVersion: version })).toMatchObject({ type: 'SubscriptionChanged' });
    expect(commitRejection({ kind: 'upgrade', subscription: changed, local: changed, prorationDate: NOW, subscriptionVersion: version })).toMatchObject({ type: 'SubscriptionChanged' });
    // A row recorded before quantities reads as one seat.
    const { quantity: _q, ...recordedBefore } = sub();
    expect(subscriptionVersion(recordedBefore)).toBe(subscriptionVersion(sub({ quantity: 1 })));
  });

  it('keeps the sv1 token (no seats) for replays of histories recorded before the patch', () => {
    expect(subscriptionVersion(local)).toMatch(/^sv2_[0-9a-f]{8}$/);
    expect(subscriptionVersionV1(local)).toMatch(/^sv1_[0-9a-f]{8}$/);
    expect(subscriptionVersionV1(sub({ quantity: 9 }))).toBe(subscriptionVersionV1(local));
    const v1 = subscriptionVersionV1(local);
    expect(commitRejection({ kind: 'upgrade', subscription: local, local, prorationDate: NOW, subscriptionVersion: v1, versionOf: subscriptionVersionV1 })).toBeNull();
    expect(commitRejection({ kind: 'upgrade', subscription: local, local, prorationDate: NOW, subscriptionVersion: v1 })).toMatchObject({ type: 'SubscriptionChanged' });
  });

  it('derives idempotency keys from the customer and the request', () => {
    expect(seatChangeIdempotencyKey('cus_1', 'req-9')).toBe('seat-change:cus_1:req-9');
    expect(seatChangeIdempotencyKey('cus_1', 'req-9', 'phases')).toBe('seat-change:cus_1:req-9:phases');
  });
});

describe('scheduleSubscriptionQuantity (request shape, fake Stripe client)', () => {
  const START = NOW - 10 * 86_400;
  const END = NOW + 20 * 86_400;

  it('keeps the current phase’s discounts, tax rates, metadata and other items; only the plan item’s quantity drops', async () => {
    const updates: Stripe.SubscriptionScheduleUpdateParams[] = [];
    const price = (id: string, interval: string) => ({ id, recurring: { interval, interval_count: 1 } });
    const subscription = {
      id: 'sub_1',
      schedule: null,
      metadata: { tenant: 't_1' },
      items: {
        data: [
          { id: 'si_seats', price: price('price_team', 'year'), quantity: 8, tax_rates: [], metadata: {}, current_period_start: START, current_period_end: END },
          { id: 'si_addon', price: price('price_addon', 'year'), quantity: 1, tax_rates: [{ id: 'txr_addon' }], metadata: {}, current_period_start: START, current_period_end: END },
        ],
      },
    };
    const schedule = {
      id: 'sub_sched_1',
      current_phase: { start_date: START, end_date: END },
      phases: [
        {
          start_date: START,
          end_date: END,
          default_tax_rates: [{ id: 'txr_vat' }],
          discounts: [{ coupon: 'co_annual', discount: null, promotion_code: null }],
          metadata: { tenant: 't_1' },
          items: [
            { price: 'price_team', quantity: 8, tax_rates: [{ id: 'txr_state' }], discounts: [], metadata: { seat_kind: 'editor' } },
            { price: 'price_addon', quantity: 1, tax_rates: [{ id: 'txr_addon' }], discounts: [], metadata: {} },
          ],
        },
      ],
    };
    const stripe = {
      subscriptions: { retrieve: async () => subscription },
      subscriptionSchedules: {
        create: async () => schedule,
        update: async (_id: string, params: Stripe.SubscriptionScheduleUpdateParams) => {
          updates.push(params);
          return schedule;
        },
      },
      invoicePayments: {},
    } as unknown as Pick<Stripe, 'subscriptions' | 'subscriptionSchedules' | 'invoicePayments'>;
    const out = await createSeatStripeActivities({ stripe }).scheduleSubscriptionQuantity({ customerId: 'cus_1', subscriptionId: 'sub_1', requestId: 'down-1', priceId: 'price_team', quantity: 5 });
    expect(out).toEqual({ scheduleId: 'sub_sched_1', effectiveAt: END });
    const kept = { default_tax_rates: ['txr_vat'], discounts: [{ coupon: 'co_annual' }], metadata: { tenant: 't_1' } };
    const seats = { price: 'price_team', tax_rates: ['txr_state'], metadata: { seat_kind: 'editor' } };
    const addon = { price: 'price_addon', quantity: 1, tax_rates: ['txr_addon'] };
    expect(updates[0]!.phases).toEqual([
      { ...kept, start_date: START, end_date: END, items: [{ ...seats, quantity: 8 }, addon] },
      { ...kept, duration: { interval: 'year', interval_count: 1 }, items: [{ ...seats, quantity: 5 }, addon] },
    ]);
  });
});
