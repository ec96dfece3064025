import { describe, expect, it } from 'vitest';
import { createTokenBucket } from '../../activities/rate-limit';
import type { SubscriptionSnapshot } from '../../domain/messages';
import { diffSubscription, driftKind, type LocalSubscriptionRow } from '../../domain/reconciliation';

const local: LocalSubscriptionRow = {
  subscriptionId: 'sub_1',
  customerId: 'cus_1',
  status: 'active',
  priceId: 'price_basic',
  currentPeriodEnd: 1_800_000_000,
  cancelAtPeriodEnd: false,
};

const stripe: SubscriptionSnapshot = {
  subscriptionId: 'sub_1',
  customerId: 'cus_1',
  status: 'active',
  priceId: 'price_basic',
  currentPeriodStart: 1_797_408_000,
  currentPeriodEnd: 1_800_000_000,
  cancelAtPeriodEnd: false,
  canceledAt: null,
  trialEnd: null,
  fetchedAt: 1_790_000_000,
};

describe('diffSubscription', () => {
  it('finds nothing when the compared fields agree (fields it does not compare may differ)', () => {
    expect(diffSubscription(local, { ...stripe, trialEnd: 1, currentPeriodStart: 2 })).toEqual([]);
    expect(diffSubscription(null, null)).toEqual([]);
  });

  it('reports every mismatching field with both values as text', () => {
    const drift = diffSubscription(local, {
      ...stripe,
      customerId: 'cus_2',
      status: 'past_due',
      priceId: 'price_pro',
      currentPeriodEnd: 1_800_086_400,
      cancelAtPeriodEnd: true,
    });
    expect(drift).toEqual([
      { field: 'customer', localValue: 'cus_1', stripeValue: 'cus_2' },
      { field: 'status', localValue: 'active', stripeValue: 'past_due' },
      { field: 'price', localValue: 'price_basic', stripeValue: 'price_pro' },
      { field: 'current_period_end', localValue: '2027-01-15T08:00:00.000Z', stripeValue: '2027-01-16T08:00:00.000Z' },
      { field: 'cancel_at_period_end', localValue: 'false', stripeValue: 'true' },
    ]);
  });

  it('reports a subscription only one side has as existence drift', () => {
    expect(diffSubscription(null, stripe)).toEqual([{ field: 'existence', localValue: null, stripeValue: 'active' }]);
    expect(diffSubscription(local, null)).toEqual([{ field: 'existence', localValue: 'active', stripeValue: null }]);
  });
});

describe('driftKind', () => {
  it('names each kind ops reason about', () => {
    expect(driftKind({ field: 'existence', localValue: null, stripeValue: 'active' })).toBe('missing_locally');
    expect(driftKind({ field: 'existence', localValue: 'active', stripeValue: null })).toBe('local_only');
    expect(driftKind({ field: 'status', localValue: 'active', stripeValue: 'canceled' })).toBe('canceled_in_stripe');
    expect(driftKind({ field: 'status', localValue: 'incomplete', stripeValue: 'canceled' })).toBe('status');
    expect(driftKind({ field: 'status', localValue: 'active', stripeValue: 'past_due' })).toBe('status');
    expect(driftKind({ field: 'price', localValue: 'a', stripeValue: 'b' })).toBe('plan');
    expect(driftKind({ field: 'current_period_end', localValue: 'a', stripeValue: 'b' })).toBe('period');
  });
});

describe('createTokenBucket', () => {
  function clock() {
    let t = 0;
    const sleeps: number[] = [];
    return {
      now: () => t,
      sleep: async (ms: number) => {
        sleeps.push(ms);
        t += ms;
      },
      sleeps,
    };
  }

  it('lets a burst through, then paces calls at the configured rate', async () => {
    const c = clock();
    const bucket = createTokenBucket({ ratePerSecond: 4, now: c.now, sleep: c.sleep });
    for (let i = 0; i < 4; i++) await bucket.acquire();
    expect(c.now()).toBe(0);
    await bucket.acquire();
    await bucket.acquire();
    expect(c.now()).toBe(500);
  });

  it('hands out nothing during a back-off after a 429', async () => {
    const c = clock();
    const bucket = createTokenBucket({ ratePerSecond: 100, now: c.now, sleep: c.sleep });
    await bucket.acquire();
    bucket.backOff(2000);
    await bucket.acquire();
    expect(c.now()).toBeGreaterThanOrEqual(2000);
  });

  it('serves concurrent callers one at a time, in order', async () => {
    const c = clock();
    const bucket = createTokenBucket({ ratePerSecond: 1, burst: 1, now: c.now, sleep: c.sleep });
    const order: number[] = [];
    await Promise.all([1, 2, 3].map((n) => bucket.acquire().then(() => order.push(n))));
    expect(order).toEqual([1, 2, 3]);
    expect(c.now()).toBe(2000);
  });
});
