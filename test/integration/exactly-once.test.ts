import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { normalizeStripeEvent } from '../../domain/events';
import { customerWorkflowId } from '../../domain/ids';
import { type SubscriptionSnapshot } from '../../domain/messages';
import { stateQuery, stripeEventSignal } from '../../workflows/contracts';
import { subscriptionSnapshotFromStripe } from '../../domain/stripe-objects';
import { freePort, startTemporal, tempDir } from '../../support/services';
import { buildTestApp, postWebhook } from '../helpers/app';
import { useTestStack } from '../helpers/harness';
import { uniqueFixture } from '../helpers/fixtures';
import { eventually, realActivities, startTestWorker, testConfig, uniqueId, type RunningWorker } from '../helpers/services';

/** Deterministic PRNG so a failing shuffle can be reproduced from its seed. */
function mulberry32(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STATUSES = ['active', 'past_due', 'active', 'unpaid', 'active', 'past_due', 'active', 'canceled'] as const;
const PRICES = ['price_ProMonthly', 'price_BasicMonthly'];

/** One customer's story: 8 subscription updates (with same-second ties) and an invoice finalized+paid in one second. */
function customerStory(token: string, rand: () => number): any[] {
  const events: any[] = [];
  let t = 1_770_000_000;
  for (let i = 0; i < STATUSES.length; i++) {
    const { envelope } = uniqueFixture('customer.subscription.updated', { token });
    // Roughly every third event shares its second with the previous one.
    if (i > 0 && rand() > 0.35) t += 1 + Math.floor(rand() * 3);
    envelope.created = t;
    const sub = envelope.data.object;
    sub.status = STATUSES[i];
    sub.items.data[0].price.id = PRICES[i % 2];
    sub.cancel_at_period_end = i % 3 === 2;
    sub.items.data[0].current_period_end = 1_772_000_000 + i * 100;
    events.push(envelope);
  }
  const fin = uniqueFixture('invoice.finalized', { token }).envelope;
  const paid = uniqueFixture('invoice.paid', { token }).envelope;
  fin.created = paid.created = t + 5;
  fin.data.object.status = 'open';
  paid.data.object.status = 'paid';
  events.push(fin, paid);
  return events;
}

describe('exactly once and in order, under duplicates, shuffling and outages', () => {
  /** What Stripe would answer now for each subscription: the state after its last event. */
  const truth = new Map<string, SubscriptionSnapshot>();
  let refetches = 0;
  const stack = useTestStack({
    activities: (db, config) => {
      const activities = realActivities(db.sql, config);
      return {
        ...activities,
        // Faked only at the Stripe boundary: a re-fetch returns Stripe's current object.
        async fetchSubscription({ subscriptionId }: { subscriptionId: string }) {
          refetches++;
          return truth.get(subscriptionId) ?? null;
        },
      };
    },
  });
  const { config } = stack;

  async function deliver(envelopes: any[], concurrency: number): Promise<void> {
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < envelopes.length) {
          const env = envelopes[next++];
          // Like Stripe: retry until a 2xx.
          for (let attempt = 0; ; attempt++) {
            const res = await postWebhook(stack.built.app, env);
            if (res.status === 200) break;
            if (attempt > 20) throw new Error(`delivery of ${env.id} kept failing: ${res.status}`);
            await new Promise((r) => setTimeout(r, 200));
          }
        }
      }),
    );
  }

  async function finalState(customerId: string) {
    const sub = await stack.sql`
      SELECT status, price_id, cancel_at_period_end, current_period_end FROM subscriptions WHERE customer_id = ${customerId}`;
    const inv = await stack.sql`SELECT status FROM invoices WHERE customer_id = ${customerId}`;
    return { sub: sub[0], invoice: inv[0]?.status };
  }

  it('a shuffled stream of 200 events over 20 customers with 20% duplicates converges to the ordered result', async () => {
    const rand = mulberry32(20261126);
    const ordered: { customerId: string; events: any[] }[] = [];
    const shuffled: { customerId: string; events: any[] }[] = [];
    for (let c = 0; c < 10; c++) {
      for (const bucket of [ordered, shuffled]) {
        const token = `X${uniqueId()}`;
        const events = customerStory(token, mulberry32(1000 + c));
        const last = events[STATUSES.length - 1].data.object;
        truth.set(last.id, subscriptionSnapshotFromStripe(last, 1_780_000_000)!);
        bucket.push({ customerId: `cus_${token}Customer01`, events });
      }
    }
    // 10 ordered customers × 10 events sent one by one in order, 10 shuffled customers × 10 events
    // with 20% duplicates, all interleaved and shuffled.
    for (const { events } of ordered) await deliver(events, 1);
    const pool = shuffled.flatMap((s) => s.events);
    const withDups = [...pool, ...pool.filter(() => rand() < 0.2)];
    for (let i = withDups.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [withDups[i], withDups[j]] = [withDups[j], withDups[i]];
    }
    expect(pool.length + ordered.length * 10).toBe(200);
    await deliver(withDups, 16);

    const uniqueIds = [...ordered, ...shuffled].flatMap((s) => s.events.map((e) => e.id));
    await eventually(async () => {
      const r = await stack.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM applied_events WHERE event_id IN ${stack.sql(uniqueIds)}`;
      return r[0]!.n === uniqueIds.length;
    }, 60_000, 'all 200 events to be applied');

    for (let c = 0; c < 10; c++) {
      const a = await finalState(ordered[c]!.customerId);
      const b = await finalState(shuffled[c]!.customerId);
      const lastObj = ordered[c]!.events[STATUSES.length - 1].data.object;
      expect(a.sub).toMatchObject({ status: 'canceled', price_id: lastObj.items.data[0].price.id, cancel_at_period_end: lastObj.cancel_at_period_end });
      expect(b.sub).toEqual(a.sub);
      expect(a.invoice).toBe('paid');
      expect(b.invoice).toBe('paid');
    }
    // Same-second ties were settled by asking Stripe, not by guessing.
    expect(refetches).toBeGreaterThan(0);
    const applied = await stack.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM applied_events WHERE event_id IN ${stack.sql(uniqueIds)}`;
    expect(applied[0]!.n).toBe(200);
  });

  it('keeps dedup across continue-as-new: a redelivery afterwards is a no-op', async () => {
    const token = `C${uniqueId()}`;
    const customerId = `cus_${token}Customer01`;
    const events = [0, 1, 2, 3].map((i) => {
      const { envelope } = uniqueFixture('customer.updated', { token });
      envelope.created = 1_770_000_000 + i;
      return envelope;
    });
    const first = normalizeStripeEvent(events[0]);
    if (first.outcome !== 'handled') throw new Error('fixture did not normalize');
    const handle = await stack.client.workflow.signalWithStart('customerWorkflow', {
      workflowId: customerWorkflowId(customerId),
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      args: [{ customerId, continueAsNewAfter: 2 }],
      signal: stripeEventSignal,
      signalArgs: [first.event],
    });
    const firstRunId = handle.signaledRunId;
    for (const e of events.slice(1)) expect((await postWebhook(stack.built.app, e)).status).toBe(200);
    await eventually(async () => {
      const d = await stack.client.workflow.getHandle(customerWorkflowId(customerId)).describe();
      const s = await stack.client.workflow.getHandle(customerWorkflowId(customerId)).query(stateQuery);
      return d.runId !== firstRunId && s.applied === 4;
    // Generous: two test files share 2 cores, and a neighbour may be a whole chaos stack (seen at 30 s once).
    }, 60_000, 'continue-as-new and 4 applied events');

    // Redeliver the first event straight into the workflow (past the delivery log's dedup).
    const latest = stack.client.workflow.getHandle(customerWorkflowId(customerId));
    const before = await latest.query(stateQuery);
    await latest.signal(stripeEventSignal, first.event);
    const after = await eventually(async () => {
      const s = await latest.query(stateQuery);
      return s.duplicatesDropped > before.duplicatesDropped ? s : null;
    }, 15_000, 'the redelivery to be dropped');
    expect(after.applied).toBe(4);
    expect(after.recentEventIds).toBeGreaterThanOrEqual(4);
    const rows = await stack.sql`SELECT event_id FROM applied_events WHERE customer_id = ${customerId}`;
    expect(rows).toHaveLength(4);
  }, 120_000);

  it('answers 200 while Temporal is down, keeps the delivery in the inbox with the reason, and dispatches it once Temporal is back', async () => {
    const dir = tempDir('temporal-outage');
    const port = await freePort();
    const temporal = await startTemporal({ port, dbFile: path.join(dir, 'temporal.db'), logDir: dir });
    const connection = await Connection.connect({ address: temporal.address });
    const outageClient = new Client({ connection, namespace: 'default' });
    const outageConfig = testConfig({ TEMPORAL_ADDRESS: temporal.address });
    // Only this app's dispatcher (the Temporal that goes down) may hand the delivery over.
    await stack.built.dispatcher.stop();
    const app = buildTestApp({ sql: stack.sql, temporal: outageClient, config: outageConfig });
    let outageWorker: RunningWorker | null = null;
    try {
      await temporal.kill('SIGKILL');
      const { envelope, customerId } = uniqueFixture('customer.created');
      const res = await postWebhook(app.app, envelope);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ received: true, eventId: envelope.id, status: 'received' });
      // The dispatcher tried, failed, and left the row in the inbox with the reason.
      const row = await eventually(async () => {
        const [r] = await stack.sql<{ status: string; last_error: string | null }[]>`SELECT status, last_error FROM webhook_events WHERE event_id = ${envelope.id}`;
        return r?.last_error ? r : null;
      }, 20_000, 'the failed hand-over to be recorded');
      expect(row.status).toBe('received');
      expect(row.last_error).toMatch(/^dispatch: /);
      expect((await app.ingest.inboxDepth()).depth).toBeGreaterThanOrEqual(1);
      expect(app.dispatcher.status().temporalUp).toBe(false);
      const ready = await app.app.request('/readyz');
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ status: 'degraded', temporal: 'down', degraded: ['temporal'] });

      await temporal.start();
      outageWorker = await startTestWorker({ taskQueue: outageConfig.TEMPORAL_TASK_QUEUE, activities: realActivities(stack.sql, outageConfig), address: temporal.address });
      await eventually(async () => (await stack.sql`SELECT 1 FROM applied_events WHERE event_id = ${envelope.id}`).length === 1, 45_000, 'the kept event to be dispatched and applied');
      expect(app.dispatcher.status().temporalUp).toBe(true);
      const c = await stack.sql`SELECT email FROM customers WHERE id = ${customerId}`;
      expect(c[0]?.email).toBe(envelope.data.object.email);
    } finally {
      await app.close();
      await stack.built.dispatcher.start();
      await outageWorker?.stop();
      await connection.close().catch(() => {});
      await temporal.stop();
    }
  });
});
