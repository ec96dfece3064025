/**
 * Every Stripe request of checkout, plan transitions and dunning, sent by the real code to stripe-mock, which
 * validates each one against Stripe's OpenAPI spec (unknown or malformed params → 400). stripe-mock
 * is stateless: responses are fixtures, so these tests prove request shapes, not Stripe's behaviour.
 */
import type { Client } from '@temporalio/client';
import type Stripe from 'stripe';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it, vi } from 'vitest';
import { createDunningActivities } from '../../activities/dunning';
import { createPlanChangeStripeActivities } from '../../activities/plan-change';
import { createTrialActivities } from '../../activities/trial';
import type { Plan } from '../../domain/plan-catalog';
import { createStripe } from '../../lib/stripe';
import { syncPlans } from '../../lib/plan-catalog-sync';
import { buildTestApp, stopTestDispatchers } from '../helpers/app';
import { createTestDatabase, testClient, testConfig, uniqueId, type TestDatabase } from '../helpers/services';

const PLANS: Plan[] = [
  { id: 'basic-monthly', stripePriceId: 'price_req_basic', name: 'Basic', amount: 900, currency: 'usd', interval: 'month', rank: 10, active: true },
  { id: 'pro-monthly', stripePriceId: 'price_req_pro', name: 'Pro', amount: 2900, currency: 'usd', interval: 'month', rank: 20, active: true },
];

type Sent = { method: string; path: string; status: number; idempotencyKey: string | null };

