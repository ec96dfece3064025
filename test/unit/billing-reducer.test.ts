import { describe, expect, it } from 'vitest';
import type { BillingEvent } from '../../domain/billing-event';
import { deriveAccessState, type AccessFacts } from '../../domain/billing/access';
import { compareCurrentSubscription, pickCurrentSubscription } from '../../domain/billing/current-subscription';
import { reduceBillingEvent, reduceSubscriptionSnapshot } from '../../domain/billing/reducer';
import type { BillingSlice } from '../../domain/billing/state';

const CUS = 'cus_R1';

function slice(over: Partial<BillingSlice> = {}): BillingSlice {
  return { customerId: CUS, subscription: null, invoice: null, customerWatermark: null, cycles: [], ...over };
}

function invoiceEvent(type: string, status: string, created: number, over: Partial<{ invoiceId: string; subscriptionId: string | null; declineCode: string | null }> = {}): BillingEvent {
  return {
    eventId: `evt_${type}_${created}`,
    type,
    created,
    customerId: CUS,
    objectId: over.invoiceId ?? 'in_1',
    livemode: false,
    data: {
      kind: 'invoice',
      invoiceId: over.invoiceId ?? 'in_1',
      subscriptionId: over.subscriptionId === undefined ? 'sub_1' : over.subscriptionId,
      status,
      amountDue: 900,
      amountPaid: status === 'paid' ? 900 : 0,
      currency: 'usd',
      attemptCount: 1,
      nextPaymentAttempt: null,
      billingReason: 'subscription_cycle',
      hostedInvoiceUrl: null,
      paymentIntentId: null,
      declineCode: over.declineCode ?? null,
      failureCode: null,
      periodEnd: null,
    },
  };
}

function subscriptionEvent(status: 'active' | 'canceled' | 'past_due', created: number, subscriptionId = 'sub_1', eventId = `evt_sub_${created}_${status}`): BillingEvent {
  return {
    eventId,
    type: status === 'canceled' ? 'customer.subscription.deleted' : 'customer.subscription.updated',
    created,
    customerId: CUS,
    objectId: subscriptionId,
    livemode: false,
    data: {
      kind: 'subscription',
      subscriptionId,
      status,
      priceId: 'price_1',
      currentPeriodStart: null,
      currentPeriodEnd: null,
      cancelAtPeriodEnd: false,
      canceledAt: null,
      trialEnd: null,
      deleted: status === 'canceled',
    },
  };
}

const paidInvoice = { id: 'in_1', subscriptionId: 'sub_1', status: 'paid', statusRank: 3, watermark: { created: 200, eventId: 'evt_paid' } };

