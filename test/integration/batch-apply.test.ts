/**
 * The customer workflow's batched apply: applyBillingEvents (one transaction for a run of events,
 * stopping at a same-second tie) on real Postgres, and the workflow applying a burst of queued
 * events in fewer local-activity batches than events, on the Temporal dev server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBillingDbActivities } from '../../activities/billing-db';
import type { BillingEvent } from '../../domain/billing-event';
import { normalizeStripeEvent } from '../../domain/events';
import { customerWorkflowId } from '../../domain/ids';
import { stateQuery, stripeEventSignal } from '../../workflows/contracts';
import { uniqueFixture } from '../helpers/fixtures';
import {
  createTestDatabase,
  eventually,
  realActivities,
  startTestWorker,
  testClient,
  testConfig,
  type TestDatabase,
} from '../helpers/services';

/** customer.subscription.updated events of one customer, with the given `created` seconds and statuses. */
function subscriptionEvents(token: string, steps: { created: number; status: string }[]): BillingEvent[] {
  return steps.map(({ created, status }) => {
    const { envelope } = uniqueFixture('customer.subscription.updated', { token });
    envelope.created = created;
    envelope.data.object.status = status;
    const n = normalizeStripeEvent(envelope);
    if (n.outcome !== 'handled') throw new Error('fixture did not normalize');
    return n.event;
  });
}

