/**
 * The Stripe requests of seat changes, sent by the real activities and the real preview route to
 * stripe-mock, which validates each against Stripe's OpenAPI spec (unknown or malformed params → 400).
 * stripe-mock is stateless: these tests prove request shapes; test/workflows/seats.test.ts the behaviour.
 */
import type Stripe from 'stripe';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { createSeatStripeActivities } from '../../activities/seats';
import type { Plan } from '../../domain/plan-catalog';
import { syncPlans } from '../../lib/plan-catalog-sync';
import { useTestStack } from '../helpers/harness';
import { uniqueId } from '../helpers/services';

const PLANS: Plan[] = [{ id: 'team-monthly', stripePriceId: 'price_seatreq_team', name: 'Team', amount: 900, currency: 'usd', interval: 'month', rank: 10, active: true }];

type Sent = { method: string; path: string; status: number; idempotencyKey: string | null };

describe('seat-change Stripe request shapes against stripe-mock', () => {
  const stack = useTestStack({
    activities: false,
    app: { dispatch: false },
    seed: async (s) => {
      await syncPlans(s.sql, PLANS);
      s.built.stripe.on('response', (e: Stripe.ResponseEvent) => sent.push({ method: e.method, path: e.path, status: e.status, idempotencyKey: e.idempotency_key ?? null }));
    },
  });
  let sent: Sent[] = [];
  const seats = () => createSeatStripeActivities({ stripe: stack.built.stripe });

  beforeEach(() => {
    sent = [];
    vi.restoreAllMocks();
  });

  it('increases on the existing item with always_invoice, pending_if_incomplete and the pinned proration date', async () => {
    const update = vi.spyOn(stack.built.stripe.subscriptions, 'update');
    const out = await seats().updateSubscriptionQuantity({
      customerId: 'cus_req',
      subscriptionId: 'sub_req',
      requestId: 'seat-up-1',
      priceId: 'price_seatreq_team',
      quantity: 5,
      prorationDate: 1_767_225_600,
      proration: 'invoice',
    });
    expect(update).toHaveBeenCalledWith(
      'sub_req',
      {
        items: [{ id: expect.stringMatching(/^si_/), quantity: 5 }],
        proration_behavior: 'always_invoice',
        payment_behavior: 'pending_if_incomplete',
        proration_date: 1_767_225_600,
        expand: ['latest_invoice'],
      },
      { idempotencyKey: 'seat-change:cus_req:seat-up-1' },
    );
    // stripe-mock's fixture subscription carries a pending_update: the increase reads as awaiting payment.
    expect(['pending', 'failed']).toContain(out.outcome);
    expect(sent.map((s) => [s.method, s.path.replace(/\?.*$/, ''), s.status, s.idempotencyKey])).toEqual([
      ['GET', '/v1/subscriptions/sub_req', 200, null],
      ['POST', '/v1/subscriptions/sub_req', 200, 'seat-change:cus_req:seat-up-1'],
      ['GET', '/v1/invoice_payments', 200, null],
    ]);
  });

  it('decreases now with create_prorations at the pinned proration date', async () => {
    const update = vi.spyOn(stack.built.stripe.subscriptions, 'update');
    const out = await seats().updateSubscriptionQuantity({
      customerId: 'cus_req',
      subscriptionId: 'sub_req',
      requestId: 'seat-now-1',
      priceId: null,
      quantity: 2,
      prorationDate: 1_767_225_600,
      proration: 'credit',
    });
    expect(out.outcome).toBe('confirmed');
    expect(update.mock.calls[0]).toEqual([
      'sub_req',
      { items: [{ id: expect.stringMatching(/^si_/), quantity: 2 }], proration_behavior: 'create_prorations', proration_date: 1_767_225_600 },
      { idempotencyKey: 'seat-change:cus_req:seat-now-1' },
    ]);
    expect(sent.map((s) => s.status)).toEqual([200, 200]);
  });

  it('schedules a decrease: a schedule from the subscription, then two phases, the second with fewer seats', async () => {
    const update = vi.spyOn(stack.built.stripe.subscriptionSchedules, 'update');
    const out = await seats().scheduleSubscriptionQuantity({ customerId: 'cus_req', subscriptionId: 'sub_req', requestId: 'seat-down-1', priceId: null, quantity: 3 });
    expect(out.scheduleId).toMatch(/^sub_sched_/);
    const params = update.mock.calls[0]![1]!;
    expect(params.phases).toHaveLength(2);
    expect(params.phases![1]!.items[0]).toMatchObject({ price: params.phases![0]!.items[0]!.price, quantity: 3 });
    expect(params.phases![1]!.duration).toEqual({ interval: expect.any(String), interval_count: expect.any(Number) });
    expect(params.metadata).toEqual({ seat_change_request_id: 'seat-down-1', seat_change_to_quantity: '3' });
    expect(sent.map((s) => [s.method, s.path, s.status, s.idempotencyKey])).toEqual([
      ['GET', '/v1/subscriptions/sub_req', 200, null],
      ['POST', '/v1/subscription_schedules', 200, 'seat-change:cus_req:seat-down-1:schedule'],
      ['POST', `/v1/subscription_schedules/${out.scheduleId}`, 200, 'seat-change:cus_req:seat-down-1:phases'],
    ]);
  });

  it('previews an increase with invoices.createPreview: the quantity on the existing item, pinned to the returned prorationDate', async () => {
    const customerId = `cus_${uniqueId()}`;
    const subscriptionId = `sub_${uniqueId()}`;
    await stack.sql`INSERT INTO customers (id) VALUES (${customerId})`;
    await stack.sql`
      INSERT INTO subscriptions (id, customer_id, status, plan_id, price_id, current_period_start, current_period_end, quantity, stripe_updated_at)
      VALUES (${subscriptionId}, ${customerId}, 'active', 'team-monthly', 'price_seatreq_team', now() - interval '10 days', now() + interval '20 days', 2, now())`;
    const preview = vi.spyOn(stack.built.stripe.invoices, 'createPreview');
    const res = await stack.app.request(`/customers/${customerId}/subscription/quantity/preview`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ quantity: 4 }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { prorationDate: number; kind: string; fromQuantity: number; amountDueNext: number };
    expect(body).toMatchObject({ kind: 'increase', fromQuantity: 2, toQuantity: 4, amountDueNext: 3600 });
    expect(preview.mock.calls[0]![0]).toEqual({
      customer: customerId,
      subscription: subscriptionId,
      subscription_details: { items: [{ id: expect.stringMatching(/^si_/), quantity: 4 }], proration_behavior: 'always_invoice', proration_date: body.prorationDate },
    });
    expect(sent.map((s) => [s.method, s.path, s.status])).toEqual([
      ['GET', `/v1/subscriptions/${subscriptionId}`, 200],
      ['POST', '/v1/invoices/create_preview', 200],
    ]);
  });
});