describe('billing reducer: effects from state transitions', () => {
  it('opens one cycle for a failed, unpaid invoice of a live subscription', () => {
    const r = reduceBillingEvent(slice(), invoiceEvent('invoice.payment_failed', 'open', 100, { declineCode: 'insufficient_funds' }));
    expect(r.verdict).toBe('applied');
    expect(r.cycles).toEqual([{ op: 'open', invoiceId: 'in_1', subscriptionId: 'sub_1', declineCode: 'insufficient_funds', at: 100 }]);
    expect(r.effects).toEqual([
      { kind: 'start_dunning', target: 'in_1', invoiceId: 'in_1', subscriptionId: 'sub_1', failure: { eventId: 'evt_invoice.payment_failed_100', declineCode: 'insufficient_funds', at: 100 } },
    ]);
  });

  it('a failure older than the payment of its invoice is stale and yields nothing', () => {
    const r = reduceBillingEvent(slice({ invoice: paidInvoice }), invoiceEvent('invoice.payment_failed', 'open', 150));
    expect(r).toEqual({ verdict: 'stale', cycles: [], effects: [] });
  });

  it('in the same second, a failure does not move a paid invoice backwards', () => {
    const r = reduceBillingEvent(slice({ invoice: paidInvoice }), invoiceEvent('invoice.payment_failed', 'open', 200));
    expect(r.verdict).toBe('stale');
    expect(r.effects).toEqual([]);
  });

  it('a late invoice.created (draft) never moves a finalized invoice back, whatever its second', () => {
    for (const created of [150, 200, 250]) {
      expect(reduceBillingEvent(slice({ invoice: paidInvoice }), invoiceEvent('invoice.created', 'draft', created))).toEqual({ verdict: 'stale', cycles: [], effects: [] });
    }
    const open = { ...paidInvoice, status: 'open', statusRank: 1 };
    expect(reduceBillingEvent(slice({ invoice: open }), invoiceEvent('invoice.created', 'draft', 250)).verdict).toBe('stale');
  });

  it('records a new draft invoice, and a newer draft over a draft, without effects', () => {
    const cycles = [{ invoiceId: 'in_1', subscriptionId: 'sub_1', open: true }];
    expect(reduceBillingEvent(slice({ cycles }), invoiceEvent('invoice.created', 'draft', 100))).toEqual({ verdict: 'applied', cycles: [], effects: [] });
    const draft = { ...paidInvoice, status: 'draft', statusRank: 0, watermark: { created: 100, eventId: 'evt_created' } };
    expect(reduceBillingEvent(slice({ invoice: draft }), invoiceEvent('invoice.created', 'draft', 101)).verdict).toBe('applied');
    expect(reduceBillingEvent(slice({ invoice: draft }), invoiceEvent('invoice.finalized', 'open', 100)).verdict).toBe('applied');
  });

  it('a second failure joins the open cycle; a closed cycle is never reopened', () => {
    const open = reduceBillingEvent(slice({ cycles: [{ invoiceId: 'in_1', subscriptionId: 'sub_1', open: true }] }), invoiceEvent('invoice.payment_failed', 'open', 300));
    expect(open.cycles).toEqual([]);
    expect(open.effects.map((e) => [e.kind, e.target])).toEqual([['signal_dunning', 'in_1']]);
    const closed = reduceBillingEvent(slice({ cycles: [{ invoiceId: 'in_1', subscriptionId: 'sub_1', open: false }] }), invoiceEvent('invoice.payment_failed', 'open', 300));
    expect(closed).toEqual({ verdict: 'applied', cycles: [], effects: [] });
  });

  it('opens no cycle for a one-off invoice or a subscription known to have ended', () => {
    expect(reduceBillingEvent(slice(), invoiceEvent('invoice.payment_failed', 'open', 100, { subscriptionId: null })).effects).toEqual([]);
    const ended = slice({ subscription: { id: 'sub_1', status: 'canceled', watermark: { created: 50, eventId: 'e' } } });
    expect(reduceBillingEvent(ended, invoiceEvent('invoice.payment_failed', 'open', 100)).effects).toEqual([]);
  });

  it('ends the cycle of an invoice that is paid, voided or written off', () => {
    const cycles = [{ invoiceId: 'in_1', subscriptionId: 'sub_1', open: true }];
    const paid = reduceBillingEvent(slice({ cycles }), invoiceEvent('invoice.paid', 'paid', 400));
    expect(paid.cycles).toEqual([{ op: 'close', invoiceId: 'in_1', state: 'recovered', reason: 'invoice paid' }]);
    expect(paid.effects).toMatchObject([{ kind: 'end_dunning', target: 'in_1', reason: 'paid', event: { kind: 'paid' } }]);
    const voided = reduceBillingEvent(slice({ cycles }), invoiceEvent('invoice.updated', 'void', 400));
    expect(voided.effects).toMatchObject([{ kind: 'end_dunning', reason: 'voided', event: { kind: 'invoice_closed', status: 'voided' } }]);
  });

  it('a subscription that ends ends only its own cycles', () => {
    const cycles = [
      { invoiceId: 'in_a', subscriptionId: 'sub_a', open: true },
      { invoiceId: 'in_b', subscriptionId: 'sub_b', open: true },
      { invoiceId: 'in_c', subscriptionId: 'sub_a', open: false },
    ];
    const r = reduceBillingEvent(slice({ cycles }), subscriptionEvent('canceled', 500, 'sub_a'));
    expect(r.cycles.map((c) => c.invoiceId)).toEqual(['in_a']);
    expect(r.effects.map((e) => [e.kind, e.target])).toEqual([['end_dunning', 'in_a']]);
  });

  it('a stale subscription event yields nothing; a same-second one is a tie unless settled by precedence', () => {
    const sub = { id: 'sub_1', status: 'active' as const, watermark: { created: 600, eventId: 'evt_x' } };
    const cycles = [{ invoiceId: 'in_1', subscriptionId: 'sub_1', open: true }];
    expect(reduceBillingEvent(slice({ subscription: sub, cycles }), subscriptionEvent('canceled', 599))).toEqual({ verdict: 'stale', cycles: [], effects: [] });
    expect(reduceBillingEvent(slice({ subscription: sub, cycles }), subscriptionEvent('canceled', 600)).verdict).toBe('tie');
    expect(reduceBillingEvent(slice({ subscription: sub, cycles }), subscriptionEvent('canceled', 600), { tieBreak: 'precedence' }).effects).toHaveLength(1);
  });

  it('a new payment method reaches every open cycle', () => {
    const cycles = [
      { invoiceId: 'in_a', subscriptionId: 'sub_a', open: true },
      { invoiceId: 'in_b', subscriptionId: 'sub_b', open: false },
    ];
    const event: BillingEvent = {
      eventId: 'evt_pm',
      type: 'payment_method.attached',
      created: 700,
      customerId: CUS,
      objectId: 'pm_1',
      livemode: false,
      data: { kind: 'payment_method', paymentMethodId: 'pm_1', type: 'card', cardBrand: 'visa', cardLast4: '4242', detached: false },
    };
    expect(reduceBillingEvent(slice({ cycles }), event).effects).toEqual([
      { kind: 'signal_dunning', target: 'in_a', invoiceId: 'in_a', event: { kind: 'payment_method_updated', eventId: 'evt_pm', paymentMethodId: 'pm_1', at: 700 } },
    ]);
  });

  it('a succeeded charge or payment intent is recorded without an effect, even with an open cycle on its invoice', () => {
    const cycles = [{ invoiceId: 'in_1', subscriptionId: 'sub_1', open: true }];
    const base = { created: 750, customerId: CUS, livemode: false };
    const charge: BillingEvent = {
      ...base,
      eventId: 'evt_ch',
      type: 'charge.succeeded',
      objectId: 'ch_1',
      data: { kind: 'charge', chargeId: 'ch_1', paymentIntentId: 'pi_1', invoiceId: null, amount: 900, currency: 'usd' },
    };
    const intent: BillingEvent = {
      ...base,
      eventId: 'evt_pi',
      type: 'payment_intent.succeeded',
      objectId: 'pi_1',
      data: {
        kind: 'payment_intent',
        paymentIntentId: 'pi_1',
        status: 'succeeded',
        invoiceId: 'in_1',
        declineCode: null,
        adviceCode: null,
        networkDeclineCode: null,
        failureCode: null,
        latestChargeId: 'ch_1',
        amountReceived: 900,
        currency: 'usd',
      },
    };
    // A payment is not the invoice being paid (invoices take partial payments): invoice.paid ends the cycle.
    expect(reduceBillingEvent(slice({ cycles }), charge)).toEqual({ verdict: 'applied', cycles: [], effects: [] });
    expect(reduceBillingEvent(slice({ cycles, invoice: { ...paidInvoice, status: 'open', statusRank: 1 } }), intent)).toEqual({ verdict: 'applied', cycles: [], effects: [] });
  });

  it('a subscription read from Stripe ends the cycles of an ended subscription, unless a newer event was applied', () => {
    const cycles = [{ invoiceId: 'in_1', subscriptionId: 'sub_1', open: true }];
    const snapshot = { subscriptionId: 'sub_1', customerId: CUS, status: 'canceled' as const, priceId: null, currentPeriodStart: null, currentPeriodEnd: null, cancelAtPeriodEnd: false, canceledAt: null, trialEnd: null, fetchedAt: 800 };
    expect(reduceSubscriptionSnapshot(slice({ cycles }), snapshot, 800, 'evt_tie').effects).toHaveLength(1);
    const newer = slice({ cycles, subscription: { id: 'sub_1', status: 'active', watermark: { created: 900, eventId: 'e' } } });
    expect(reduceSubscriptionSnapshot(newer, snapshot, 800, null).verdict).toBe('stale');
  });
});

