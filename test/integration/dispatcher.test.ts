/**
 * The dispatcher: what the request path stored reaches Temporal coalesced per customer, exactly once
 * across replicas and crashed claims, woken by LISTEN/NOTIFY, and held back by admission control.
 * Real Postgres, real Temporal dev server and worker.
 */
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chunkEvents } from '../../api/dispatcher';
import type { BillingEvent } from '../../domain/billing-event';
import { customerWorkflowId } from '../../domain/ids';
import { stateQuery } from '../../workflows/contracts';
import { buildTestApp, postWebhook, stopTestDispatchers } from '../helpers/app';
import { uniqueFixture } from '../helpers/fixtures';
import { createTestDatabase, eventually, testConfig, uniqueId } from '../helpers/services';
import { useTestStack } from '../helpers/harness';

describe('the dispatcher', () => {
  // Apps are built per case (dispatchers under test): the stack has none of its own.
  const stack = useTestStack({ app: false });
  const { config } = stack;

  const statuses = async (ids: string[]) =>
    (await stack.sql<{ event_id: string; status: string }[]>`
      SELECT event_id, status::text AS status FROM webhook_events WHERE event_id IN ${stack.sql(ids)} ORDER BY event_id`).map((r) => r.status);

  const allApplied = (ids: string[]) =>
    eventually(async () => (await statuses(ids)).every((s) => s === 'applied'), 30_000, `${ids.length} events applied`);

  /** The stripeEvents signals in a customer workflow's history, each as its list of event ids. */
  async function batchSignals(customerId: string): Promise<string[][]> {
    const history = await stack.client.workflow.getHandle(customerWorkflowId(customerId)).fetchHistory();
    return (history.events ?? []).flatMap((e) => {
      const a = e.workflowExecutionSignaledEventAttributes;
      if (!a || a.signalName !== 'stripeEvents') return [];
      return [defaultPayloadConverter.fromPayload<BillingEvent[]>(a.input!.payloads![0] as Payload).map((ev) => ev.eventId)];
    });
  }

  /** A customer's lifecycle: customer.created, then subscription created and updated. */
  function lifecycle() {
    const created = uniqueFixture('customer.created');
    const sub = uniqueFixture('customer.subscription.created', { token: created.token });
    const upd = uniqueFixture('customer.subscription.updated', { token: created.token });
    return { customerId: created.customerId, envelopes: [created.envelope, sub.envelope, upd.envelope] };
  }

  it('answers before any hand-over, then coalesces one customer’s events into one stripeEvents signal, in order', async () => {
    const app = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatch: false });
    const { customerId, envelopes } = lifecycle();
    for (const e of envelopes) {
      const res = await postWebhook(app.app, e);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'received' });
    }
    const ids = envelopes.map((e) => e.id as string);
    // Stored and acknowledged; Temporal has not heard of the customer yet.
    expect(await statuses(ids)).toEqual(['received', 'received', 'received']);
    await expect(stack.client.workflow.getHandle(customerWorkflowId(customerId)).describe()).rejects.toThrow();

    expect(await app.dispatcher.pass()).toMatchObject({ claimed: 3, dispatched: 3, signals: 1 });
    await allApplied(ids);
    expect(await batchSignals(customerId)).toEqual([ids]);
    const state = await stack.client.workflow.getHandle(customerWorkflowId(customerId)).query(stateQuery);
    expect(state.applied).toBe(3);
    const text = await app.metrics.registry.getSingleMetricAsString('billing_dispatch_batch_events');
    expect(text).toMatch(/billing_dispatch_batch_events_sum 3\b/);
    expect(text).toMatch(/billing_dispatch_batch_events_count 1\b/);
  });

  it('bounds a signal by count and bytes, and keeps each customer’s order across its chunks', async () => {
    const app = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatch: false, dispatcherOptions: { batchMaxEvents: 2 } });
    const { customerId, envelopes } = lifecycle();
    for (const e of envelopes) expect((await postWebhook(app.app, e)).status).toBe(200);
    const ids = envelopes.map((e) => e.id as string);
    expect(await app.dispatcher.pass()).toMatchObject({ claimed: 3, dispatched: 3, signals: 2 });
    await allApplied(ids);
    expect(await batchSignals(customerId)).toEqual([ids.slice(0, 2), ids.slice(2)]);

    const ev = (n: number, size: number) => ({ eventId: `evt_${n}`, pad: 'x'.repeat(size) }) as unknown as BillingEvent;
    const chunks = chunkEvents([ev(1, 100), ev(2, 100), ev(3, 5000), ev(4, 10)], 10, 1000);
    expect(chunks.map((c) => c.map((e) => e.eventId))).toEqual([['evt_1', 'evt_2'], ['evt_3'], ['evt_4']]);
  });

  it('shares the work between replicas: two dispatchers racing hand every delivery over exactly once', async () => {
    {
      const a = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatch: false, dispatcherOptions: { claimMax: 7 } });
      const b = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatch: false, dispatcherOptions: { claimMax: 7 } });
      const customers = Array.from({ length: 12 }, lifecycle);
      const ids = customers.flatMap((c) => c.envelopes.map((e) => e.id as string));
      for (const c of customers) for (const e of c.envelopes) expect((await postWebhook(a.app, e)).status).toBe(200);

      const reports = await Promise.all([a.dispatcher.pass(), b.dispatcher.pass(), a.dispatcher.pass(), b.dispatcher.pass()]);
      let more = await Promise.all([a.dispatcher.pass(), b.dispatcher.pass()]);
      while (more.some((r) => r.claimed > 0)) {
        reports.push(...more);
        more = await Promise.all([a.dispatcher.pass(), b.dispatcher.pass()]);
      }
      expect(reports.reduce((n, r) => n + r.claimed, 0)).toBe(ids.length);
      expect(reports.reduce((n, r) => n + r.dispatched, 0)).toBe(ids.length);
      expect(reports.filter((r) => r.claimed > 0).length).toBeGreaterThanOrEqual(2);
      await eventually(async () => {
        const [r] = await stack.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM applied_events WHERE event_id IN ${stack.sql(ids)}`;
        return r!.n === ids.length;
      }, 30_000, 'every event applied');
      const signalled = (await Promise.all(customers.map((c) => batchSignals(c.customerId)))).flat(2);
      expect(signalled.sort()).toEqual([...ids].sort());
    }
  });

  it('takes over the claim of a replica that died mid-hand-over once its lease ends', async () => {
    const app = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatch: false });
    const { envelopes } = lifecycle();
    for (const e of envelopes) expect((await postWebhook(app.app, e)).status).toBe(200);
    const ids = envelopes.map((e) => e.id as string);
    // A replica claimed the rows and died: nobody may take them while the lease holds...
    await stack.sql`UPDATE webhook_events SET dispatch_claimed_until = now() + interval '1 hour' WHERE event_id IN ${stack.sql(ids)}`;
    expect(await app.dispatcher.pass()).toMatchObject({ claimed: 0 });
    // ...and any replica takes them once it has ended.
    await stack.sql`UPDATE webhook_events SET dispatch_claimed_until = now() - interval '1 second' WHERE event_id IN ${stack.sql(ids)}`;
    expect(await app.dispatcher.pass()).toMatchObject({ claimed: 3, dispatched: 3 });
    await allApplied(ids);
  });

  it('wakes on LISTEN billing_inbox when another process stores a delivery', async () => {
    try {
      // Polls once an hour: only the notification can wake it.
      const listener = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatcherOptions: { listen: true, pollMs: 3_600_000 } });
      await eventually(async () => listener.dispatcher.status().running, 5000, 'the dispatcher to start');
      await new Promise((r) => setTimeout(r, 300)); // its first pass (at start) finds nothing
      const writer = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatch: false });
      const { envelope } = uniqueFixture('customer.created');
      expect((await postWebhook(writer.app, envelope)).status).toBe(200);
      await eventually(async () => {
        const [r] = await stack.sql<{ status: string }[]>`SELECT status::text AS status FROM webhook_events WHERE event_id = ${envelope.id}`;
        return r?.status === 'applied';
      }, 20_000, 'the delivery to be dispatched on the notification and applied');
    } finally {
      await stopTestDispatchers();
    }
  });

  it('gives ingest priority: holds back while webhook requests crowd the process, until the oldest delivery waits DISPATCH_MAX_DEFER_MS', async () => {
    const app = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatcherOptions: { yieldInFlight: 4, maxDeferMs: 1500 } });
    const { envelope } = uniqueFixture('customer.created');
    try {
      // As if 6 deliveries were being verified and stored right now (after the start-up pass).
      for (let i = 0; i < 6; i++) app.ingest.load.started();
      await new Promise((r) => setTimeout(r, 300));
      expect((await postWebhook(app.app, envelope)).status).toBe(200);
      const status = async () => (await stack.sql<{ status: string }[]>`SELECT status::text AS status FROM webhook_events WHERE event_id = ${envelope.id}`)[0]?.status;
      await new Promise((r) => setTimeout(r, 800));
      expect(await status()).toBe('received');
      const yields = (await app.metrics.registry.getSingleMetric('billing_dispatch_ingest_yields_total')!.get()).values[0]?.value ?? 0;
      expect(yields).toBeGreaterThan(0);
      // Past the deferral bound it is handed over although the crowd is still there.
      await eventually(async () => (await status()) === 'applied', 20_000, 'the deferred delivery to be applied');
    } finally {
      for (let i = 0; i < 6; i++) app.ingest.load.ended();
      await app.close();
    }
  });

  describe('admission control', () => {
    it('admits no new workflow while the window is full, and shrinks the window while the oldest pending delivery is old', async () => {
      const own = await createTestDatabase();
      // A task queue without a worker: what is dispatched stays pending.
      const idle = testConfig({ TEMPORAL_TASK_QUEUE: uniqueId('tq-idle-') });
      const app = buildTestApp({
        sql: own.sql,
        temporal: stack.client,
        config: idle,
        dispatch: false,
        dispatcherOptions: { maxPendingWorkflows: 2, minPendingWorkflows: 1, targetLagMs: 200 },
      });
      const customers = Array.from({ length: 4 }, lifecycle);
      const workflowIds = customers.map((c) => customerWorkflowId(c.customerId));
      try {
        for (const c of customers) for (const e of c.envelopes) expect((await postWebhook(app.app, e)).status).toBe(200);

        let adm = await app.dispatcher.admission();
        expect(adm).toMatchObject({ pendingWorkflows: 0, window: 2, available: 2 });
        // The pass admits 2 workflows: the other 2 customers' rows are not even claimed.
        expect(await app.dispatcher.pass(adm.available)).toMatchObject({ claimed: 6, dispatched: 6, signals: 2 });
        const [inbox] = await own.sql<{ received: number; dispatched: number; claimed: number }[]>`
          SELECT count(*) FILTER (WHERE status = 'received')::int AS received,
                 count(*) FILTER (WHERE status = 'dispatched')::int AS dispatched,
                 count(*) FILTER (WHERE dispatch_claimed_until > now())::int AS claimed
          FROM webhook_events`;
        expect(inbox).toEqual({ received: 6, dispatched: 6, claimed: 0 });

        adm = await app.dispatcher.admission();
        expect(adm).toMatchObject({ pendingWorkflows: 2, available: 0 });
        // Nobody applies them: past the lag target the window shrinks, and the gauges say so.
        await new Promise((r) => setTimeout(r, 300));
        adm = await app.dispatcher.admission();
        expect(adm.oldestPendingMs).toBeGreaterThan(200);
        expect(adm.window).toBe(1);
        const text = await app.metrics.registry.metrics();
        expect(text).toMatch(/^billing_dispatch_pending_workflows 2$/m);
        expect(text).toMatch(/^billing_dispatch_window 1$/m);
        expect(text).toMatch(/^billing_dispatch_window_shrinks_total 1$/m);

        // Once they are applied, the window grows back and the rest is admitted.
        await own.sql`UPDATE webhook_events SET status = 'applied', applied_at = now() WHERE status = 'dispatched'`;
        adm = await app.dispatcher.admission();
        expect(adm).toMatchObject({ pendingWorkflows: 0, window: 2, available: 2 });
        expect(await app.dispatcher.pass(adm.available)).toMatchObject({ claimed: 6, dispatched: 6, signals: 2 });
      } finally {
        for (const id of workflowIds) await stack.client.workflow.getHandle(id).terminate('test done').catch(() => {});
        await app.close();
        await own.drop();
      }
    });

    it('keeps the backlog in Postgres when the window is full: the running loop waits, then drains', async () => {
      const app = buildTestApp({ sql: stack.sql, temporal: stack.client, config, dispatcherOptions: { maxPendingWorkflows: 3, minPendingWorkflows: 1 } });
      try {
        const customers = Array.from({ length: 15 }, lifecycle);
        const ids = customers.flatMap((c) => c.envelopes.map((e) => e.id as string));
        await Promise.all(customers.map(async (c) => {
          for (const e of c.envelopes) expect((await postWebhook(app.app, e)).status).toBe(200);
        }));
        let maxPending = 0;
        await eventually(async () => {
          const [r] = await stack.sql<{ pending: number; applied: number }[]>`
            SELECT count(DISTINCT customer_id) FILTER (WHERE status = 'dispatched')::int AS pending,
                   count(*) FILTER (WHERE status = 'applied')::int AS applied
            FROM webhook_events WHERE event_id IN ${stack.sql(ids)}`;
          maxPending = Math.max(maxPending, r!.pending);
          return r!.applied === ids.length;
        }, 60_000, 'the backlog to drain');
        // Never more workflows pending than the window (+ the claim in flight when a reading was taken).
        expect(maxPending).toBeLessThanOrEqual(3);
        expect(Number((await app.metrics.registry.getSingleMetric('billing_dispatch_admission_waits_total')!.get()).values[0]?.value ?? 0)).toBeGreaterThan(0);
      } finally {
        await app.close();
      }
    });
  });
});