describe('batched apply of queued events', () => {
  let db: TestDatabase;

  /** Which of these events have an applied_events row. */
  const appliedIds = async (events: BillingEvent[]) =>
    (await db.sql<{ event_id: string }[]>`
      SELECT event_id FROM applied_events WHERE event_id IN ${db.sql(events.map((e) => e.eventId))}`).map((r) => r.event_id);

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('applies a run of events in order in one call, each exactly once', async () => {
    const { applyBillingEvents } = createBillingDbActivities({ sql: db.sql });
    const { token } = uniqueFixture('customer.subscription.updated');
    const events = subscriptionEvents(token, [
      { created: 1_770_000_010, status: 'active' },
      { created: 1_770_000_020, status: 'past_due' },
      { created: 1_770_000_015, status: 'trialing' }, // older than the one before: stale
      { created: 1_770_000_030, status: 'active' },
    ]);
    const results = await applyBillingEvents([...events, events[1]!]);
    expect(results.map((r) => r.outcome)).toEqual(['applied', 'applied', 'stale', 'applied', 'duplicate']);
    expect(results.map((r) => r.subscription?.status)).toEqual(['active', 'past_due', 'past_due', 'active', 'active']);
    expect(await appliedIds(events)).toHaveLength(4);
    // A second delivery of the whole batch changes nothing.
    expect((await applyBillingEvents(events)).map((r) => r.outcome)).toEqual(['duplicate', 'duplicate', 'duplicate', 'duplicate']);
  });

  it('stops at a same-second tie: commits the events before it, reports the tie, leaves the rest', async () => {
    const { applyBillingEvents } = createBillingDbActivities({ sql: db.sql });
    const { token } = uniqueFixture('customer.subscription.updated');
    const events = subscriptionEvents(token, [
      { created: 1_770_000_100, status: 'active' },
      { created: 1_770_000_200, status: 'past_due' },
      { created: 1_770_000_200, status: 'active' }, // same second as the one before: the payload cannot tell
      { created: 1_770_000_300, status: 'canceled' },
    ]);
    const results = await applyBillingEvents(events);
    expect(results.map((r) => r.outcome)).toEqual(['applied', 'applied', 'tie']);
    expect(results[2]!.subscription?.status).toBe('past_due');
    expect((await appliedIds(events)).sort()).toEqual([events[0]!.eventId, events[1]!.eventId].sort());
  });

  it('rejects a batch that mixes customers', async () => {
    const { applyBillingEvents } = createBillingDbActivities({ sql: db.sql });
    const a = subscriptionEvents(uniqueFixture('customer.subscription.updated').token, [{ created: 1_770_000_000, status: 'active' }]);
    const b = subscriptionEvents(uniqueFixture('customer.subscription.updated').token, [{ created: 1_770_000_000, status: 'active' }]);
    await expect(applyBillingEvents([a[0]!, b[0]!])).rejects.toThrow(/one customer/);
  });

  it('retries a failing batch (a database outage) inside the worker until it commits, then applies it once', async () => {
    const config = testConfig();
    const activities = realActivities(db.sql, config);
    const { token, customerId } = uniqueFixture('customer.subscription.updated');
    const events = subscriptionEvents(token, [
      { created: 1_770_002_000, status: 'active' },
      { created: 1_770_002_010, status: 'past_due' },
    ]);
    let calls = 0;
    const client = await testClient();
    const worker = await startTestWorker({
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      activities: {
        ...activities,
        async applyBillingEvents(batch: BillingEvent[]) {
          if (++calls <= 2) throw new Error('connect ECONNREFUSED (simulated outage)');
          return activities.applyBillingEvents(batch);
        },
      },
    });
    const handle = await client.workflow.signalWithStart('customerWorkflow', {
      workflowId: customerWorkflowId(customerId),
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      args: [{ customerId }],
      signal: stripeEventSignal,
      signalArgs: [events[0]!],
    });
    await handle.signal(stripeEventSignal, events[1]!);
    try {
      const state = await eventually(async () => {
        const s = await handle.query(stateQuery);
        return s.applied >= 2 && s;
      });
      expect(state.subscription?.status).toBe('past_due');
      expect(calls).toBeGreaterThanOrEqual(3);
      expect(await appliedIds(events)).toHaveLength(2);
      const history = await handle.fetchHistory();
      expect(history.events!.some((e) => e.workflowTaskFailedEventAttributes)).toBe(false);
    } finally {
      await handle.terminate('test done').catch(() => {});
      await worker.stop();
      await client.connection.close();
    }
  });

  it('the workflow applies a burst in fewer batches than events, in order, settling a tie inside it', async () => {
    const config = testConfig();
    const activities = realActivities(db.sql, config);
    const batchSizes: number[] = [];
    const { token, customerId } = uniqueFixture('customer.subscription.updated');
    const steps = Array.from({ length: 30 }, (_, i) => ({ created: 1_770_001_000 + i * 10, status: i % 2 ? 'past_due' : 'active' }));
    steps[20] = { created: steps[19]!.created, status: 'active' }; // a same-second tie in the middle
    const events = subscriptionEvents(token, steps);
    const client = await testClient();
    // Signal everything before a worker polls, so the queue holds the whole burst.
    const handle = await client.workflow.signalWithStart('customerWorkflow', {
      workflowId: customerWorkflowId(customerId),
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      args: [{ customerId }],
      signal: stripeEventSignal,
      signalArgs: [events[0]!],
    });
    for (const e of events.slice(1)) await handle.signal(stripeEventSignal, e);
    let refetched = 0;
    const worker = await startTestWorker({
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      activities: {
        ...activities,
        async applyBillingEvents(batch: BillingEvent[]) {
          batchSizes.push(batch.length);
          return activities.applyBillingEvents(batch);
        },
        // Stripe's answer to the re-fetch: the tied event's object is the newest.
        async fetchSubscription() {
          refetched++;
          const d = events[20]!.data;
          if (d.kind !== 'subscription') throw new Error('unreachable');
          return { ...d, customerId, fetchedAt: steps[20]!.created };
        },
      },
    });
    try {
      const state = await eventually(async () => {
        const s = await handle.query(stateQuery);
        return s.applied + s.staleDropped >= 30 && s;
      });
      expect(state.applied).toBe(30);
      expect(state.subscription?.status).toBe(steps[29]!.status);
      expect(refetched).toBe(1);
      expect(batchSizes.reduce((a, b) => a + b, 0)).toBe(30 + (30 - 20 - 1)); // the events after the tie are resubmitted
      expect(batchSizes.length).toBeLessThan(10);
      expect(await appliedIds(events)).toHaveLength(30);
      // The batched path is recorded as local-activity markers, not activity tasks.
      const history = await handle.fetchHistory();
      expect(history.events!.some((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity')).toBe(true);
      expect(history.events!.some((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'applyBillingEvent')).toBe(false);
    } finally {
      await handle.terminate('test done').catch(() => {});
      await worker.stop();
      await client.connection.close();
    }
  });
});