describe('the current subscription rule', () => {
  it('prefers a live subscription, then the newest by Stripe time, then by local time, then by id', () => {
    const rows = [
      { id: 'sub_c', status: 'canceled' as const, stripeUpdatedAt: 900, updatedAt: 900 },
      { id: 'sub_b', status: 'active' as const, stripeUpdatedAt: 500, updatedAt: 10 },
      { id: 'sub_a', status: 'past_due' as const, stripeUpdatedAt: 500, updatedAt: 10 },
      { id: 'sub_d', status: 'active' as const, stripeUpdatedAt: 400, updatedAt: 990 },
    ];
    expect(pickCurrentSubscription(rows)?.id).toBe('sub_a');
    expect(pickCurrentSubscription([rows[0]!])?.id).toBe('sub_c');
    expect(pickCurrentSubscription([])).toBeNull();
    expect(compareCurrentSubscription(rows[1]!, rows[2]!)).toBeGreaterThan(0);
  });
});

describe('the access rule', () => {
  const sub = (id: string, status: 'active' | 'past_due' | 'canceled' | 'unpaid') => ({ id, status, stripeUpdatedAt: 1, updatedAt: 1 });
  const facts = (over: Partial<AccessFacts> = {}): AccessFacts => ({ subscriptions: [sub('sub_1', 'active')], inDunning: false, disputed: false, writtenOffSubscriptionIds: [], ...over });

  it('follows the current subscription, then the overrides, strongest last', () => {
    expect(deriveAccessState(facts())).toBe('active');
    expect(deriveAccessState(facts({ subscriptions: [] }))).toBe('none');
    expect(deriveAccessState(facts({ inDunning: true }))).toBe('grace');
    expect(deriveAccessState(facts({ inDunning: true, disputed: true }))).toBe('restricted');
    expect(deriveAccessState(facts({ disputed: true, writtenOffSubscriptionIds: ['sub_1'] }))).toBe('suspended');
    expect(deriveAccessState(facts({ subscriptions: [sub('sub_1', 'canceled')], disputed: true }))).toBe('suspended');
    expect(deriveAccessState(facts({ subscriptions: [sub('sub_1', 'unpaid')], disputed: true }))).toBe('restricted');
  });

  it('suspends only for a written-off invoice of the current subscription', () => {
    expect(deriveAccessState(facts({ writtenOffSubscriptionIds: ['sub_old'] }))).toBe('active');
    expect(deriveAccessState(facts({ subscriptions: [sub('sub_old', 'canceled'), sub('sub_1', 'active')], writtenOffSubscriptionIds: ['sub_old'] }))).toBe('active');
  });
});

