/**
 * Seats over HTTP: POST …/subscription/quantity/preview and PUT …/subscription/quantity, through the real
 * app, the customer workflow's changeQuantity Update on the Temporal dev server, the real activities on a
 * real Postgres, and the real seat activities on an in-memory Stripe (test/helpers/seat-stripe.ts) that
 * keeps quantities and schedules. Webhooks are stripeEvent signals, as in plan-change.test.ts.
 */
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { createPlanChangeStripeActivities } from '../../activities/plan-change';
import { createSeatStripeActivities } from '../../activities/seats';
import type { BillingEvent, SubscriptionData } from '../../domain/billing-event';
import type { Plan } from '../../domain/plan-catalog';
import { changeQuantityUpdate, stateQuery, stripeEventSignal } from '../../workflows/contracts';
import { syncPlans } from '../../lib/plan-catalog-sync';
import { buildTestApp } from '../helpers/app';
import { customerCreatedEvent, slimSubscriptionEvent, startCustomerWorkflow } from '../helpers/customer-events';
import { useTestStack } from '../helpers/harness';
import { createSeatStripe, type SeatSubscription } from '../helpers/seat-stripe';
import { eventually, realActivities, uniqueId } from '../helpers/services';

const PLANS: Plan[] = [
  { id: 'team-monthly', stripePriceId: 'price_seat_team', name: 'Team', amount: 900, currency: 'usd', interval: 'month', rank: 10, active: true },
  { id: 'business-monthly', stripePriceId: 'price_seat_biz', name: 'Business', amount: 2900, currency: 'usd', interval: 'month', rank: 20, active: true },
];
const PRICE = 'price_seat_team';
const NOW = Math.floor(Date.now() / 1000);
const PERIOD_START = NOW - 10 * 86_400;
const PERIOD_END = NOW + 20 * 86_400;

type Json = Record<string, any>;

