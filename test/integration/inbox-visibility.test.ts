/**
 * The durable inbox leaves nothing unseen, against real Postgres and a real Temporal dev server: the
 * workflow gets the same sanitized copy that is stored, a dispute whose charge lookup fails transiently
 * waits for the sweeper, quarantined deliveries are listed, counted and replayable, and deliveries stuck
 * in 'dispatched' are counted, listed and re-sent by the sweeper. Only the Stripe network is faked.
 */
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import Stripe from 'stripe';
import { describe, expect, it } from 'vitest';
import { ListStuckWebhookEventsQuerySchema } from '../../api/routes/admin-webhooks';
import { createSweeper } from '../../api/sweeper';
import type { BillingEvent } from '../../domain/billing-event';
import { customerWorkflowId } from '../../domain/ids';
import type { Sql } from '../../lib/db';
import { buildTestApp, postWebhook } from '../helpers/app';
import { useTestStack } from '../helpers/harness';
import { uniqueFixture } from '../helpers/fixtures';
import { createTestDatabase, eventually, testConfig, uniqueId, TEST_ADMIN_TOKEN } from '../helpers/services';

const admin = { Authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

/** Sums the samples of one Prometheus series (no labels). */
function sample(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{.*\})?\s+(\S+)$/.exec(line);
    if (m && m[1] === name) total += Number(m[2]);
  }
  return total;
}

/** A stand-in for `stripe.charges.retrieve` whose answer the test switches. */
function fakeCharges() {
  const calls: string[] = [];
  const fake = {
    calls,
    answer: (id: string): Promise<unknown> => Promise.reject(new Error(`no answer scripted for ${id}`)),
    stripe: null as unknown as Stripe,
  };
  fake.stripe = { charges: { retrieve: (id: string) => (calls.push(id), fake.answer(id)) } } as unknown as Stripe;
  return fake;
}

/** Writes a delivery row as the API and worker would have left it (test setup only). */
async function insertDelivery(
  sql: Sql,
  row: { envelope: any; customerId: string; status: string; agoSeconds?: number; lastError?: string | null },
): Promise<void> {
  const ago = row.agoSeconds ?? 0;
  const at = sql`now() - ${ago} * interval '1 second'`;
  await sql`
    INSERT INTO webhook_events (
      event_id, type, stripe_created_at, customer_id, object_id, workflow_id, status, payload, payload_bytes,
      last_error, received_at, dispatched_at, first_dispatched_at, quarantined_at, applied_at)
    VALUES (
      ${row.envelope.id}, ${row.envelope.type}, to_timestamp(${row.envelope.created}), ${row.customerId}, ${row.envelope.data.object.id},
      ${customerWorkflowId(row.customerId)}, ${row.status}, ${sql.json(row.envelope)}, ${JSON.stringify(row.envelope).length},
      ${row.lastError ?? null}, ${at}, ${row.status === 'received' ? null : at}, ${row.status === 'received' ? null : at},
      ${row.status === 'quarantined' ? sql`now()` : null}, ${row.status === 'applied' ? sql`now()` : null})`;
}