describe('trial ending', () => {
  const trialWillEnd = (created: number, status: 'trialing' | 'active' = 'trialing'): BillingEvent => {
    const e = subscriptionEvent('active', created);
    return {
      ...e,
      eventId: `evt_trial_${created}_${status}`,
      type: 'customer.subscription.trial_will_end',
      data: { ...(e.data as Extract<BillingEvent['data'], { kind: 'subscription' }>), status, trialEnd: created + 3 * 86400 },
    };
  };

  it('tells the customer once per trial end (a notify effect keyed by subscription and trial end)', () => {
    const r = reduceBillingEvent(slice(), trialWillEnd(1_000));
    expect(r).toEqual({
      verdict: 'applied',
      cycles: [],
      effects: [{ kind: 'notify', target: `trial_ending:sub_1:${1_000 + 3 * 86400}`, notice: 'trial_ending', invoiceId: 'sub_1' }],
    });
  });

  it('says nothing when the subscription is no longer trialing, or the event is stale', () => {
    expect(reduceBillingEvent(slice(), trialWillEnd(1_000, 'active')).effects).toEqual([]);
    const newer = slice({ subscription: { id: 'sub_1', status: 'trialing', watermark: { created: 2_000, eventId: 'evt_newer' } } });
    expect(reduceBillingEvent(newer, trialWillEnd(1_000))).toMatchObject({ verdict: 'stale', effects: [] });
  });
});

