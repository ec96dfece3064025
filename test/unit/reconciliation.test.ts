import { describe, expect, it } from 'vitest';
import { createTokenBucket } from '../../activities/rate-limit';
import type { SubscriptionSnapshot } from '../../domain/messages';
import {
  closedInvoiceEventType,
  diffSubscription,
  driftKind,
  invoiceRepairEvent,
  invoiceTransitionTime,
  isMarkUnpaidEmulation,
  pastDueInvoiceSubscription,
  type LocalSubscriptionRow,
} from '../../domain/reconciliation';

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
  it('compares seats (the primary item\'s quantity) when both sides know them', () => {
    const items = [{ id: 'si_1', priceId: 'price_basic', quantity: 5 }];
    expect(diffSubscription({ ...local, quantity: 3 }, { ...stripe, items })).toEqual([{ field: 'quantity', localValue: '3', stripeValue: '5' }]);
    expect(diffSubscription({ ...local, quantity: 5 }, { ...stripe, items })).toEqual([]);
    // An add-on item beside the primary one does not count as seats.
    expect(diffSubscription({ ...local, quantity: 5 }, { ...stripe, items: [{ id: 'si_0', priceId: 'price_addon', quantity: 1 }, ...items] })).toEqual([]);
    expect(diffSubscription({ ...local, quantity: 3 }, stripe)).toEqual([]);
  });

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

describe('invoice repairs', () => {
  const base = { id: 'in_1', customer: 'cus_1', status: 'open', attempt_count: 1, billing_reason: 'subscription_cycle', created: 100, status_transitions: { finalized_at: 120 } };

  it('finds the subscription of an open, attempted renewal invoice; not a proration, an unattempted or an ended one', () => {
    expect(pastDueInvoiceSubscription({ ...base, parent: { subscription_details: { subscription: 'sub_1' } } })).toBe('sub_1');
    expect(pastDueInvoiceSubscription({ ...base, subscription: 'sub_old' })).toBe('sub_old');
    expect(pastDueInvoiceSubscription({ ...base, billing_reason: 'subscription_update', subscription: 'sub_1' })).toBeNull();
    expect(pastDueInvoiceSubscription({ ...base, attempt_count: 0, subscription: 'sub_1' })).toBeNull();
    expect(pastDueInvoiceSubscription({ ...base, status: 'paid', subscription: 'sub_1' })).toBeNull();
    expect(pastDueInvoiceSubscription({ ...base, parent: { subscription_details: { subscription: { id: 'sub_1', status: 'canceled' } } } })).toBeNull();
    expect(pastDueInvoiceSubscription({ ...base })).toBeNull();
  });

  it('maps a closed status to the event that ends its cycle, at the transition time', () => {
    expect(closedInvoiceEventType('paid')).toBe('invoice.paid');
    expect(closedInvoiceEventType('void')).toBe('invoice.voided');
    expect(closedInvoiceEventType('uncollectible')).toBe('invoice.marked_uncollectible');
    expect(closedInvoiceEventType('open')).toBeNull();
    expect(invoiceTransitionTime({ ...base, status_transitions: { paid_at: 300 } }, 'invoice.paid', 999)).toBe(300);
    expect(invoiceTransitionTime({ ...base, status_transitions: null }, 'invoice.voided', 999)).toBe(999);
    expect(invoiceTransitionTime(base, 'invoice.payment_failed', 999)).toBe(120);
  });

  it('builds a normalized invoice event with a per-run id, or null when the invoice names no customer', () => {
    const event = invoiceRepairEvent({ runId: 'reconciliation:r1', invoice: { ...base, amount_due: 900, currency: 'usd', parent: { subscription_details: { subscription: 'sub_1' } } } as never, type: 'invoice.payment_failed', fetchedAt: 999 });
    expect(event).toMatchObject({ eventId: 'recon:reconciliation:r1:in_1', type: 'invoice.payment_failed', created: 120, customerId: 'cus_1', data: { kind: 'invoice', invoiceId: 'in_1', subscriptionId: 'sub_1', status: 'open' } });
    expect(invoiceRepairEvent({ runId: 'r', invoice: { ...base, customer: null, amount_due: 900, currency: 'usd' } as never, type: 'invoice.paid', fetchedAt: 1 })).toBeNull();
  });

  it('recognizes only a live subscription paused by the retired mark_unpaid action', () => {
    const marked = { status: 'past_due', metadata: { dunning_final_action: 'mark_unpaid' }, pause_collection: { behavior: 'keep_as_draft' } };
    expect(isMarkUnpaidEmulation(marked)).toBe(true);
    expect(isMarkUnpaidEmulation({ ...marked, status: 'canceled' })).toBe(false);
    expect(isMarkUnpaidEmulation({ ...marked, pause_collection: null })).toBe(false);
    expect(isMarkUnpaidEmulation({ ...marked, metadata: {} })).toBe(false);
  });
});
