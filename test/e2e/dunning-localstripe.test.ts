/**
 * Dunning end to end on localstripe: a real (emulated) renewal failure reaches the in-process API by
 * signed webhook, the customer workflow starts the dunning cycle on the shared Temporal dev server,
 * the scheduled retry fails on the 3DS card, a good card triggers an immediate retry that pays, and
 * the local state returns to active.
 *
 * Where localstripe differs from Stripe (see ../shared/EMULATORS.md), this test does the closest
 * honest thing and says so:
 * - `POST /v1/invoices/:id/pay` answers 500 to `off_session` and `payment_method`, a subscription update
 *   to `default_payment_method` answers 500, and `/v1/invoice_payments` does not exist: the worker's
 *   Stripe client works around each on the way out (see withoutOffSession; the activity still sends
 *   the parameters, and the test asserts it did).
 * - localstripe never sends `payment_method.attached` and its `customer.updated` has no
 *   `previous_attributes`: after attaching the good card for real, the test posts a signed
 *   `payment_method.attached` envelope around the payment method localstripe returned.
 * - the 3DS failure's `invoice.payment_failed` carries no decline code (treated as soft), and a 3DS
 *   card on `/pay` answers 200 with the invoice still open (recorded as a failed attempt).
 */
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import type { Client } from '@temporalio/client';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities';
import { customerWorkflowId, dunningWorkflowId } from '../../domain/ids';
import { stateQuery } from '../../workflows/contracts';
import { buildTestApp, stopTestDispatchers } from '../helpers/app';
import { createStripe } from '../../lib/stripe';
import {
  TEST_WEBHOOK_SECRET,
  createTestDatabase,
  eventually,
  startTestWorker,
  testClient,
  testConfig,
  uniqueId,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';

/** Retry 1 about 4 s after the failure, retry 2 about 43 s after it (the good card must win before that). */
const RETRY_DAYS = '0.00005,0.0005';
const THREE_DS_CARD = '4000002500003155';

describe('dunning end to end on localstripe', () => {
  const localstripeUrl = inject('localstripeUrl');
  const hookId = uniqueId('dunning-e2e-');
  const config = testConfig({
    TEMPORAL_TASK_QUEUE: uniqueId('dunning-e2e-'),
    STRIPE_API_BASE: localstripeUrl,
    DUNNING_RETRY_DAYS: RETRY_DAYS,
    DUNNING_FINAL_ACTION: 'leave_past_due',
  });
  const stripe = createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: localstripeUrl, maxNetworkRetries: 0 });
  const payParams: unknown[] = [];
  let db: TestDatabase;
  let temporal: Client;
  let worker: RunningWorker;
  let server: ServerType;
  let apiUrl = '';

  beforeAll(async () => {
    db = await createTestDatabase();
    temporal = await testClient();
    worker = await startTestWorker({
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      activities: createActivities({ sql: db.sql, stripe: withoutOffSession(createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: localstripeUrl, maxNetworkRetries: 0 }), payParams), config }),
    });
    // The real app with its dispatcher, served on a socket localstripe posts to.
    const { app } = buildTestApp({ sql: db.sql, temporal, config, stripe });
    server = await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
    });
    apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await registerWebhook(`${apiUrl}/webhooks/stripe`);
  });

  afterAll(async () => {
    await stopTestDispatchers();
    // localstripe cannot delete a webhook: point this one at no event type instead.
    await registerWebhook('http://127.0.0.1:9/unused', ['billing.e2e.none']).catch(() => {});
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await worker?.stop();
    await temporal?.connection.close();
    await db?.drop();
  });

  async function registerWebhook(url: string, events?: string[]): Promise<void> {
    const body = new URLSearchParams({ url, secret: TEST_WEBHOOK_SECRET });
    for (const e of events ?? []) body.append('events[]', e);
    const res = await fetch(`${localstripeUrl}/_config/webhooks/${hookId}`, { method: 'POST', body });
    if (!res.ok) throw new Error(`localstripe webhook registration failed: ${res.status}`);
  }

  async function local(customerId: string) {
    const [row] = await db.sql<{ access_state: string; status: string | null }[]>`
      SELECT c.access_state, s.status::text AS status FROM customers c LEFT JOIN subscriptions s ON s.customer_id = c.id
      WHERE c.id = ${customerId}`;
    return row ?? null;
  }

  it('recovers a 3DS renewal failure with a new card: local state back to active, cycle recovered', async () => {
    // An active subscription paid with a good card.
    const product = await stripe.products.create({ name: 'Dunning e2e' });
    const plan = await stripe.plans.create({ product: product.id, amount: 2000, currency: 'usd', interval: 'month' });
    const customer = await stripe.customers.create({ email: `${uniqueId('dunning-')}@example.com` });
    const firstCard = await stripe.paymentMethods.attach('pm_card_visa', { customer: customer.id });
    await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: firstCard.id } });
    const subscription = await stripe.subscriptions.create({ customer: customer.id, items: [{ plan: plan.id }] } as never);
    expect(subscription.status).toBe('active');
    await eventually(async () => (await local(customer.id))?.status === 'active', 20_000, 'the subscription to be mirrored as active');

    // The renewal is charged to a 3DS card and the customer fails authentication.
    const threeDs = await stripe.paymentMethods.create({ type: 'card', card: { number: THREE_DS_CARD, exp_month: 12, exp_year: 2030, cvc: '123' } });
    await stripe.paymentMethods.attach(threeDs.id, { customer: customer.id });
    await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: threeDs.id } });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 2000, currency: 'usd' } as never);
    const renewal = await stripe.invoices.create({ customer: customer.id, subscription: subscription.id } as never);
    const pending = (await stripe.invoices.pay(renewal.id)) as unknown as { status: string; payment_intent: string };
    expect(pending.status).toBe('open');
    const intent = await stripe.paymentIntents.retrieve(pending.payment_intent);
    expect(intent.status).toBe('requires_action');
    const auth = await fetch(`${localstripeUrl}/v1/payment_intents/${intent.id}/_authenticate`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${config.STRIPE_SECRET_KEY}` },
      body: new URLSearchParams({ client_secret: intent.client_secret!, success: 'false' }),
    });
    expect(auth.status).toBe(200);
    expect((await stripe.subscriptions.retrieve(subscription.id)).status).toBe('past_due');

    // invoice.payment_failed arrives by webhook and opens the cycle; the customer is in grace.
    await eventually(async () => {
      const [c] = await db.sql`SELECT state FROM dunning_cycles WHERE invoice_id = ${renewal.id}`;
      return c?.state === 'retrying';
    }, 20_000, 'the dunning cycle to open');
    await eventually(async () => {
      const l = await local(customer.id);
      return l?.status === 'past_due' && l.access_state === 'grace';
    }, 20_000, 'local past_due / grace');

    // Retry 1 follows the schedule and fails: the 3DS card cannot be charged off-session.
    await eventually(async () => {
      const [a] = await db.sql`SELECT outcome FROM dunning_attempts WHERE invoice_id = ${renewal.id} AND attempt = 1`;
      return a?.outcome === 'failed';
    }, 30_000, 'scheduled retry 1 to fail');

    // The customer adds a good card; its payment_method.attached triggers an immediate retry.
    const goodCard = await stripe.paymentMethods.attach('pm_card_visa', { customer: customer.id });
    await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: goodCard.id } });
    await postSignedEvent('payment_method.attached', goodCard);

    const handle = temporal.workflow.getHandle(dunningWorkflowId(renewal.id));
    expect(await handle.result()).toEqual({ invoiceId: renewal.id, outcome: 'recovered', attempts: 2 });
    const attempts = await db.sql<{ attempt: number; trigger: string; outcome: string }[]>`
      SELECT attempt, trigger, outcome FROM dunning_attempts WHERE invoice_id = ${renewal.id} ORDER BY attempt`;
    expect(attempts.map((a) => [a.attempt, a.trigger, a.outcome])).toEqual([
      [1, 'schedule', 'failed'],
      [2, 'payment_method', 'succeeded'],
    ]);
    // The retry after the new card names it: it pays with that card, not the one that failed.
    expect(payParams).toEqual([{ off_session: true }, { off_session: true, payment_method: goodCard.id }]);
    expect((await stripe.invoices.retrieve(renewal.id)).status).toBe('paid');

    const [cycle] = await db.sql`SELECT state, ended_at FROM dunning_cycles WHERE invoice_id = ${renewal.id}`;
    expect(cycle).toMatchObject({ state: 'recovered' });
    expect(cycle!.ended_at).not.toBeNull();
    await eventually(async () => {
      const l = await local(customer.id);
      return l?.status === 'active' && l.access_state === 'active';
    }, 20_000, 'local state back to active');
    await eventually(async () => {
      const state = await temporal.workflow.getHandle(customerWorkflowId(customer.id)).query(stateQuery);
      return state.dunning.find((d) => d.invoiceId === renewal.id)?.state === 'recovered';
    }, 20_000, 'the customer workflow to see the recovery');
    // Ops can find the cycle in the Temporal UI by its search attributes.
    const listed = await eventually(async () => {
      const ids: string[] = [];
      const query = `BillingWorkflowKind = 'dunning' AND StripeCustomerId = '${customer.id}' AND DunningState = 'recovered'`;
      for await (const wf of temporal.workflow.list({ query })) ids.push(wf.workflowId);
      return ids.length ? ids : null;
    }, 20_000, 'visibility to list the recovered cycle');
    expect(listed).toEqual([dunningWorkflowId(renewal.id)]);
    const read = await (await fetch(`${apiUrl}/customers/${customer.id}`)).json();
    expect(read).toMatchObject({ accessState: 'active', subscription: { status: 'active' }, dunning: { invoiceId: renewal.id, state: 'recovered', attempt: 2 } });

    const metrics = await (await fetch(`${apiUrl}/metrics`)).text();
    expect(metrics).toMatch(/^billing_dunning_cycles\{state="recovered"\} 1$/m);
    expect(metrics).toMatch(/^billing_dunning_recovery_rate 1$/m);
    expect(metrics).toMatch(/^billing_dunning_recovered_by_attempt\{attempt="2"\} 1$/m);
  }, 120_000);

  async function postSignedEvent(type: string, object: unknown): Promise<void> {
    const payload = JSON.stringify({
      id: `evt_${uniqueId()}`,
      object: 'event',
      type,
      api_version: '2017-08-15',
      created: Math.floor(Date.now() / 1000),
      livemode: false,
      data: { object },
    });
    const res = await fetch(`${apiUrl}/webhooks/stripe`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Stripe-Signature': stripe.webhooks.generateTestHeaderString({ payload, secret: TEST_WEBHOOK_SECRET }) },
      body: payload,
    });
    expect(res.status).toBe(200);
  }
});

/** localstripe answers 500 to `off_session` on /pay: record what the activity sent, forward the rest. */
function withoutOffSession(stripe: Stripe, sent: unknown[]): Stripe {
  const pay = stripe.invoices.pay.bind(stripe.invoices);
  stripe.invoices.pay = ((id: string, params?: Stripe.InvoicePayParams, options?: Stripe.RequestOptions) => {
    sent.push(params);
    // localstripe answers 500 to both; it pays with the customer's default method, which the test sets to the new card.
    const { off_session: _dropped, payment_method: _pm, ...rest } = params ?? {};
    return pay(id, rest, options);
  }) as typeof stripe.invoices.pay;
  // localstripe has no invoice payments (decline data is covered by the time-skipping suite and the gateway).
  stripe.invoicePayments.list = (async () => ({ object: 'list', data: [], has_more: false, url: '/v1/invoice_payments' })) as never;
  // localstripe answers 500 to default_payment_method on a subscription update: keep the subscription as it is.
  const update = stripe.subscriptions.update.bind(stripe.subscriptions);
  stripe.subscriptions.update = ((id: string, params?: Stripe.SubscriptionUpdateParams, options?: Stripe.RequestOptions) => {
    const { default_payment_method: _default, ...rest } = params ?? {};
    return Object.keys(rest).length === 0 ? stripe.subscriptions.retrieve(id) : update(id, rest, options);
  }) as typeof stripe.subscriptions.update;
  return stripe;
}