describe('Stripe request shapes against stripe-mock', () => {
  let db: TestDatabase;
  let client: Client;
  let stripe: Stripe;
  let sent: Sent[];
  const config = testConfig();

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await testClient();
    await syncPlans(db.sql, PLANS);
    stripe = createStripe({ secretKey: 'sk_test_123', apiBase: inject('stripeMockUrl'), maxNetworkRetries: 0 });
    stripe.on('response', (e: Stripe.ResponseEvent) => sent.push({ method: e.method, path: e.path, status: e.status, idempotencyKey: e.idempotency_key ?? null }));
  });

  beforeEach(() => {
    sent = [];
    vi.restoreAllMocks();
  });

  afterAll(async () => {
    await stopTestDispatchers();
    await client?.connection.close();
    await db?.drop();
  });

  const activities = () => createPlanChangeStripeActivities({ stripe });

  it('rejects a request outside the spec (the validation these tests rely on is live)', async () => {
    await expect(
      stripe.subscriptions.update('sub_123', { payment_behavior: 'pending_if_incomplete', proration_behavior: 'sometimes' } as never),
    ).rejects.toMatchObject({ type: 'StripeInvalidRequestError', statusCode: 400 });
  });

  it('creates a subscription-mode Checkout Session with metadata and a requestId-derived idempotency key', async () => {
    const { app } = buildTestApp({ sql: db.sql, temporal: client, config, stripe });
    const create = vi.spyOn(stripe.checkout.sessions, 'create');
    const requestId = uniqueId('co-');
    const res = await app.request('/checkout', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        planId: 'pro-monthly',
        email: 'new@example.com',
        trialDays: 14,
        successUrl: 'https://app.example.com/welcome?session={CHECKOUT_SESSION_ID}',
        cancelUrl: 'https://app.example.com/pricing',
        requestId,
      }),
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { sessionId: string; url: string; customerId: string };
    expect(body.sessionId).toMatch(/^cs_/);
    expect(create).toHaveBeenCalledTimes(1);
    const [params, options] = create.mock.calls[0]!;
    expect(params).toEqual({
      mode: 'subscription',
      customer: body.customerId,
      line_items: [{ price: 'price_req_pro', quantity: 1 }],
      success_url: 'https://app.example.com/welcome?session={CHECKOUT_SESSION_ID}',
      cancel_url: 'https://app.example.com/pricing',
      client_reference_id: requestId,
      metadata: { plan_id: 'pro-monthly', request_id: requestId },
      subscription_data: { metadata: { plan_id: 'pro-monthly', request_id: requestId }, trial_period_days: 14 },
    });
    expect(options).toEqual({ idempotencyKey: `checkout:${requestId}` });
    expect(sent).toEqual([
      { method: 'POST', path: '/v1/customers', status: 200, idempotencyKey: `checkout:${requestId}:customer` },
      { method: 'POST', path: '/v1/checkout/sessions', status: 200, idempotencyKey: `checkout:${requestId}` },
    ]);
  });

  it('starts a trial without a card: payment method collected only if required, the end of the trial set', async () => {
    const { app } = buildTestApp({ sql: db.sql, temporal: client, config, stripe });
    const create = vi.spyOn(stripe.checkout.sessions, 'create');
    const requestId = uniqueId('co-');
    const post = (body: Record<string, unknown>) =>
      app.request('/checkout', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ planId: 'pro-monthly', email: 'trial@example.com', successUrl: 'https://app.example.com/ok', cancelUrl: 'https://app.example.com/no', ...body }),
      });
    const refused = await post({ trialWithoutCard: 'pause', requestId: uniqueId('co-') });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({ details: [{ path: 'trialWithoutCard', message: 'trialWithoutCard needs trialDays' }] });
    expect((await post({ trialDays: 7, trialWithoutCard: 'sometimes', requestId: uniqueId('co-') })).status).toBe(400);
    expect(create).not.toHaveBeenCalled();

    const res = await post({ trialDays: 7, trialWithoutCard: 'pause', requestId });
    expect(res.status).toBe(201);
    expect(create.mock.calls[0]![0]).toMatchObject({
      payment_method_collection: 'if_required',
      subscription_data: { trial_period_days: 7, trial_settings: { end_behavior: { missing_payment_method: 'pause' } } },
    });
    expect(sent.filter((r) => r.path === '/v1/checkout/sessions')).toEqual([{ method: 'POST', path: '/v1/checkout/sessions', status: 200, idempotencyKey: `checkout:${requestId}` }]);
  });

  it('previews an upgrade with invoices.createPreview pinned to the returned prorationDate', async () => {
    const customerId = `cus_${uniqueId()}`;
    const subscriptionId = `sub_${uniqueId()}`;
    await db.sql`INSERT INTO customers (id) VALUES (${customerId})`;
    await db.sql`
      INSERT INTO subscriptions (id, customer_id, status, plan_id, price_id, current_period_start, current_period_end, stripe_updated_at)
      VALUES (${subscriptionId}, ${customerId}, 'active', 'basic-monthly', 'price_req_basic', now() - interval '10 days', now() + interval '20 days', now())`;
    const { app } = buildTestApp({ sql: db.sql, temporal: client, config, stripe });
    const preview = vi.spyOn(stripe.invoices, 'createPreview');
    const res = await app.request(`/customers/${customerId}/subscription/plan/preview`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ planId: 'pro-monthly' }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { prorationDate: number; amountDueNow: number; kind: string; amountDueNext: number };
    expect(body).toMatchObject({ kind: 'upgrade', amountDueNow: 1000, amountDueNext: 2900 });
    const [params] = preview.mock.calls[0]!;
    expect(params).toEqual({
      customer: customerId,
      subscription: subscriptionId,
      subscription_details: {
        items: [{ id: expect.stringMatching(/^si_/), price: 'price_req_pro' }],
        proration_behavior: 'always_invoice',
        proration_date: body.prorationDate,
      },
    });
    expect(sent.map((s) => [s.method, s.path, s.status])).toEqual([
      ['GET', `/v1/subscriptions/${subscriptionId}`, 200],
      ['POST', '/v1/invoices/create_preview', 200],
    ]);
  });

  it('upgrades with always_invoice, pending_if_incomplete and the pinned proration date', async () => {
    const update = vi.spyOn(stripe.subscriptions, 'update');
    const out = await activities().updateSubscriptionPlan({
      customerId: 'cus_req',
      subscriptionId: 'sub_req',
      requestId: 'up-1',
      fromPriceId: 'price_req_basic',
      toPriceId: 'price_req_pro',
      prorationDate: 1_767_225_600,
    });
    expect(update).toHaveBeenCalledWith(
      'sub_req',
      {
        items: [{ id: expect.stringMatching(/^si_/), price: 'price_req_pro' }],
        proration_behavior: 'always_invoice',
        payment_behavior: 'pending_if_incomplete',
        proration_date: 1_767_225_600,
        expand: ['latest_invoice'],
      },
      { idempotencyKey: 'plan-change:cus_req:up-1' },
    );
    // stripe-mock's subscription fixture carries a pending_update, so the change reads as not yet paid.
    expect(['pending', 'failed']).toContain(out.outcome);
    expect(out.expiresAt).toEqual(expect.any(Number));
    expect(sent.map((s) => [s.method, s.path.replace(/\?.*$/, ''), s.status, s.idempotencyKey])).toEqual([
      ['GET', '/v1/subscriptions/sub_req', 200, null],
      ['POST', '/v1/subscriptions/sub_req', 200, 'plan-change:cus_req:up-1'],
      ['GET', '/v1/invoice_payments', 200, null],
    ]);
  });

  it('schedules a downgrade at period end with a subscription schedule of two phases', async () => {
    const create = vi.spyOn(stripe.subscriptionSchedules, 'create');
    const update = vi.spyOn(stripe.subscriptionSchedules, 'update');
    const out = await activities().scheduleSubscriptionDowngrade({
      customerId: 'cus_req',
      subscriptionId: 'sub_req',
      requestId: 'down-1',
      fromPriceId: 'price_req_pro',
      toPriceId: 'price_req_basic',
      toInterval: 'month',
    });
    expect(out.scheduleId).toMatch(/^sub_sched_/);
    expect(out.effectiveAt).toEqual(expect.any(Number));
    expect(create).toHaveBeenCalledWith({ from_subscription: 'sub_req' }, { idempotencyKey: 'plan-change:cus_req:down-1:schedule' });
    expect(update).toHaveBeenCalledWith(
      out.scheduleId,
      {
        end_behavior: 'release',
        proration_behavior: 'none',
        phases: [
          { items: [{ price: expect.stringMatching(/^price_/), quantity: 1 }], start_date: expect.any(Number), end_date: out.effectiveAt },
          { items: [{ price: 'price_req_basic', quantity: 1 }], duration: { interval: 'month', interval_count: 1 } },
        ],
        metadata: { plan_change_request_id: 'down-1', plan_change_to_price: 'price_req_basic' },
      },
      { idempotencyKey: 'plan-change:cus_req:down-1:phases' },
    );
    expect(sent.every((s) => s.status === 200)).toBe(true);
    expect(sent.map((s) => s.path)).toEqual(['/v1/subscriptions/sub_req', '/v1/subscription_schedules', `/v1/subscription_schedules/${out.scheduleId}`]);
  });

  it('withdraws a scheduled downgrade by releasing the schedule', async () => {
    const release = vi.spyOn(stripe.subscriptionSchedules, 'release');
    const out = await activities().releaseSubscriptionSchedule({ customerId: 'cus_req', subscriptionId: 'sub_req', requestId: 'cp-1', scheduleId: 'sub_sched_req' });
    expect(out).toEqual({ released: true, scheduleId: 'sub_sched_req' });
    expect(release).toHaveBeenCalledWith('sub_sched_req', {}, { idempotencyKey: 'plan-change:cus_req:cp-1:release' });
    expect(sent.map((s) => [s.method, s.path, s.status])).toEqual([
      ['GET', '/v1/subscription_schedules/sub_sched_req', 200],
      ['POST', '/v1/subscription_schedules/sub_sched_req/release', 200],
    ]);
  });

  it('cancels at period end, cancels now, and resumes, each with its own idempotency key', async () => {
    const a = activities();
    await a.cancelStripeSubscription({ customerId: 'cus_req', subscriptionId: 'sub_req', requestId: 'c-1', atPeriodEnd: true });
    await a.cancelStripeSubscription({ customerId: 'cus_req', subscriptionId: 'sub_req', requestId: 'c-2', atPeriodEnd: false });
    const resumed = await a.resumeStripeSubscription({ customerId: 'cus_req', subscriptionId: 'sub_req', requestId: 'r-1' });
    expect(resumed.status).toBe('active');
    expect(sent.map((s) => [s.method, s.path, s.status, s.idempotencyKey])).toEqual([
      ['POST', '/v1/subscriptions/sub_req', 200, 'subscription-cancel:cus_req:c-1'],
      ['DELETE', '/v1/subscriptions/sub_req', 200, 'subscription-cancel:cus_req:c-2'],
      ['POST', '/v1/subscriptions/sub_req', 200, 'subscription-resume:cus_req:r-1'],
    ]);
  });

  it('sends cancel_at_period_end true to cancel and false to resume', async () => {
    const update = vi.spyOn(stripe.subscriptions, 'update');
    const a = activities();
    await a.cancelStripeSubscription({ customerId: 'cus_req', subscriptionId: 'sub_req', requestId: 'c-3', atPeriodEnd: true });
    await a.resumeStripeSubscription({ customerId: 'cus_req', subscriptionId: 'sub_req', requestId: 'r-2' });
    expect(update.mock.calls.map((c) => c[1])).toEqual([{ cancel_at_period_end: true }, { cancel_at_period_end: false }]);
  });

  describe('dunning', () => {
    const dunning = () => createDunningActivities({ sql: db.sql, stripe, config });

    it('reads the decline from the invoice payments, expanded to the PaymentIntent', async () => {
      const list = vi.spyOn(stripe.invoicePayments, 'list');
      await dunning().fetchInvoiceDecline({ invoiceId: 'in_req_decline' });
      expect(list).toHaveBeenCalledWith({ invoice: 'in_req_decline', limit: 10, expand: ['data.payment.payment_intent'] });
      expect(sent).toEqual([expect.objectContaining({ method: 'GET', path: expect.stringMatching(/^\/v1\/invoice_payments\?/), status: 200 })]);
    });

    it('retries with the new card: the subscription default first, then invoices.pay naming it', async () => {
      await dunning().retryInvoicePayment({ invoiceId: 'in_req_retry', attempt: 2, paymentMethodId: 'pm_req_new', subscriptionId: 'sub_req_retry' });
      expect(sent.map((r) => [r.method, r.path, r.status, r.idempotencyKey])).toEqual([
        ['POST', '/v1/subscriptions/sub_req_retry', 200, 'dunning:in_req_retry:2:default-payment-method'],
        ['POST', '/v1/invoices/in_req_retry/pay', 200, 'dunning:in_req_retry:2'],
      ]);
    });

    it('writes the invoice off (mark_uncollectible) and reads the subscription back', async () => {
      await dunning().applyDunningFinalAction({ invoiceId: 'in_req_final', subscriptionId: 'sub_req_final', finalAction: 'mark_uncollectible' });
      expect(sent.map((r) => [r.method, r.path, r.status, r.idempotencyKey])).toEqual([
        ['POST', '/v1/invoices/in_req_final/mark_uncollectible', 200, 'dunning:in_req_final:final'],
        ['GET', '/v1/subscriptions/sub_req_final', 200, null],
      ]);
    });

    it('re-reads the invoice before a final action, and voids an expired upgrade\'s proration invoice', async () => {
      await dunning().fetchInvoiceStatus({ invoiceId: 'in_req_status' });
      await dunning().voidInvoice({ invoiceId: 'in_req_void', reason: 'pending update expired' });
      expect(sent.map((r) => [r.method, r.path, r.status, r.idempotencyKey])).toEqual([
        ['GET', '/v1/invoices/in_req_status', 200, null],
        ['POST', '/v1/invoices/in_req_void/void', 200, 'void:in_req_void'],
      ]);
    });
  });

  it('resumes a trial paused for want of a card: the card becomes the subscription default, then resume', async () => {
    // stripe-mock's fixture subscription is active: the read is made paused, the writes go to stripe-mock.
    vi.spyOn(stripe.subscriptions, 'retrieve').mockResolvedValue({ id: 'sub_req_paused', status: 'paused', default_payment_method: null } as never);
    const result = await createTrialActivities({ stripe }).resumePausedSubscription({ subscriptionId: 'sub_req_paused', paymentMethodId: 'pm_req_card' });
    expect(result.outcome).toBe('resumed');
    expect(sent.map((r) => [r.method, r.path, r.status, r.idempotencyKey])).toEqual([
      ['POST', '/v1/subscriptions/sub_req_paused', 200, 'resume-paused:sub_req_paused:pm_req_card:default-payment-method'],
      ['POST', '/v1/subscriptions/sub_req_paused/resume', 200, 'resume-paused:sub_req_paused:pm_req_card'],
    ]);
  });
});
