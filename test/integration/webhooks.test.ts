import { beforeEach, describe, expect, it } from 'vitest';
import { HANDLED_EVENT_TYPES } from '../../domain/events';
import { customerWorkflowId } from '../../domain/ids';
import { stateQuery } from '../../workflows/contracts';
import { buildTestApp, postWebhook, signPayload } from '../helpers/app';
import { useTestStack } from '../helpers/harness';
import { uniqueFixture } from '../helpers/fixtures';
import { eventually, testConfig, TEST_WEBHOOK_SECRET } from '../helpers/services';

describe('POST /webhooks/stripe with a real Postgres and Temporal dev server', () => {
  const stack = useTestStack({
    seed: async ({ sql }) => {
      await sql`
        INSERT INTO plans (id, stripe_price_id, name, amount, currency, interval, rank)
        VALUES ('pro-monthly', 'price_ProMonthly', 'Pro', 2900, 'usd', 'month', 20) ON CONFLICT DO NOTHING`;
    },
  });
  const { config } = stack;

  const applied = (eventId: string) =>
    eventually(async () => {
      const r = await stack.sql<{ outcome: string }[]>`SELECT outcome FROM applied_events WHERE event_id = ${eventId}`;
      return r[0]?.outcome ?? null;
    }, 20_000, `event ${eventId} to be applied`);

  describe('every handled type is applied to the right tables from a signed fixture', () => {
    it.each(HANDLED_EVENT_TYPES.map((t) => [t]))('%s', async (type) => {
      const { envelope, customerId } = uniqueFixture(type);
      const obj = envelope.data.object;
      if (type.startsWith('checkout.session')) {
        await stack.sql`
          INSERT INTO checkout_sessions (id, customer_id, plan_id, status) VALUES (${obj.id}, ${customerId}, 'pro-monthly', 'open')`;
      }
      if (type === 'charge.dispute.created' || type === 'charge.dispute.closed' || type === 'radar.early_fraud_warning.created') {
        // Disputes and fraud warnings name only the charge: the customer is found through the charges table.
        await stack.sql`INSERT INTO customers (id) VALUES (${customerId}) ON CONFLICT DO NOTHING`;
        await stack.sql`INSERT INTO charges (id, customer_id, amount, currency) VALUES (${obj.charge}, ${customerId}, ${obj.amount ?? 2900}, ${obj.currency ?? 'usd'})`;
      }
      const res = await postWebhook(stack.built.app, envelope);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ received: true, eventId: envelope.id, status: 'received', duplicate: false });
      const outcome = await applied(envelope.id);
      expect(outcome).toBe(type === 'invoice.upcoming' ? 'noop' : 'applied');

      const row = async (q: Promise<Record<string, unknown>[]>) => (await q)[0];
      if (type.startsWith('customer.subscription.')) {
        const s = await row(stack.sql`SELECT * FROM subscriptions WHERE id = ${obj.id}`);
        expect(s).toMatchObject({ customer_id: customerId, status: obj.status, price_id: 'price_ProMonthly', plan_id: 'pro-monthly' });
      } else if (type.startsWith('invoice.') && type !== 'invoice.upcoming') {
        const i = await row(stack.sql`SELECT * FROM invoices WHERE id = ${obj.id}`);
        expect(i).toMatchObject({ customer_id: customerId, status: obj.status, amount_due: obj.amount_due });
        if (type === 'invoice.created') expect(i).toMatchObject({ status: 'draft', hosted_invoice_url: null, paid_at: null });
      } else if (type === 'invoice.upcoming') {
        expect(await stack.sql`SELECT 1 FROM invoices WHERE customer_id = ${customerId}`).toHaveLength(0);
      } else if (type.startsWith('customer.')) {
        const c = await row(stack.sql`SELECT * FROM customers WHERE id = ${customerId}`);
        expect(c).toMatchObject({ email: obj.email ?? null, deleted: type === 'customer.deleted' });
      } else if (type.startsWith('payment_method.')) {
        const p = await row(stack.sql`SELECT * FROM payment_methods WHERE id = ${obj.id}`);
        expect(p).toMatchObject({ customer_id: customerId, attached: type === 'payment_method.attached', card_last4: obj.card.last4 });
      } else if (type === 'charge.dispute.created' || type === 'charge.dispute.closed') {
        const d = await row(stack.sql`SELECT * FROM disputes WHERE id = ${obj.id}`);
        expect(d).toMatchObject({ customer_id: customerId, charge_id: obj.charge, amount: obj.amount, status: obj.status });
      } else if (type === 'radar.early_fraud_warning.created') {
        const w = await row(stack.sql`SELECT * FROM fraud_warnings WHERE id = ${obj.id}`);
        expect(w).toMatchObject({ customer_id: customerId, charge_id: obj.charge, actionable: obj.actionable, fraud_type: obj.fraud_type });
      } else if (type === 'payment_intent.succeeded') {
        // No invoice here names this PaymentIntent (see the decline test below): the charge it settled with is recorded.
        const c = await row(stack.sql`SELECT * FROM charges WHERE id = ${obj.latest_charge}`);
        expect(c).toMatchObject({ customer_id: customerId, payment_intent_id: obj.id, amount: obj.amount_received, currency: obj.currency, refunded: false });
      } else if (type === 'payment_intent.payment_failed' || type === 'setup_intent.succeeded') {
        // No row of their own: a PaymentIntent's decline lands on its invoice, a setup intent's method
        // reaches open dunning cycles (test/integration/dunning-today.test.ts); here the apply is recorded.
        expect(await stack.sql`SELECT 1 FROM applied_events WHERE event_id = ${envelope.id}`).toHaveLength(1);
      } else if (type === 'charge.succeeded') {
        const c = await row(stack.sql`SELECT * FROM charges WHERE id = ${obj.id}`);
        expect(c).toMatchObject({
          customer_id: customerId,
          payment_intent_id: obj.payment_intent,
          amount: obj.amount,
          currency: obj.currency,
          amount_refunded: 0,
          refunded: false,
        });
      } else if (type === 'charge.refunded') {
        const c = await row(stack.sql`SELECT * FROM charges WHERE id = ${obj.id}`);
        expect(c).toMatchObject({ customer_id: customerId, refunded: true, amount_refunded: obj.amount_refunded });
      } else if (type.startsWith('checkout.session.')) {
        const c = await row(stack.sql`SELECT * FROM checkout_sessions WHERE id = ${obj.id}`);
        expect(c).toMatchObject({ status: type.endsWith('completed') ? 'complete' : 'expired' });
      } else if (type === 'entitlements.active_entitlement_summary.updated') {
        const e = await row(stack.sql`SELECT * FROM stripe_entitlements WHERE customer_id = ${customerId}`);
        expect(e).toMatchObject({ lookup_keys: ['audit_log', 'sso'], watermark_event_id: envelope.id });
      } else {
        throw new Error(`no assertion for ${type}`);
      }
      const log = await row(stack.sql`SELECT status, attempts, customer_id FROM webhook_events WHERE event_id = ${envelope.id}`);
      expect(log).toMatchObject({ status: 'applied', attempts: 1, customer_id: customerId });
    });
  });

  describe('the payment events of a renewal', () => {
    const post = async (envelope: { id: string }) => {
      const res = await postWebhook(stack.built.app, envelope);
      expect(res.status).toBe(200);
      return applied(envelope.id);
    };
    const status = async (eventId: string) =>
      (await stack.sql<{ status: string }[]>`SELECT status FROM webhook_events WHERE event_id = ${eventId}`)[0]?.status;

    it('a late invoice.created never moves a paid invoice back to draft, even from a later second', async () => {
      const paid = uniqueFixture('invoice.paid');
      expect(await post(paid.envelope)).toBe('applied');
      const created = uniqueFixture('invoice.created', { token: paid.token });
      created.envelope.created = paid.envelope.created + 5;
      expect(await post(created.envelope)).toBe('stale');
      expect(await status(created.envelope.id)).toBe('applied');
      const [invoice] = await stack.sql`SELECT status, amount_paid, watermark_event_id FROM invoices WHERE id = ${paid.envelope.data.object.id}`;
      expect(invoice).toEqual({ status: 'paid', amount_paid: 2900, watermark_event_id: paid.envelope.id });
    });

    it('a dispute of a charge recorded by charge.succeeded finds its customer locally', async () => {
      const charge = uniqueFixture('charge.succeeded');
      expect(await post(charge.envelope)).toBe('applied');
      // No charges row inserted by the test: the customer comes from the one charge.succeeded wrote
      // (stripe-mock, the fallback, would name another customer or none).
      const dispute = uniqueFixture('charge.dispute.created', { token: charge.token });
      expect(dispute.envelope.data.object.charge).toBe(charge.envelope.data.object.id);
      expect(await post(dispute.envelope)).toBe('applied');
      const [row] = await stack.sql`SELECT customer_id FROM disputes WHERE id = ${dispute.envelope.data.object.id}`;
      expect(row).toEqual({ customer_id: charge.customerId });
    });

    it('charge.succeeded never moves a charge recorded for another customer', async () => {
      const { envelope, token } = uniqueFixture('charge.succeeded');
      const other = `cus_${token}Other`;
      await stack.sql`INSERT INTO customers (id) VALUES (${other})`;
      await stack.sql`INSERT INTO charges (id, customer_id, amount, currency) VALUES (${envelope.data.object.id}, ${other}, 100, 'eur')`;
      expect(await post(envelope)).toBe('applied');
      const [row] = await stack.sql`SELECT customer_id, amount, currency, payment_intent_id FROM charges WHERE id = ${envelope.data.object.id}`;
      expect(row).toEqual({ customer_id: other, amount: 100, currency: 'eur', payment_intent_id: null });
    });

    it('payment_intent.succeeded clears the decline payment_intent.payment_failed recorded on its invoice; a late failure does not bring it back', async () => {
      const finalized = uniqueFixture('invoice.finalized');
      const invoiceId = finalized.envelope.data.object.id;
      expect(await post(finalized.envelope)).toBe('applied');
      const failed = uniqueFixture('payment_intent.payment_failed', { token: finalized.token });
      // Basil+ invoices name no PaymentIntent: the dunning cycle learns it from the invoice's payments.
      await stack.sql`UPDATE invoices SET payment_intent_id = ${failed.envelope.data.object.id} WHERE id = ${invoiceId}`;
      const decline = async () => (await stack.sql`SELECT last_decline_code, last_advice_code FROM invoices WHERE id = ${invoiceId}`)[0];

      expect(await post(failed.envelope)).toBe('applied');
      expect(await decline()).toEqual({ last_decline_code: 'insufficient_funds', last_advice_code: 'try_again_later' });

      const succeeded = uniqueFixture('payment_intent.succeeded', { token: finalized.token });
      expect(await post(succeeded.envelope)).toBe('applied');
      expect(await status(succeeded.envelope.id)).toBe('applied');
      expect(await decline()).toEqual({ last_decline_code: null, last_advice_code: null });
      const [charge] = await stack.sql`SELECT customer_id, payment_intent_id FROM charges WHERE id = ${succeeded.envelope.data.object.latest_charge}`;
      expect(charge).toEqual({ customer_id: finalized.customerId, payment_intent_id: succeeded.envelope.data.object.id });

      // The same decline delivered late, under another event id: the PaymentIntent already succeeded.
      const late = uniqueFixture('payment_intent.payment_failed', { token: finalized.token });
      expect(await post(late.envelope)).toBe('applied');
      expect(await decline()).toEqual({ last_decline_code: null, last_advice_code: null });
    });
  });

  it('applies the same event delivered 5 times concurrently exactly once', async () => {
    const { envelope, customerId } = uniqueFixture('customer.subscription.updated');
    // The answer waits for nothing but the INSERT: no 503 to retry.
    const responses = await Promise.all(Array.from({ length: 5 }, () => postWebhook(stack.built.app, envelope)));
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    await applied(envelope.id);
    const handle = stack.client.workflow.getHandle(customerWorkflowId(customerId));
    const state = await handle.query(stateQuery);
    expect(state.applied).toBe(1);
    expect(await stack.sql`SELECT 1 FROM applied_events WHERE event_id = ${envelope.id}`).toHaveLength(1);
    const log = await stack.sql<{ attempts: number }[]>`SELECT attempts FROM webhook_events WHERE event_id = ${envelope.id}`;
    expect(log).toHaveLength(1);
    expect(log[0]!.attempts).toBeGreaterThanOrEqual(5);
  });

  describe('rejections leave no state behind', () => {
    const count = async () => (await stack.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_events`)[0]!.n;
    let before = 0;
    beforeEach(async () => {
      before = await count();
    });

    it('answers 400 to a missing signature', async () => {
      const { envelope } = uniqueFixture('customer.created');
      const res = await postWebhook(stack.built.app, envelope, { signature: null });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: 'missing_signature' });
      expect(await count()).toBe(before);
    });

    it('answers 400 to a bad signature', async () => {
      const { envelope } = uniqueFixture('customer.created');
      const res = await postWebhook(stack.built.app, envelope, { secret: 'whsec_someone_else' });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: 'bad_signature' });
      expect(await count()).toBe(before);
    });

    it('answers 400 to a body changed after signing', async () => {
      const { envelope } = uniqueFixture('customer.created');
      const payload = JSON.stringify(envelope);
      const sig = signPayload(payload);
      const res = await postWebhook(stack.built.app, payload.replace('"customer"', '"customer" '), { signature: sig });
      expect(res.status).toBe(400);
      expect(await count()).toBe(before);
    });

    it('answers 400 to a stale timestamp (older than 300 s)', async () => {
      const { envelope } = uniqueFixture('customer.created');
      const res = await postWebhook(stack.built.app, envelope, { timestamp: Math.floor(Date.now() / 1000) - 301 });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: 'stale_timestamp' });
      expect(await count()).toBe(before);
    });

    it('answers 400 to a correctly signed timestamp more than 300 s in the future, and accepts one within it', async () => {
      const { envelope } = uniqueFixture('customer.created');
      const res = await postWebhook(stack.built.app, envelope, { timestamp: Math.floor(Date.now() / 1000) + 301 });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: 'stale_timestamp', message: expect.stringMatching(/future/) });
      expect(await count()).toBe(before);
      const ok = await postWebhook(stack.built.app, uniqueFixture('customer.created').envelope, { timestamp: Math.floor(Date.now() / 1000) + 120 });
      expect(ok.status).toBe(200);
    });

    it('answers 413 to an oversize body', async () => {
      const { envelope } = uniqueFixture('customer.created');
      envelope.data.object.description = 'x'.repeat(config.WEBHOOK_MAX_BODY_BYTES + 10);
      const res = await postWebhook(stack.built.app, envelope);
      expect(res.status).toBe(413);
      expect(await count()).toBe(before);
    });

    it('answers 400 to a correctly signed body that is not JSON', async () => {
      const res = await postWebhook(stack.built.app, '{"id": "evt_garbage", "type": ');
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: 'malformed_json' });
      expect(await count()).toBe(before);
    });

    it('answers 400 to a signed event without an id', async () => {
      const res = await postWebhook(stack.built.app, { type: 'customer.created', data: { object: {} } });
      expect(res.status).toBe(400);
      expect(await count()).toBe(before);
    });
  });

  it('stores an unknown event type as ignored and answers 200', async () => {
    const { envelope } = uniqueFixture('customer.created');
    envelope.type = 'issuing_card.created';
    const res = await postWebhook(stack.built.app, envelope);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ignored' });
    const rows = await stack.sql`SELECT status FROM webhook_events WHERE event_id = ${envelope.id}`;
    expect(rows[0]?.status).toBe('ignored');
    expect(await stack.sql`SELECT 1 FROM applied_events WHERE event_id = ${envelope.id}`).toHaveLength(0);
  });

  it('stores a verified event whose object fails the schema as failed, answers 200, and replays it after a fix', async () => {
    const { envelope, customerId } = uniqueFixture('customer.subscription.updated');
    envelope.data.object.status = 'not-a-status';
    const res = await postWebhook(stack.built.app, envelope);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'failed' });
    const row = (await stack.sql<{ status: string; last_error: string }[]>`SELECT status, last_error FROM webhook_events WHERE event_id = ${envelope.id}`)[0]!;
    expect(row.status).toBe('failed');
    expect(row.last_error).toContain('status');

    // An operator fixes the stored payload (or the code), then replays it through the admin API.
    await stack.sql`UPDATE webhook_events SET payload = jsonb_set(payload, '{data,object,status}', '"active"') WHERE event_id = ${envelope.id}`;
    const replay = await stack.built.app.request(`/admin/webhook-events/${envelope.id}/replay`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${config.ADMIN_TOKEN}` },
    });
    expect(replay.status).toBe(200);
    expect(await replay.json()).toMatchObject({ result: 'dispatched' });
    await applied(envelope.id);
    const sub = await stack.sql`SELECT status FROM subscriptions WHERE customer_id = ${customerId}`;
    expect(sub[0]?.status).toBe('active');

    const again = await stack.built.app.request(`/admin/webhook-events/${envelope.id}/replay`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${config.ADMIN_TOKEN}` },
    });
    expect(await again.json()).toMatchObject({ result: 'noop', reason: 'already applied' });
  });

  it('lists the delivery log with filters and a cursor, behind the admin token', async () => {
    const { envelope, customerId } = uniqueFixture('customer.created');
    await postWebhook(stack.built.app, envelope);
    const second = uniqueFixture('customer.updated', { token: customerId.slice(4, -10) });
    await postWebhook(stack.built.app, second.envelope);

    expect((await stack.built.app.request('/admin/webhook-events')).status).toBe(401);
    expect((await stack.built.app.request('/admin/webhook-events', { headers: { Authorization: 'Bearer wrong-token-xxxxxxxxxx' } })).status).toBe(403);

    const auth = { Authorization: `Bearer ${config.ADMIN_TOKEN}` };
    const page1: any = await (await stack.built.app.request(`/admin/webhook-events?customer=${customerId}&limit=1`, { headers: auth })).json();
    expect(page1.data).toHaveLength(1);
    expect(page1.nextCursor).toBeTruthy();
    const page2: any = await (
      await stack.built.app.request(`/admin/webhook-events?customer=${customerId}&limit=1&cursor=${page1.nextCursor}`, { headers: auth })
    ).json();
    expect(page2.data).toHaveLength(1);
    expect(new Set([page1.data[0].eventId, page2.data[0].eventId])).toEqual(new Set([envelope.id, second.envelope.id]));
    expect(page2.nextCursor).toBeNull();

    const one = await stack.built.app.request(`/admin/webhook-events/${envelope.id}`, { headers: auth });
    expect(await one.json()).toMatchObject({ eventId: envelope.id, type: 'customer.created', customerId });
    expect((await stack.built.app.request('/admin/webhook-events/evt_missing', { headers: auth })).status).toBe(404);
    expect((await stack.built.app.request('/admin/webhook-events?status=bogus', { headers: auth })).status).toBe(400);
  });

  it('returns the local read model, and 404 for an unknown customer', async () => {
    const { envelope, customerId } = uniqueFixture('customer.subscription.created');
    await postWebhook(stack.built.app, envelope);
    await applied(envelope.id);
    const res = await stack.built.app.request(`/customers/${customerId}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      customerId,
      subscription: { id: envelope.data.object.id, status: envelope.data.object.status, planId: 'pro-monthly', priceId: 'price_ProMonthly', quantity: 1 },
      dunning: null,
    });
    const body = (await (await stack.built.app.request(`/customers/${customerId}`)).json()) as { subscription: unknown; subscriptions: unknown[] };
    expect(body.subscriptions).toEqual([body.subscription]);
    expect(body.subscriptions[0]).toMatchObject({ items: [{ id: envelope.data.object.items.data[0].id, priceId: 'price_ProMonthly', planId: 'pro-monthly', quantity: 1 }] });
    expect((await stack.built.app.request('/customers/cus_doesnotexist')).status).toBe(404);
    expect((await stack.built.app.request('/customers/not-a-customer')).status).toBe(400);
  });

  it('uses a second webhook secret during rotation', async () => {
    const rotating = testConfig({ STRIPE_WEBHOOK_SECRET: `whsec_new_secret_abc,${TEST_WEBHOOK_SECRET}`, TEMPORAL_TASK_QUEUE: config.TEMPORAL_TASK_QUEUE });
    const app2 = buildTestApp({ sql: stack.sql, temporal: stack.client, config: rotating, dispatch: false }).app;
    const a = uniqueFixture('customer.created');
    const b = uniqueFixture('customer.created');
    expect((await postWebhook(app2, a.envelope, { secret: 'whsec_new_secret_abc' })).status).toBe(200);
    expect((await postWebhook(app2, b.envelope, { secret: TEST_WEBHOOK_SECRET })).status).toBe(200);
    const retired = testConfig({ STRIPE_WEBHOOK_SECRET: 'whsec_new_secret_abc', TEMPORAL_TASK_QUEUE: config.TEMPORAL_TASK_QUEUE });
    const app3 = buildTestApp({ sql: stack.sql, temporal: stack.client, config: retired, dispatch: false }).app;
    expect((await postWebhook(app3, uniqueFixture('customer.created').envelope, { secret: TEST_WEBHOOK_SECRET })).status).toBe(400);
  });
});
