import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import Stripe from 'stripe';
import { customerWorkflowId, reconciliationWorkflowId } from '../../domain/ids';
import type { ReconciliationInput, ReconciliationResult } from '../../domain/reconciliation';
import type { Config } from '../../lib/config';
import type { reconciliationWorkflow } from '../../workflows/reconciliation';
import { loadFixture } from '../fixtures';
import { buildTestApp } from '../helpers/app';
import { createPagingStripe, fakeSubscription, type PagingStripe } from '../helpers/paging-stripe';
import { seedLocalSubscription, seedPlans, startReconciliationWorker } from '../helpers/reconciliation';
import {
  createTestDatabase,
  eventually,
  testClient,
  testConfig,
  uniqueId,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';

interface DriftRow {
  object_id: string;
  customer_id: string | null;
  field: string;
  local_value: string | null;
  stripe_value: string | null;
  repair_status: string;
}

describe('reconciliationWorkflow on the Temporal dev server with real Postgres', () => {
  let client: Client;
  let db: TestDatabase | undefined;
  let worker: RunningWorker | undefined;
  let config: Config;

  beforeAll(async () => {
    client = await testClient();
  });

  afterEach(async () => {
    await worker?.stop();
    await db?.drop();
    worker = undefined;
    db = undefined;
  });

  afterAll(async () => {
    await client?.connection.close();
  });

  /** A fresh database, plan catalog and worker per test: the local sweep looks at every local row. */
  async function setUp(fake: PagingStripe, opts: Parameters<typeof startReconciliationWorker>[0]['wrap'] = undefined): Promise<TestDatabase> {
    db = await createTestDatabase();
    config = testConfig({ STRIPE_RATE_LIMIT_PER_SECOND: '200' });
    await seedPlans(db.sql);
    worker = await startReconciliationWorker({ sql: db.sql, config, client, fake, ...(opts ? { wrap: opts } : {}) });
    return db;
  }

  async function reconcile(input: ReconciliationInput = {}): Promise<{ runId: string; result: ReconciliationResult }> {
    const runId = reconciliationWorkflowId(uniqueId('test-'));
    const result = await client.workflow.execute<typeof reconciliationWorkflow>('reconciliationWorkflow', {
      workflowId: runId,
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      args: [{ repairWaitSeconds: 30, ...input }],
    });
    return { runId, result };
  }

  const driftOf = (sql: TestDatabase['sql'], runId: string) =>
    sql<DriftRow[]>`
      SELECT object_id, customer_id, field, local_value, stripe_value, repair_status
      FROM reconciliation_drift WHERE run_id = ${runId} ORDER BY object_id, field`;

  it('detects, records and repairs drift of every kind through the customer workflows; a second run finds none', async () => {
    const u = uniqueId();
    const cus = (n: string) => `cus_${n}_${u}`;
    const sub = (n: string) => `sub_${n}_${u}`;
    const fake = createPagingStripe([
      fakeSubscription({ id: sub('ok'), customer: cus('ok') }),
      fakeSubscription({ id: sub('status'), customer: cus('status'), status: 'past_due' }),
      fakeSubscription({ id: sub('plan'), customer: cus('plan'), priceId: 'price_pro' }),
      fakeSubscription({ id: sub('period'), customer: cus('period'), periodEnd: 1_800_086_400 }),
      fakeSubscription({ id: sub('canceled'), customer: cus('canceled'), status: 'canceled' }),
      fakeSubscription({ id: sub('cape'), customer: cus('cape'), cancelAtPeriodEnd: true }),
      fakeSubscription({ id: sub('missing'), customer: cus('missing'), priceId: 'price_pro' }),
    ]);
    const { sql } = await setUp(fake);
    for (const n of ['ok', 'status', 'plan', 'period', 'canceled', 'cape']) {
      await seedLocalSubscription(sql, { id: sub(n), customer: cus(n) });
    }
    await seedLocalSubscription(sql, { id: sub('localonly'), customer: cus('localonly') });

    const first = await reconcile({ pageSize: 3 });

    expect(first.result).toMatchObject({ status: 'succeeded', scanned: 8, drifted: 7, repaired: 6, flagged: 1, pending: 0 });
    const drift = await driftOf(sql, first.runId);
    expect(drift.map((d) => [d.object_id, d.field, d.local_value, d.stripe_value, d.repair_status])).toEqual([
      [sub('canceled'), 'status', 'active', 'canceled', 'repaired'],
      [sub('cape'), 'cancel_at_period_end', 'false', 'true', 'repaired'],
      [sub('localonly'), 'existence', 'active', null, 'flagged'],
      [sub('missing'), 'existence', null, 'active', 'repaired'],
      [sub('period'), 'current_period_end', new Date(1_800_000_000_000).toISOString(), new Date(1_800_086_400_000).toISOString(), 'repaired'],
      [sub('plan'), 'price', 'price_basic', 'price_pro', 'repaired'],
      [sub('status'), 'status', 'active', 'past_due', 'repaired'],
    ]);

    // Local state converged on Stripe, written by the customer workflows.
    const local = await sql<{ id: string; status: string; plan_id: string | null; current_period_end: Date; cancel_at_period_end: boolean; needs_review: boolean }[]>`
      SELECT id, status, plan_id, current_period_end, cancel_at_period_end, needs_review FROM subscriptions ORDER BY id`;
    const byId = new Map(local.map((r) => [r.id, r]));
    expect(byId.get(sub('status'))?.status).toBe('past_due');
    expect(byId.get(sub('plan'))?.plan_id).toBe('pro-monthly');
    expect(byId.get(sub('period'))?.current_period_end.getTime()).toBe(1_800_086_400_000);
    expect(byId.get(sub('canceled'))?.status).toBe('canceled');
    expect(byId.get(sub('cape'))?.cancel_at_period_end).toBe(true);
    expect(byId.get(sub('missing'))).toMatchObject({ status: 'active', plan_id: 'pro-monthly' });
    // Local-only: flagged for a human, never deleted.
    expect(byId.get(sub('localonly'))).toMatchObject({ status: 'active', needs_review: true });
    for (const n of ['status', 'missing', 'localonly']) {
      const described = await client.workflow.getHandle(customerWorkflowId(cus(n))).describe();
      expect(described.type).toBe('customerWorkflow');
    }

    const run = await sql`SELECT status, scanned, drifted, repaired, flagged, finished_at FROM reconciliation_runs WHERE id = ${first.runId}`;
    expect(run[0]).toMatchObject({ status: 'succeeded', scanned: 8, drifted: 7, repaired: 6, flagged: 1 });
    expect(await sql`SELECT 1 FROM reconciliation_seen WHERE run_id = ${first.runId}`).toHaveLength(0);

    const second = await reconcile({ pageSize: 3 });
    expect(second.result).toMatchObject({ status: 'succeeded', scanned: 7, drifted: 0, repaired: 0, flagged: 0 });
    expect(await driftOf(sql, second.runId)).toEqual([]);
  });

  it('pages through many pages with continue-as-new every 2 pages, losing and double-counting nothing', async () => {
    const u = uniqueId();
    const subs = Array.from({ length: 23 }, (_, i) => ({ id: `sub_${String(i).padStart(2, '0')}_${u}`, customer: `cus_${i}_${u}` }));
    const drifted = new Set([subs[0]!.id, subs[11]!.id, subs[22]!.id]);
    const fake = createPagingStripe(subs.map((s) => fakeSubscription({ ...s, status: drifted.has(s.id) ? 'past_due' : 'active' })));
    let lostOnce = false;
    const { sql } = await setUp(fake, (real) => ({
      // The worker "crashes" after page 4 committed: the page is retried and must count nothing twice.
      async scanStripeSubscriptionsPage(input) {
        const result = await real.scanStripeSubscriptionsPage(input);
        if (!lostOnce && fake.calls.filter((c) => c.method === 'list').length === 4) {
          lostOnce = true;
          throw new Error('worker lost the activity result');
        }
        return result;
      },
    }));
    for (const s of subs) await seedLocalSubscription(sql, s);
    await seedLocalSubscription(sql, { id: `sub_zz_localonly_a_${u}`, customer: `cus_la_${u}` });
    await seedLocalSubscription(sql, { id: `sub_zz_localonly_b_${u}`, customer: `cus_lb_${u}` });

    const { runId, result } = await reconcile({ pageSize: 2, pagesPerRun: 2 });

    expect(lostOnce).toBe(true);
    expect(result).toMatchObject({ status: 'succeeded', scanned: 25, drifted: 5, repaired: 3, flagged: 2, pending: 0 });
    const drift = await driftOf(sql, runId);
    expect(drift.map((d) => d.object_id).sort()).toEqual([...drifted, `sub_zz_localonly_a_${u}`, `sub_zz_localonly_b_${u}`].sort());
    // Every Stripe page was read; page 5 twice (the retry), none skipped.
    const cursors = fake.calls.filter((c) => c.method === 'list').map((c) => c.arg);
    const expectedCursors = [null, ...Array.from({ length: 11 }, (_, i) => subs[i * 2 + 1]!.id)];
    expect([...new Set(cursors)]).toEqual(expectedCursors);
    expect(cursors).toHaveLength(expectedCursors.length + 1);
    // The local sweep asked Stripe only about the two rows the list did not return.
    expect(fake.calls.filter((c) => c.method === 'retrieve').map((c) => c.arg).sort()).toEqual([
      `sub_zz_localonly_a_${u}`,
      `sub_zz_localonly_b_${u}`,
    ]);
    // 12 list pages + 2 sweep pages at 2 pages per run: the run continued as new several times.
    const runs = await eventually(async () => {
      const ids: string[] = [];
      for await (const wf of client.workflow.list({ query: `WorkflowId = '${runId}'` })) ids.push(wf.runId);
      return ids.length >= 7 ? ids : null;
    }, 20_000, 'visibility to list every run of the chain');
    expect(runs.length).toBeGreaterThanOrEqual(7);
  });

  it('slows down on Stripe 429s and still completes the scan', async () => {
    const u = uniqueId();
    const subs = Array.from({ length: 6 }, (_, i) => ({ id: `sub_${i}_${u}`, customer: `cus_${i}_${u}` }));
    const fake = createPagingStripe(subs.map((s, i) => fakeSubscription({ ...s, status: i === 4 ? 'canceled' : 'active' })));
    // Call 2 is answered 429 once; calls 4-8 are answered 429 five times in a row, more than the
    // activity waits out by itself, so the attempt fails and Temporal retries it (nextRetryDelay).
    fake.rateLimit = (n) => n === 2 || (n >= 4 && n <= 8);
    const { sql } = await setUp(fake);
    for (const s of subs) await seedLocalSubscription(sql, s);

    const started = Date.now();
    const { runId, result } = await reconcile({ pageSize: 2 });

    expect(result).toMatchObject({ status: 'succeeded', scanned: 6, drifted: 1, repaired: 1 });
    const calls = fake.calls;
    expect(calls.filter((c) => c.outcome === 'rate_limited')).toHaveLength(6);
    // After each 429 the next call waited at least the back-off (100 ms doubling).
    for (const [i, c] of calls.entries()) {
      if (c.outcome === 'rate_limited' && calls[i + 1]) expect(calls[i + 1]!.at - c.at).toBeGreaterThanOrEqual(90);
    }
    // The fifth consecutive 429 surfaced to Temporal, which waited its 2 s nextRetryDelay.
    expect(Date.now() - started).toBeGreaterThan(2000);
    const listed = calls.filter((c) => c.method === 'list' && c.outcome === 'ok').map((c) => c.arg);
    expect(listed).toEqual([null, subs[1]!.id, subs[3]!.id]);
    const run = await sql`SELECT status, error FROM reconciliation_runs WHERE id = ${runId}`;
    expect(run[0]).toMatchObject({ status: 'succeeded', error: null });
  });

  it('fails the run and records why when Stripe rejects the credentials', async () => {
    const u = uniqueId();
    const fake = createPagingStripe([fakeSubscription({ id: `sub_1_${u}`, customer: `cus_1_${u}` }), fakeSubscription({ id: `sub_2_${u}`, customer: `cus_2_${u}` })]);
    fake.failure = (call) =>
      call.arg !== null ? new Stripe.errors.StripeAuthenticationError({ message: 'Invalid API Key provided', statusCode: 401 } as never) : null;
    const { sql } = await setUp(fake);

    const runId = reconciliationWorkflowId(uniqueId('test-'));
    const run = client.workflow.execute<typeof reconciliationWorkflow>('reconciliationWorkflow', {
      workflowId: runId,
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      args: [{ pageSize: 1 }],
    });
    await expect(run).rejects.toBeInstanceOf(WorkflowFailedError);

    // Non-retryable: one attempt, no retry storm against a bad key.
    expect(fake.calls.map((c) => c.outcome)).toEqual(['ok', 'failed']);
    const rows = await sql<{ status: string; error: string; finished_at: Date | null; scanned: number }[]>`
      SELECT status, error, finished_at, scanned FROM reconciliation_runs WHERE id = ${runId}`;
    expect(rows[0]).toMatchObject({ status: 'failed', scanned: 1 });
    expect(rows[0]!.error).toMatch(/Invalid API Key/);
    expect(rows[0]!.finished_at).not.toBeNull();
    expect(await sql`SELECT 1 FROM reconciliation_seen WHERE run_id = ${runId}`).toHaveLength(0);
  });

  it('puts events Stripe failed to deliver into the delivery log, and the sweeper applies them once', async () => {
    const u = uniqueId();
    const customerId = `cus_events_${u}`;
    const now = Math.floor(Date.now() / 1000);
    const event = (id: string, created: number) => {
      const e = loadFixture('customer.updated');
      e.id = id;
      e.created = created;
      e.data.object.id = customerId;
      return e;
    };
    const missed = event(`evt_missed_${u}`, now - 86_400);
    const known = event(`evt_known_${u}`, now - 2 * 86_400);
    const tooOld = event(`evt_old_${u}`, now - 31 * 86_400);
    const fake = createPagingStripe();
    fake.undeliveredEvents = [missed, known, tooOld];
    const { sql } = await setUp(fake);
    // Delivered to us, but Stripe still counts it undelivered (say our 2xx was lost): the log keeps its state.
    await sql`
      INSERT INTO webhook_events (event_id, type, stripe_created_at, status, payload, payload_bytes)
      VALUES (${known.id}, 'customer.updated', now(), 'applied', ${sql.json(known)}, 100)`;

    const { result } = await reconcile({ pageSize: 1 });

    expect(result).toMatchObject({ status: 'succeeded', scanned: 0, drifted: 0, eventsRecovered: 1 });
    expect(fake.calls.filter((c) => c.method === 'events.list').map((c) => c.arg)).toEqual([null, missed.id]);
    const logged = await sql<{ event_id: string; status: string }[]>`
      SELECT event_id, status FROM webhook_events ORDER BY event_id`;
    expect(logged).toEqual([
      { event_id: known.id, status: 'applied' },
      { event_id: missed.id, status: 'received' },
    ]);

    // The normal path from here: the sweeper dispatches it to the customer workflow, which applies it once.
    const { ingest } = buildTestApp({ sql, temporal: client, config });
    expect(await ingest.sweep(0)).toEqual({ attempted: 1, dispatched: 1 });
    const email = await eventually(async () => {
      const rows = await sql<{ email: string | null }[]>`SELECT email FROM customers WHERE id = ${customerId}`;
      return rows[0]?.email ?? null;
    }, 20_000, 'the recovered event to be applied');
    expect(email).toBe(missed.data.object.email);
    const applied = await eventually(async () => {
      const rows = await sql<{ status: string }[]>`SELECT status FROM webhook_events WHERE event_id = ${missed.id}`;
      return rows[0]?.status === 'applied' ? rows[0] : null;
    }, 20_000, 'the delivery log to show it applied');
    expect(applied.status).toBe('applied');
  });
});