describe('inbox visibility with a real Postgres and Temporal dev server', () => {
  const stack = useTestStack({
    app: { dispatch: false },
  });
  const { config } = stack;

  const applied = (eventId: string, sql = stack.sql) =>
    eventually(async () => (await sql`SELECT 1 FROM applied_events WHERE event_id = ${eventId}`).length > 0, 20_000, `event ${eventId} to be applied`);
  const statusOf = async (eventId: string, sql = stack.sql) =>
    (await sql<{ status: string }[]>`SELECT status::text AS status FROM webhook_events WHERE event_id = ${eventId}`)[0]?.status;
  const scrape = async (app = stack.built.app) => (await app.request('/metrics')).text();

  /** The BillingEvents signalled to a customer workflow, decoded from its history. */
  async function signalledEvents(customerId: string): Promise<BillingEvent[]> {
    const history = await stack.client.workflow.getHandle(customerWorkflowId(customerId)).fetchHistory();
    return (history.events ?? []).flatMap((e) => {
      const a = e.workflowExecutionSignaledEventAttributes;
      if (!a || (a.signalName !== 'stripeEvent' && a.signalName !== 'stripeEvents')) return [];
      const arg = defaultPayloadConverter.fromPayload<BillingEvent | BillingEvent[]>(a.input!.payloads![0] as Payload);
      return Array.isArray(arg) ? arg : [arg];
    });
  }

  describe('the copy signalled to the workflow', () => {
    it('is sanitized like the stored copy: a NUL in a verified customer name reaches neither', async () => {
      const { envelope, customerId } = uniqueFixture('customer.created');
      envelope.data.object.name = 'Ada\u0000 Lovelace';
      const res = await postWebhook(stack.built.app, envelope);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'received' });
      expect(await stack.built.dispatcher.pass()).toMatchObject({ claimed: 1, dispatched: 1, signals: 1 });

      await applied(envelope.id);
      const [signalled] = await signalledEvents(customerId);
      expect(signalled).toMatchObject({ eventId: envelope.id, data: { kind: 'customer', name: 'Ada Lovelace' } });
      await applied(envelope.id);
      const c = await stack.sql<{ name: string }[]>`SELECT name FROM customers WHERE id = ${customerId}`;
      expect(c[0]?.name).toBe('Ada Lovelace');
      const stored = await stack.sql<{ name: string }[]>`SELECT payload #>> '{data,object,name}' AS name FROM webhook_events WHERE event_id = ${envelope.id}`;
      expect(stored[0]?.name).toBe('Ada Lovelace');
    });
  });

  describe('a dispute whose charge lookup at Stripe fails', () => {
    const transient: [string, () => Error][] = [
      ['a network error', () => new Stripe.errors.StripeConnectionError({ message: 'connect ECONNREFUSED 10.0.0.1:443' } as never)],
      ['a 500', () => new Stripe.errors.StripeAPIError({ message: 'An unknown error occurred', statusCode: 500, type: 'api_error' } as never)],
      ['a 429', () => new Stripe.errors.StripeRateLimitError({ message: 'Too many requests', statusCode: 429, type: 'rate_limit_error' } as never)],
    ];

    it.each(transient)('stays received after %s, answers 200, and the dispatcher routes it once Stripe answers', async (_what, error) => {
      const fake = fakeCharges();
      fake.answer = () => Promise.reject(error());
      const app = buildTestApp({ sql: stack.sql, temporal: stack.client, config, stripe: fake.stripe, dispatch: false, dispatcherOptions: { deferMs: 0 } });
      const { envelope, customerId } = uniqueFixture('charge.dispute.created');
      const chargeId: string = envelope.data.object.charge;

      const res = await postWebhook(app.app, envelope);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ received: true, eventId: envelope.id, status: 'received' });
      // The request path stores only: the lookup is the dispatcher's.
      expect(fake.calls).toEqual([]);
      expect(await app.dispatcher.pass()).toMatchObject({ claimed: 1, dispatched: 0, retried: 1 });
      expect(fake.calls).toEqual([chargeId]);
      const row = (await stack.sql<{ status: string; last_error: string | null }[]>`
        SELECT status::text AS status, last_error FROM webhook_events WHERE event_id = ${envelope.id}`)[0]!;
      expect(row.status).toBe('received');
      expect(row.last_error).toMatch(/charge/);

      // Stripe still failing: the next pass asks again and leaves the row for a later one.
      await app.dispatcher.pass();
      expect(fake.calls).toEqual([chargeId, chargeId]);
      expect(await statusOf(envelope.id)).toBe('received');

      fake.answer = (id) => Promise.resolve({ id, object: 'charge', customer: customerId });
      expect(await app.dispatcher.pass()).toMatchObject({ claimed: 1, dispatched: 1, signals: 1 });
      await applied(envelope.id);
      const dispute = await stack.sql`SELECT customer_id, charge_id FROM disputes WHERE id = ${envelope.data.object.id}`;
      expect(dispute[0]).toMatchObject({ customer_id: customerId, charge_id: chargeId });
      expect(await statusOf(envelope.id)).toBe('applied');
    });

    it('is stored as failed when Stripe answers 404 (the charge does not exist)', async () => {
      const fake = fakeCharges();
      fake.answer = (id) =>
        Promise.reject(new Stripe.errors.StripeInvalidRequestError({ message: `No such charge: '${id}'`, code: 'resource_missing', statusCode: 404 } as never));
      const app = buildTestApp({ sql: stack.sql, temporal: stack.client, config, stripe: fake.stripe, dispatch: false });
      const { envelope } = uniqueFixture('charge.dispute.created');
      const res = await postWebhook(app.app, envelope);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'received' });
      expect(await app.dispatcher.pass()).toMatchObject({ claimed: 1, dispatched: 0, settled: 1 });
      expect(await statusOf(envelope.id)).toBe('failed');
    });
  });

  it('re-fetches a payload stored truncated when the dispatcher hands it over, and waits while Stripe fails', async () => {
    const { envelope, customerId } = uniqueFixture('customer.created');
    await insertDelivery(stack.sql, { envelope: { ...envelope, data: { object: { id: customerId, object: 'customer' } } }, customerId, status: 'received', agoSeconds: 120 });
    await stack.sql`UPDATE webhook_events SET payload_truncated = true WHERE event_id = ${envelope.id}`;
    let answer: () => Promise<unknown> = () =>
      Promise.reject(new Stripe.errors.StripeAPIError({ message: 'An unknown error occurred', statusCode: 502, type: 'api_error' } as never));
    const stripe = { events: { retrieve: () => answer() } } as unknown as Stripe;
    const app = buildTestApp({ sql: stack.sql, temporal: stack.client, config, stripe, dispatch: false, dispatcherOptions: { deferMs: 0 } });

    await app.dispatcher.pass();
    const waiting = (await stack.sql<{ status: string; last_error: string }[]>`
      SELECT status::text AS status, last_error FROM webhook_events WHERE event_id = ${envelope.id}`)[0]!;
    expect(waiting).toMatchObject({ status: 'received', last_error: expect.stringContaining('re-fetch') });

    answer = () => Promise.resolve({ ...envelope, data: { object: { ...envelope.data.object, name: 'Grace\u0000 Hopper' } } });
    expect(await app.dispatcher.pass()).toMatchObject({ dispatched: 1 });
    await applied(envelope.id);
    const c = await stack.sql<{ email: string; name: string }[]>`SELECT email, name FROM customers WHERE id = ${customerId}`;
    expect(c[0]).toMatchObject({ email: envelope.data.object.email, name: 'Grace Hopper' });
  });

  describe('quarantined deliveries', () => {
    const quarantine = async () => {
      const { envelope, customerId } = uniqueFixture('customer.created');
      await insertDelivery(stack.sql, { envelope, customerId, status: 'quarantined', lastError: 'apply: 23514 new row violates check constraint' });
      return { envelope, customerId };
    };

    it('are listed by status and counted by billing_webhook_events_quarantined', async () => {
      const { envelope } = await quarantine();
      const res = await stack.built.app.request('/admin/webhook-events?status=quarantined', { headers: admin });
      expect(res.status).toBe(200);
      const body: any = await res.json();
      expect(body.data).toContainEqual(expect.objectContaining({ eventId: envelope.id, status: 'quarantined', lastError: expect.stringContaining('23514') }));
      expect(body.data.every((d: any) => d.status === 'quarantined')).toBe(true);

      const text = await scrape();
      expect(text).toContain('# TYPE billing_webhook_events_quarantined gauge');
      const n = (await stack.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_events WHERE status = 'quarantined'`)[0]!.n;
      expect(n).toBeGreaterThanOrEqual(1);
      expect(sample(text, 'billing_webhook_events_quarantined')).toBe(n);
    });

    it('are replayed one by one: the row moves back to dispatched', async () => {
      // A task queue without a worker: the replayed event waits in 'dispatched', where it can be seen.
      const idle = buildTestApp({ sql: stack.sql, temporal: stack.client, config: testConfig({ TEMPORAL_TASK_QUEUE: uniqueId('tq-idle-') }) });
      const { envelope, customerId } = await quarantine();
      try {
        const res = await idle.app.request(`/admin/webhook-events/${envelope.id}/replay`, { method: 'POST', headers: admin });
        expect(res.status).toBe(200);
        expect(await res.json()).toMatchObject({ eventId: envelope.id, result: 'dispatched' });
        const row = (await stack.sql<{ status: string; dispatched_at: Date; workflow_id: string }[]>`
          SELECT status::text AS status, dispatched_at, workflow_id FROM webhook_events WHERE event_id = ${envelope.id}`)[0]!;
        expect(row.status).toBe('dispatched');
        expect(Date.now() - row.dispatched_at.getTime()).toBeLessThan(10_000);
        expect(row.workflow_id).toBe(customerWorkflowId(customerId));
      } finally {
        await stack.client.workflow.getHandle(customerWorkflowId(customerId)).terminate('test done').catch(() => {});
      }
    });

    it('are replayed in bulk by status and applied by the customer workflow', async () => {
      const a = await quarantine();
      const b = await quarantine();
      const res = await stack.built.app.request('/admin/webhook-events/replay', {
        method: 'POST',
        headers: { ...admin, 'Content-Type': 'application/json' },
        body: JSON.stringify({ status: 'quarantined', ratePerSecond: 500 }),
      });
      expect(res.status).toBe(200);
      const body: any = await res.json();
      expect(body.results.dispatched).toBeGreaterThanOrEqual(2);
      await applied(a.envelope.id);
      await applied(b.envelope.id);
      expect(await statusOf(a.envelope.id)).toBe('applied');
      const c = await stack.sql`SELECT email FROM customers WHERE id = ${b.customerId}`;
      expect(c[0]?.email).toBe(b.envelope.data.object.email);
    });
  });

  it('pages the delivery log without skipping rows received within the same millisecond', async () => {
    const a = uniqueFixture('customer.created');
    const b = uniqueFixture('customer.updated', { token: a.token });
    await insertDelivery(stack.sql, { ...a, status: 'applied' });
    await insertDelivery(stack.sql, { ...b, status: 'applied' });
    await stack.sql`UPDATE webhook_events SET received_at = '2025-01-02T03:04:05.123456Z' WHERE event_id = ${a.envelope.id}`;
    await stack.sql`UPDATE webhook_events SET received_at = '2025-01-02T03:04:05.123100Z' WHERE event_id = ${b.envelope.id}`;
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await stack.built.app.request(`/admin/webhook-events?customer=${a.customerId}&limit=1${cursor ? `&cursor=${cursor}` : ''}`, { headers: admin });
      expect(res.status).toBe(200);
      const body: any = await res.json();
      seen.push(...body.data.map((d: any) => d.eventId));
      cursor = body.nextCursor;
    } while (cursor && seen.length < 5);
    expect(seen).toEqual([a.envelope.id, b.envelope.id]);
  });

  describe('deliveries stuck in dispatched', () => {
    it('are counted, listed with a cursor, and re-sent by the sweeper once per threshold while staying visible', async () => {
      // Its own database (the gauges and the sweep read every row) and a task queue without a stack.worker.
      const own = await createTestDatabase();
      const idleConfig = testConfig({ TEMPORAL_TASK_QUEUE: uniqueId('tq-idle-'), STUCK_DISPATCH_THRESHOLD_MS: '300000' });
      const app = buildTestApp({ sql: own.sql, temporal: stack.client, config: idleConfig, dispatch: false });
      const old = uniqueFixture('customer.created');
      const older = uniqueFixture('customer.updated');
      const fresh = uniqueFixture('customer.created');
      const waiting = uniqueFixture('customer.created');
      try {
        await insertDelivery(own.sql, { ...old, status: 'dispatched', agoSeconds: 600 });
        await insertDelivery(own.sql, { ...older, status: 'dispatched', agoSeconds: 900 });
        await insertDelivery(own.sql, { ...fresh, status: 'dispatched', agoSeconds: 5 });
        await insertDelivery(own.sql, { ...uniqueFixture('customer.created'), status: 'applied', agoSeconds: 3600 });
        await insertDelivery(own.sql, { ...waiting, status: 'received', agoSeconds: 3600 });

        const text = await scrape(app.app);
        expect(sample(text, 'billing_webhook_events_stuck')).toBe(2);
        expect(sample(text, 'billing_webhook_events_stuck_oldest_age_seconds')).toBeGreaterThanOrEqual(900);
        expect(sample(text, 'billing_webhook_events_stuck_oldest_age_seconds')).toBeLessThan(960);
        expect(sample(text, 'billing_webhook_events_quarantined')).toBe(0);

        expect((await app.app.request('/admin/webhook-events/stuck')).status).toBe(401);
        const list: any = await (await app.app.request('/admin/webhook-events/stuck', { headers: admin })).json();
        expect(list.data.map((d: any) => d.eventId)).toEqual([older.envelope.id, old.envelope.id]);
        expect(list.data[0]).toMatchObject({ status: 'dispatched', customerId: older.customerId, type: 'customer.updated' });
        expect(list.nextCursor).toBeNull();
        // Documented in /openapi.json: its query parameters, and items with the delivery log's summary fields.
        const doc: any = await (await app.app.request('/openapi.json')).json();
        const op = doc.paths['/admin/webhook-events/stuck'].get;
        expect(op.parameters.map((p: any) => p.name).sort()).toEqual(Object.keys(ListStuckWebhookEventsQuerySchema.shape).sort());
        const listRef: string = op.responses['200'].content['application/json'].schema.$ref;
        const itemRef: string = doc.components.schemas[listRef.split('/').pop()!].properties.data.items.$ref;
        expect(Object.keys(list.data[0]).sort()).toEqual(Object.keys(doc.components.schemas[itemRef.split('/').pop()!].properties).sort());

        const page1: any = await (await app.app.request('/admin/webhook-events/stuck?olderThanSeconds=1&limit=2', { headers: admin })).json();
        expect(page1.data.map((d: any) => d.eventId)).toEqual([older.envelope.id, old.envelope.id]);
        const page2: any = await (
          await app.app.request(`/admin/webhook-events/stuck?olderThanSeconds=1&limit=2&cursor=${page1.nextCursor}`, { headers: admin })
        ).json();
        expect(page2.data.map((d: any) => d.eventId)).toEqual([fresh.envelope.id]);
        expect(page2.nextCursor).toBeNull();
        expect((await app.app.request('/admin/webhook-events/stuck?olderThanSeconds=-1', { headers: admin })).status).toBe(400);

        let woken = 0;
        const sweeper = createSweeper({
          ingest: app.ingest,
          metrics: app.metrics,
          logger: app.logger,
          dispatcher: { wake: () => woken++ },
          stuckThresholdMs: idleConfig.STUCK_DISPATCH_THRESHOLD_MS,
        });
        const first = await sweeper.tick();
        expect(first.stuck).toEqual({ attempted: 2, dispatched: 2 });
        // The 'received' row is the dispatcher's: the tick wakes it, the pass hands the row over.
        expect(woken).toBe(1);
        expect(await app.dispatcher.pass()).toMatchObject({ claimed: 1, dispatched: 1 });
        const resent = await own.sql<{ event_id: string; dispatched_at: Date }[]>`
          SELECT event_id, dispatched_at FROM webhook_events WHERE event_id IN ${own.sql([old.envelope.id, older.envelope.id])}`;
        for (const r of resent) expect(Date.now() - r.dispatched_at.getTime(), r.event_id).toBeLessThan(10_000);

        // Re-sent but still not applied: still counted, and not re-sent again before the threshold.
        expect(sample(await scrape(app.app), 'billing_webhook_events_stuck')).toBe(2);
        expect((await sweeper.tick()).stuck).toEqual({ attempted: 0, dispatched: 0 });
        expect(sample(await scrape(app.app), 'billing_webhook_sweeper_stuck_redispatched_total')).toBe(2);
      } finally {
        for (const f of [old, older, waiting]) await stack.client.workflow.getHandle(customerWorkflowId(f.customerId)).terminate('test done').catch(() => {});
        await own.drop();
      }
    });

    it('are applied after the sweeper re-sends a signal that never reached the workflow', async () => {
      const { envelope, customerId } = uniqueFixture('customer.created');
      await insertDelivery(stack.sql, { envelope, customerId, status: 'dispatched', agoSeconds: 3600 });
      const sweeper = createSweeper({
        ingest: stack.built.ingest,
        metrics: stack.built.metrics,
        logger: stack.built.logger,
        stuckThresholdMs: config.STUCK_DISPATCH_THRESHOLD_MS,
      });
      const r = await sweeper.tick();
      expect(r.stuck.dispatched).toBeGreaterThanOrEqual(1);
      await applied(envelope.id);
      expect(await statusOf(envelope.id)).toBe('applied');
      const stuck: any = await (await stack.built.app.request('/admin/webhook-events/stuck?olderThanSeconds=0', { headers: admin })).json();
      expect(stuck.data.map((d: any) => d.eventId)).not.toContain(envelope.id);
    });

    it('marks a stuck row applied instead of re-sending it when applied_events already records it', async () => {
      const { envelope, customerId } = uniqueFixture('customer.created');
      await insertDelivery(stack.sql, { envelope, customerId, status: 'dispatched', agoSeconds: 3600 });
      await stack.sql`INSERT INTO applied_events (event_id, customer_id, type, outcome) VALUES (${envelope.id}, ${customerId}, 'customer.created', 'applied')`;
      const out = await stack.built.ingest.redispatch(envelope.id);
      expect(out).toMatchObject({ status: 'noop', reason: 'already applied' });
      expect(await statusOf(envelope.id)).toBe('applied');
    });
  });
});