describe('seats: preview and change the subscription quantity (HTTP → Workflow Update → Stripe)', () => {
  const fake = createSeatStripe();
  const stack = useTestStack({
    // The plan-change activities too: withdrawing a scheduled decrease releases its schedule.
    activities: (db, config) => ({
      ...realActivities(db.sql, config),
      ...createPlanChangeStripeActivities({ stripe: fake.stripe }),
      ...createSeatStripeActivities({ stripe: fake.stripe }),
    }),
    app: { stripe: fake.stripe, dispatch: false },
    seed: async (s) => {
      await syncPlans(s.sql, PLANS);
    },
  });
  let clock = NOW - 3600;

  const send = (method: string, path: string, body: unknown, app = stack.app) =>
    Promise.resolve(app.request(path, { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })).then(async (r) => ({
      status: r.status,
      body: (await r.json()) as Json,
    }));
  const preview = (customerId: string, quantity: unknown, app = stack.app) => send('POST', `/customers/${customerId}/subscription/quantity/preview`, { quantity }, app);
  const commit = (customerId: string, body: Json, app = stack.app) => send('PUT', `/customers/${customerId}/subscription/quantity`, body, app);
  const pins = (p: Json) => ({ prorationDate: p.prorationDate, subscriptionVersion: p.subscriptionVersion });

  function event(customerId: string, subscriptionId: string, data: Partial<SubscriptionData>, type?: string): BillingEvent {
    clock += 5;
    return slimSubscriptionEvent({ customerId, subscriptionId, created: clock, ...(type ? { type } : {}), data: { priceId: PRICE, currentPeriodStart: PERIOD_START, currentPeriodEnd: PERIOD_END, ...data } });
  }

  /** A customer whose subscription (in Stripe and, by its created webhook, locally) has `quantity` seats. */
  async function startCustomer(quantity: number, extra: Partial<SeatSubscription> = {}) {
    const customerId = `cus_${uniqueId()}`;
    const sub = fake.add({ id: `sub_${uniqueId()}`, customer: customerId, itemId: `si_${uniqueId()}`, priceId: PRICE, unitAmount: 900, quantity, periodStart: PERIOD_START, periodEnd: PERIOD_END, ...extra });
    const items = (q: number) => [{ id: sub.itemId, priceId: PRICE, quantity: q }];
    const handle = await startCustomerWorkflow(stack.client, {
      taskQueue: stack.config.TEMPORAL_TASK_QUEUE,
      customerId,
      event: event(customerId, sub.id, { items: items(quantity) }, 'customer.subscription.created'),
    });
    const state = () => handle.query(stateQuery);
    await eventually(async () => (await state()).applied >= 1, 20_000, 'the subscription to be applied');
    return {
      customerId,
      sub,
      handle,
      state,
      /** Delivers a customer.subscription.updated as Stripe now has it (overridable) and waits until it is applied. */
      async webhook(data: Partial<SubscriptionData> = {}) {
        const e = event(customerId, sub.id, { items: items(sub.quantity), currentPeriodStart: sub.periodStart, currentPeriodEnd: sub.periodEnd, ...data });
        await handle.signal(stripeEventSignal, e);
        return eventually(async () => ((await state()).lastEventId === e.eventId ? state() : null), 20_000, 'the webhook to be applied');
      },
      async row() {
        const [r] = await stack.sql<{ quantity: number; pending_quantity: number | null; pending_quantity_effective_at: Date | null }[]>`
          SELECT quantity, pending_quantity, pending_quantity_effective_at FROM subscriptions WHERE id = ${sub.id}`;
        return r!;
      },
    };
  }

  it('charges an increase at the previewed proration date: the new quantity on the existing item, the previewed amount invoiced', async () => {
    const c = await startCustomer(3);
    const p = await preview(c.customerId, 5);
    expect(p.status).toBe(200);
    expect(p.body).toMatchObject({ customerId: c.customerId, subscriptionId: c.sub.id, planId: 'team-monthly', fromQuantity: 3, toQuantity: 5, kind: 'increase', currency: 'usd', amountDueNext: 4500, decreaseAt: null });
    expect(p.body.amountDueNow).toBeGreaterThan(0);
    expect(p.body.effectiveAt).toBe(p.body.prorationDate);
    // A commit a second later would prorate differently if it did not carry the preview's date.
    await new Promise((r) => setTimeout(r, 1100));
    const requestId = uniqueId('seat-up-');
    const res = await commit(c.customerId, { quantity: 5, requestId, ...pins(p.body) });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ requestId, kind: 'increase', fromQuantity: 3, toQuantity: 5, status: 'confirmed', effectiveAt: p.body.prorationDate });
    const updates = fake.calls.filter((x) => x.method === 'subscriptions.update' && x.id === c.sub.id);
    expect(updates).toEqual([
      {
        method: 'subscriptions.update',
        id: c.sub.id,
        params: { items: [{ id: c.sub.itemId, quantity: 5 }], proration_behavior: 'always_invoice', payment_behavior: 'pending_if_incomplete', proration_date: p.body.prorationDate, expand: ['latest_invoice'] },
        idempotencyKey: `seat-change:${c.customerId}:${requestId}`,
      },
    ]);
    expect(fake.invoices.get(res.body.invoiceId)).toBe(p.body.amountDueNow);

    // Stripe has 5 seats; the local row keeps 3 until the webhook, and asking for 5 again is "the current quantity".
    expect((await c.row()).quantity).toBe(3);
    expect((await c.state()).planChange).toMatchObject({ requestId, status: 'confirmed', fromQuantity: 3, toQuantity: 5 });
    expect((await commit(c.customerId, { quantity: 5, requestId: uniqueId('again-'), ...pins(p.body) })).body.error).toBe('same_quantity');
    await c.webhook();
    expect((await c.row()).quantity).toBe(5);
    expect((await send('GET', `/customers/${c.customerId}`, undefined)).body.subscription).toMatchObject({ quantity: 5, pendingQuantity: null });

    // The same request again: the same answer, no second Stripe call; another quantity under its id is refused.
    expect(await commit(c.customerId, { quantity: 5, requestId, ...pins(p.body) })).toEqual(res);
    expect((await commit(c.customerId, { quantity: 7, requestId })).body.error).toBe('request_id_reused');
    expect(fake.calls.filter((x) => x.method === 'subscriptions.update' && x.id === c.sub.id)).toHaveLength(1);
  });

  it('refuses an increase without its preview (422) and after the subscription changed since the preview (409), plan previews included', async () => {
    const c = await startCustomer(2);
    const unpinned = await commit(c.customerId, { quantity: 4, requestId: uniqueId('nopin-') });
    expect(unpinned).toMatchObject({ status: 422, body: { error: 'preview_required', message: expect.stringContaining('/quantity/preview') } });

    const seatPreview = await preview(c.customerId, 4);
    const planPreview = await send('POST', `/customers/${c.customerId}/subscription/plan/preview`, { planId: 'business-monthly' });
    expect(planPreview.status).toBe(200);
    // Seats changed in Stripe (the dashboard) between the previews and the commits: both previews are stale.
    fake.get(c.sub.id).quantity = 3;
    await c.webhook();
    expect(await commit(c.customerId, { quantity: 4, requestId: uniqueId('stale-'), ...pins(seatPreview.body) })).toMatchObject({ status: 409, body: { error: 'subscription_changed' } });
    const planCommit = await send('PUT', `/customers/${c.customerId}/subscription/plan`, { planId: 'business-monthly', requestId: uniqueId('stale-plan-'), ...pins(planPreview.body) });
    expect(planCommit).toMatchObject({ status: 409, body: { error: 'subscription_changed' } });
    expect(fake.calls.filter((x) => x.method === 'subscriptions.update' && x.id === c.sub.id)).toEqual([]);

    const fresh = await preview(c.customerId, 4);
    expect(fresh.body).toMatchObject({ fromQuantity: 3, toQuantity: 4 });
    expect(await commit(c.customerId, { quantity: 4, requestId: uniqueId('fresh-'), ...pins(fresh.body) })).toMatchObject({ status: 200, body: { status: 'confirmed' } });
  });

  it('schedules a decrease for the renewal (period_end): the next phase has fewer seats and keeps discounts, tax rates and metadata', async () => {
    const c = await startCustomer(5, {
      metadata: { tenant: 't_9' },
      itemTaxRates: [{ id: 'txr_state' }],
      phase: { discounts: [{ coupon: null, discount: 'di_team', promotion_code: null }], default_tax_rates: [{ id: 'txr_vat' }], metadata: { tenant: 't_9', deal: 'q4' } },
    });
    const p = await preview(c.customerId, 3);
    expect(p).toMatchObject({ status: 200, body: { kind: 'decrease', decreaseAt: 'period_end', fromQuantity: 5, toQuantity: 3, prorationDate: null, amountDueNow: 0, amountDueNext: 2700, effectiveAt: PERIOD_END, lines: [] } });
    const requestId = uniqueId('seat-down-');
    const res = await commit(c.customerId, { quantity: 3, requestId });
    expect(res).toMatchObject({ status: 202, body: { kind: 'decrease', status: 'scheduled', fromQuantity: 5, toQuantity: 3, effectiveAt: PERIOD_END } });

    const kept = { discounts: [{ discount: 'di_team' }], default_tax_rates: ['txr_vat'], metadata: { tenant: 't_9', deal: 'q4' } };
    const phases = fake.schedulePhases(c.sub.id);
    expect(phases).toEqual([
      { ...kept, start_date: PERIOD_START, end_date: PERIOD_END, items: [{ price: PRICE, quantity: 5, tax_rates: ['txr_state'] }] },
      { ...kept, duration: { interval: 'month', interval_count: 1 }, items: [{ price: PRICE, quantity: 3, tax_rates: ['txr_state'] }] },
    ]);
    const scheduleUpdate = fake.calls.find((x) => x.method === 'subscriptionSchedules.update' && x.id === `sub_sched_${c.sub.id}`)!;
    expect(scheduleUpdate).toMatchObject({ params: { end_behavior: 'release', proration_behavior: 'none', metadata: { seat_change_request_id: requestId, seat_change_to_quantity: '3' } }, idempotencyKey: `seat-change:${c.customerId}:${requestId}:phases` });
    expect(fake.calls.filter((x) => x.method === 'subscriptions.update' && x.id === c.sub.id)).toEqual([]);

    // Until the renewal: 5 seats, 3 pending, and no other change while it is scheduled.
    expect(await c.row()).toMatchObject({ quantity: 5, pending_quantity: 3 });
    expect((await c.row()).pending_quantity_effective_at?.getTime()).toBe(PERIOD_END * 1000);
    expect((await send('GET', `/customers/${c.customerId}`, undefined)).body.subscription).toMatchObject({ quantity: 5, pendingQuantity: 3 });
    expect((await commit(c.customerId, { quantity: 8, requestId: uniqueId('up-') })).body.error).toBe('change_in_flight');
    const midPeriod = await c.webhook();
    expect(midPeriod.planChange).toMatchObject({ requestId, status: 'scheduled', toQuantity: 3 });
    expect(await c.row()).toMatchObject({ quantity: 5, pending_quantity: 3 });

    // The renewal: Stripe's schedule moves to the next phase, and its webhook brings the 3 seats.
    fake.renew(c.sub.id);
    const renewed = await c.webhook();
    expect(renewed.planChange).toMatchObject({ requestId, status: 'confirmed' });
    expect(await c.row()).toMatchObject({ quantity: 3, pending_quantity: null, pending_quantity_effective_at: null });
  });

  it('withdraws a scheduled decrease with cancel-pending (the schedule is released)', async () => {
    const c = await startCustomer(4);
    expect((await commit(c.customerId, { quantity: 2, requestId: uniqueId('down-') })).status).toBe(202);
    const withdrawn = await send('POST', `/customers/${c.customerId}/subscription/plan/cancel-pending`, { requestId: uniqueId('cp-') });
    expect(withdrawn).toMatchObject({ status: 200, body: { status: 'canceled', message: expect.stringContaining('2 seats') } });
    expect(fake.calls.some((x) => x.method === 'subscriptionSchedules.release' && x.id === `sub_sched_${c.sub.id}`)).toBe(true);
    expect(await c.row()).toMatchObject({ quantity: 4, pending_quantity: null });
    expect((await c.state()).planChange).toMatchObject({ status: 'canceled', toQuantity: 2 });
  });

  it('SEAT_DECREASE_AT=now: decreases at once with a credit proration at the previewed date', async () => {
    const built = buildTestApp({ sql: stack.sql, temporal: stack.client, config: { ...stack.config, SEAT_DECREASE_AT: 'now' }, stripe: fake.stripe, dispatch: false });
    try {
      const c = await startCustomer(4);
      const p = await preview(c.customerId, 2, built.app);
      expect(p).toMatchObject({ status: 200, body: { kind: 'decrease', decreaseAt: 'now', amountDueNow: 0, fromQuantity: 4, toQuantity: 2 } });
      expect(p.body.prorationDate).toEqual(expect.any(Number));
      expect(p.body.lines.some((l: Json) => l.proration && l.amount < 0)).toBe(true);
      const requestId = uniqueId('seat-now-');
      const res = await commit(c.customerId, { quantity: 2, requestId, ...pins(p.body) }, built.app);
      expect(res).toMatchObject({ status: 200, body: { kind: 'decrease', status: 'confirmed', toQuantity: 2, effectiveAt: p.body.prorationDate } });
      expect(fake.calls.filter((x) => x.method.startsWith('subscriptionSchedules') && x.id === `sub_sched_${c.sub.id}`)).toEqual([]);
      expect(fake.calls.filter((x) => x.method === 'subscriptions.update' && x.id === c.sub.id)).toEqual([
        {
          method: 'subscriptions.update',
          id: c.sub.id,
          params: { items: [{ id: c.sub.itemId, quantity: 2 }], proration_behavior: 'create_prorations', proration_date: p.body.prorationDate },
          idempotencyKey: `seat-change:${c.customerId}:${requestId}`,
        },
      ]);
      expect(fake.get(c.sub.id).quantity).toBe(2);
      expect((await c.row()).quantity).toBe(4);
      await c.webhook();
      expect(await c.row()).toMatchObject({ quantity: 2, pending_quantity: null });
    } finally {
      await built.close();
    }
  });

  it('answers an increase awaiting payment with 202 and a declined one with 402, keeping the seats', async () => {
    const c = await startCustomer(1);
    try {
      fake.answerUpdates('declined');
      const declined = await commit(c.customerId, { quantity: 2, requestId: uniqueId('dec-'), ...pins((await preview(c.customerId, 2)).body) });
      expect(declined).toMatchObject({ status: 402, body: { status: 'failed', fromQuantity: 1, message: expect.stringContaining('insufficient_funds') } });
      fake.answerUpdates('requires_action');
      const pending = await commit(c.customerId, { quantity: 3, requestId: uniqueId('3ds-'), ...pins((await preview(c.customerId, 3)).body) });
      expect(pending).toMatchObject({ status: 202, body: { status: 'pending', toQuantity: 3 } });
      expect((await commit(c.customerId, { quantity: 4, requestId: uniqueId('blocked-') })).body.error).toBe('change_in_flight');
    } finally {
      fake.answerUpdates('paid');
    }
    // Paid later: Stripe applies the pending update and its webhook brings the seats.
    fake.get(c.sub.id).quantity = 3;
    expect((await c.webhook()).planChange).toMatchObject({ status: 'confirmed', toQuantity: 3 });
  });

  describe('invalid requests answer clear 4xx errors and reach no Stripe write', () => {
    it.each([
      ['quantity 0', { quantity: 0 }, 'quantity must be at least 1'],
      ['a fractional quantity', { quantity: 1.5 }, 'quantity must be an integer'],
      ['too many seats', { quantity: 10_001 }, 'quantity must be at most 10000'],
      ['no requestId', { quantity: 2, requestId: undefined }, 'requestId is required'],
      ['an unknown field', { quantity: 2, seats: 2 }, 'seats is not a known field'],
    ])('400 for %s', async (_label, body, message) => {
      const res = await commit(`cus_${uniqueId()}`, { requestId: uniqueId('bad-'), ...body });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ error: 'validation_error', details: [expect.objectContaining({ message })] });
    });

    it('rejects the same quantity, a canceling subscription, no subscription and an unknown customer', async () => {
      expect((await preview(`cus_${uniqueId()}`, 0)).body.error).toBe('validation_error');
      const c = await startCustomer(3);
      for (const res of [await preview(c.customerId, 3), await commit(c.customerId, { quantity: 3, requestId: uniqueId('same-') })]) {
        expect(res).toMatchObject({ status: 409, body: { error: 'same_quantity', message: expect.stringContaining('3 seats') } });
      }
      await c.webhook({ cancelAtPeriodEnd: true });
      for (const res of [await preview(c.customerId, 2), await commit(c.customerId, { quantity: 2, requestId: uniqueId('canceling-') })]) {
        expect(res).toMatchObject({ status: 409, body: { error: 'subscription_canceling', message: expect.stringContaining('resume') } });
      }
      expect(await commit(`cus_${uniqueId()}`, { quantity: 2, requestId: uniqueId('nocus-') })).toMatchObject({ status: 404, body: { error: 'customer_not_found' } });

      const customerId = `cus_${uniqueId()}`;
      clock += 5;
      const handle = await startCustomerWorkflow(stack.client, { taskQueue: stack.config.TEMPORAL_TASK_QUEUE, customerId, event: customerCreatedEvent(customerId, clock) });
      await eventually(async () => (await handle.query(stateQuery)).applied === 1, 20_000, 'the customer event');
      expect(await commit(customerId, { quantity: 2, requestId: uniqueId('nosub-') })).toMatchObject({ status: 404, body: { error: 'no_subscription' } });
      expect(await preview(customerId, 2)).toMatchObject({ status: 404, body: { error: 'no_subscription' } });
      // The validator itself, for callers other than the API (the CLI): quantity 0 never reaches the handler.
      const rejected = await handle.executeUpdate(changeQuantityUpdate, { args: [{ quantity: 0, requestId: uniqueId('zero-') }] }).catch((e: unknown) => e);
      expect(rejected).toBeInstanceOf(WorkflowUpdateFailedError);
      expect(((rejected as WorkflowUpdateFailedError).cause as ApplicationFailure).type).toBe('InvalidQuantity');
      expect(fake.calls.filter((x) => x.method === 'subscriptions.update' && x.id === c.sub.id)).toEqual([]);
    });
  });
});