describe('a trial that ended without a payment method', () => {
  const paused = (created: number, over: Partial<Extract<BillingEvent['data'], { kind: 'subscription' }>> = {}): BillingEvent => {
    const e = subscriptionEvent('active', created);
    return {
      ...e,
      eventId: `evt_paused_${created}`,
      type: 'customer.subscription.paused',
      data: { ...(e.data as Extract<BillingEvent['data'], { kind: 'subscription' }>), status: 'paused', trialEnd: created, trialMissingPaymentMethod: 'pause', ...over },
    };
  };
  const customerUpdated = (created: number, pm: string | null): BillingEvent => ({
    eventId: `evt_cus_${created}`,
    type: 'customer.updated',
    created,
    customerId: CUS,
    objectId: CUS,
    livemode: false,
    data: { kind: 'customer', email: null, name: null, defaultPaymentMethodId: pm, deleted: false, defaultPaymentMethodChanged: true },
  });
  const setupSucceeded = (created: number, pm: string): BillingEvent => ({
    eventId: `evt_seti_${created}`,
    type: 'setup_intent.succeeded',
    created,
    customerId: CUS,
    objectId: `seti_${created}`,
    livemode: false,
    data: { kind: 'setup_intent', setupIntentId: `seti_${created}`, status: 'succeeded', paymentMethodId: pm },
  });
  const resume = (pm: string) => ({ kind: 'resume_subscription', target: 'sub_1', subscriptionId: 'sub_1', paymentMethodId: pm });

  it('resumes the paused subscription once the customer adds a payment method, beside retrying open cycles', () => {
    const cycles = [{ invoiceId: 'in_9', subscriptionId: 'sub_9', open: true }];
    const r = reduceBillingEvent(slice({ pausedTrialIds: ['sub_1'], cycles }), customerUpdated(500, 'pm_new'));
    expect(r.effects).toEqual([
      expect.objectContaining({ kind: 'signal_dunning', invoiceId: 'in_9' }),
      resume('pm_new'),
    ]);
    expect(reduceBillingEvent(slice({ pausedTrialIds: ['sub_1'] }), setupSucceeded(500, 'pm_seti')).effects).toEqual([resume('pm_seti')]);
  });

  it('resumes nothing without a paused trial, or when the default payment method was removed', () => {
    expect(reduceBillingEvent(slice(), customerUpdated(500, 'pm_new')).effects).toEqual([]);
    expect(reduceBillingEvent(slice({ pausedTrialIds: ['sub_1'] }), customerUpdated(500, null)).effects).toEqual([]);
  });

  it('resumes at once when the pause arrives after the card (out of order), only on the transition into paused', () => {
    expect(reduceBillingEvent(slice({ usablePaymentMethodId: 'pm_first' }), paused(600)).effects).toEqual([resume('pm_first')]);
    const already = slice({ usablePaymentMethodId: 'pm_first', subscription: { id: 'sub_1', status: 'paused', watermark: { created: 550, eventId: 'evt_x' } } });
    expect(reduceBillingEvent(already, paused(600)).effects).toEqual([]);
    expect(reduceBillingEvent(slice({ usablePaymentMethodId: null }), paused(600)).effects).toEqual([]);
  });

  it('leaves a subscription paused after a payment failure (no trial setting) to dunning, and a stale pause yields nothing', () => {
    expect(reduceBillingEvent(slice({ usablePaymentMethodId: 'pm_first' }), paused(600, { trialMissingPaymentMethod: null, trialEnd: null })).effects).toEqual([]);
    const newer = slice({ usablePaymentMethodId: 'pm_first', subscription: { id: 'sub_1', status: 'active', watermark: { created: 700, eventId: 'evt_newer' } } });
    expect(reduceBillingEvent(newer, paused(600))).toMatchObject({ verdict: 'stale', effects: [] });
  });

  it('grants no features while paused: access is restricted', () => {
    expect(deriveAccessState({ subscriptions: [{ id: 'sub_1', status: 'paused', stripeUpdatedAt: 1, updatedAt: 1 }], inDunning: false, disputed: false, writtenOffSubscriptionIds: [] })).toBe('restricted');
  });
});
