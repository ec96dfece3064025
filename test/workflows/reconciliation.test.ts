import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import Stripe from 'stripe';
import { customerWorkflowId, dunningWorkflowId, reconciliationWorkflowId } from '../../domain/ids';
import type { ReconciliationInput, ReconciliationResult } from '../../domain/reconciliation';
import type { Config } from '../../lib/config';
import { stateQuery } from '../../workflows/contracts';
import type { reconciliationWorkflow } from '../../workflows/reconciliation';
import { loadFixture } from '../fixtures';
import { buildTestApp, stopTestDispatchers } from '../helpers/app';
import { createPagingStripe, fakeInvoice, fakeSubscription, type PagingStripe } from '../helpers/paging-stripe';
import { failInvoiceThroughWebhook, seedLocalSubscription, seedPlans, startReconciliationWorker } from '../helpers/reconciliation';
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
    await stopTestDispatchers();
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

  /** [object type, object id, field, local value, Stripe value, repair status] per drift row. */
  const driftTuples = async (sql: TestDatabase['sql'], runId: string) =>
    (
      await sql<(DriftRow & { object_type: string })[]>`
        SELECT object_type, object_id, customer_id, field, local_value, stripe_value, repair_status
        FROM reconciliation_drift WHERE run_id = ${runId} ORDER BY object_id, field`
    ).map((d) => [d.object_type, d.object_id, d.field, d.local_value, d.stripe_value, d.repair_status]);

  const cycleOf = async (sql: TestDatabase['sql'], invoiceId: string) =>
    (
      await sql<{ customer_id: string; subscription_id: string | null; state: string; started_at: Date; ended_at: Date | null }[]>`
        SELECT customer_id, subscription_id, state, started_at, ended_at FROM dunning_cycles WHERE invoice_id = ${invoiceId}`
    )[0] ?? null;

  /** The customer workflow's own view of a cycle (its `state` query), once it shows `state`. */
  const cycleViewOf = (customerId: string, invoiceId: string, state: string) =>
    eventually(async () => {
      const view = (await client.workflow.getHandle(customerWorkflowId(customerId)).query(stateQuery)).dunning.find((d) => d.invoiceId === invoiceId);
      return view?.state === state ? view : null;
    }, 20_000, `${customerId}'s workflow to show ${invoiceId} ${state}`);

  const accessOf = async (sql: TestDatabase['sql'], customerId: string) =>
    (await sql<{ access_state: string }[]>`SELECT access_state FROM customers WHERE id = ${customerId}`)[0]?.access_state;

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

    // The normal path from here: the dispatcher hands it to the customer workflow, which applies it once.
    const { dispatcher } = buildTestApp({ sql, temporal: client, config, dispatch: false });
    expect(await dispatcher.pass()).toMatchObject({ claimed: 1, dispatched: 1, signals: 1 });
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
  it('opens the missing dunning cycle of an open, attempted invoice through the customer workflow, and leaves other open invoices alone', async () => {
    const u = uniqueId();
    const cus = (n: string) => `cus_${n}_${u}`;
    const sub = (n: string) => `sub_${n}_${u}`;
    const inv = (n: string) => `in_${n}_${u}`;
    const fake = createPagingStripe([
      fakeSubscription({ id: sub('due'), customer: cus('due'), status: 'past_due' }),
      fakeSubscription({ id: sub('upgrade'), customer: cus('upgrade') }),
      fakeSubscription({ id: sub('gone'), customer: cus('gone'), status: 'canceled' }),
      fakeSubscription({ id: sub('fresh'), customer: cus('fresh') }),
      fakeSubscription({ id: sub('dunned'), customer: cus('dunned'), status: 'past_due' }),
    ]);
    const finalizedAt = Math.floor(Date.now() / 1000) - 600;
    fake.invoices = [
      fakeInvoice({ id: inv('due'), customer: cus('due'), subscription: sub('due'), created: finalizedAt }),
      // A declined plan change's proration invoice: the plan change handles it, not dunning.
      fakeInvoice({ id: inv('upgrade'), customer: cus('upgrade'), subscription: sub('upgrade'), billingReason: 'subscription_update' }),
      fakeInvoice({ id: inv('gone'), customer: cus('gone'), subscription: sub('gone') }),
      // Finalized, not attempted yet.
      fakeInvoice({ id: inv('fresh'), customer: cus('fresh'), subscription: sub('fresh'), attemptCount: 0 }),
      fakeInvoice({ id: inv('dunned'), customer: cus('dunned'), subscription: sub('dunned') }),
    ];
    const { sql } = await setUp(fake);
    for (const n of ['due', 'upgrade', 'fresh']) {
      await seedLocalSubscription(sql, { id: sub(n), customer: cus(n), status: n === 'due' ? 'past_due' : 'active' });
    }
    await seedLocalSubscription(sql, { id: sub('gone'), customer: cus('gone'), status: 'canceled' });
    await seedLocalSubscription(sql, { id: sub('dunned'), customer: cus('dunned'), status: 'past_due' });
    await failInvoiceThroughWebhook({ sql, client, config, invoice: fake.invoices[4]! });

    const first = await reconcile({ pageSize: 2 });

    expect(first.result).toMatchObject({ status: 'succeeded', scanned: 5, drifted: 1, repaired: 1, flagged: 0, pending: 0 });
    expect(await driftTuples(sql, first.runId)).toEqual([['invoice', inv('due'), 'invoice_without_cycle', null, 'open, 1 attempt(s)', 'repaired']]);
    // Every open invoice was listed, page by page.
    expect(fake.calls.filter((c) => c.method === 'invoices.list').map((c) => c.arg)).toEqual([null, inv('upgrade'), inv('fresh')]);
    // Opened by the customer workflow applying the synthetic failure: its row, its child, its own view.
    const applied = await sql`SELECT customer_id, type, outcome FROM applied_events WHERE event_id = ${`recon:${first.runId}:${inv('due')}`}`;
    expect(applied).toEqual([{ customer_id: cus('due'), type: 'invoice.payment_failed', outcome: 'applied' }]);
    const cycle = await cycleOf(sql, inv('due'));
    expect(cycle).toMatchObject({ customer_id: cus('due'), subscription_id: sub('due'), ended_at: null });
    // The failure dates from the invoice's finalization (the retry schedule counts from it), not from today.
    expect(cycle!.started_at.getTime()).toBe(finalizedAt * 1000);
    await cycleViewOf(cus('due'), inv('due'), 'retrying');
    expect((await client.workflow.getHandle(dunningWorkflowId(inv('due'))).describe()).status.name).toBe('RUNNING');
    expect(await accessOf(sql, cus('due'))).toBe('grace');
    for (const n of ['upgrade', 'gone', 'fresh']) expect(await cycleOf(sql, inv(n))).toBeNull();

    const second = await reconcile({ pageSize: 2 });
    expect(second.result).toMatchObject({ status: 'succeeded', drifted: 0 });
    expect(second.result.invoicesChecked).toBe(7); // 5 open invoices + the 2 cycles now open
  });

  it('ends the local cycles whose invoice Stripe has paid or voided, through the customer workflow', async () => {
    const u = uniqueId();
    const cus = (n: string) => `cus_${n}_${u}`;
    const sub = (n: string) => `sub_${n}_${u}`;
    const inv = (n: string) => `in_${n}_${u}`;
    const names = ['paid', 'void', 'open'];
    const fake = createPagingStripe(names.map((n) => fakeSubscription({ id: sub(n), customer: cus(n), status: 'past_due' })));
    fake.invoices = names.map((n) => fakeInvoice({ id: inv(n), customer: cus(n), subscription: sub(n) }));
    const { sql } = await setUp(fake);
    for (const n of names) {
      await seedLocalSubscription(sql, { id: sub(n), customer: cus(n), status: 'past_due' });
      await failInvoiceThroughWebhook({ sql, client, config, invoice: fake.invoices.find((i) => i.id === inv(n))! });
      await cycleViewOf(cus(n), inv(n), 'retrying');
    }
    // Settled at Stripe; the webhooks that said so never arrived.
    const paid = fake.invoices.find((i) => i.id === inv('paid'))!;
    Object.assign(paid, { status: 'paid', amount_paid: 1000, amount_remaining: 0, status_transitions: { ...paid.status_transitions, paid_at: paid.created + 7200 } });
    const voided = fake.invoices.find((i) => i.id === inv('void'))!;
    Object.assign(voided, { status: 'void', status_transitions: { ...voided.status_transitions, voided_at: voided.created + 7200 } });

    const { runId, result } = await reconcile({ pageSize: 2 });

    expect(result).toMatchObject({ status: 'succeeded', drifted: 2, repaired: 2, flagged: 0, pending: 0 });
    expect(await driftTuples(sql, runId)).toEqual([
      ['invoice', inv('paid'), 'cycle_invoice_closed', 'retrying', 'paid', 'repaired'],
      ['invoice', inv('void'), 'cycle_invoice_closed', 'retrying', 'void', 'repaired'],
    ]);
    expect(fake.calls.filter((c) => c.method === 'invoices.retrieve').map((c) => c.arg).sort()).toEqual(names.map(inv).sort());
    expect(await cycleOf(sql, inv('paid'))).toMatchObject({ state: 'recovered', ended_at: expect.any(Date) });
    expect(await cycleOf(sql, inv('void'))).toMatchObject({ state: 'canceled', ended_at: expect.any(Date) });
    expect(await cycleOf(sql, inv('open'))).toMatchObject({ state: 'retrying', ended_at: null });
    await cycleViewOf(cus('paid'), inv('paid'), 'recovered');
    await cycleViewOf(cus('void'), inv('void'), 'canceled');
    const applied = await sql<{ event_id: string; type: string }[]>`
      SELECT event_id, type FROM applied_events WHERE event_id LIKE ${`recon:${runId}:%`} ORDER BY event_id`;
    expect(applied).toEqual([
      { event_id: `recon:${runId}:${inv('paid')}`, type: 'invoice.paid' },
      { event_id: `recon:${runId}:${inv('void')}`, type: 'invoice.voided' },
    ]);

    const second = await reconcile({ pageSize: 2 });
    expect(second.result).toMatchObject({ status: 'succeeded', drifted: 0 });
  });

  it('flags a customer whose access state disagrees with its rows; a subscription repair re-derives access instead', async () => {
    const u = uniqueId();
    const cus = (n: string) => `cus_${n}_${u}`;
    const sub = (n: string) => `sub_${n}_${u}`;
    const fake = createPagingStripe([
      fakeSubscription({ id: sub('grace'), customer: cus('grace') }),
      fakeSubscription({ id: sub('ended'), customer: cus('ended'), status: 'canceled' }),
      fakeSubscription({ id: sub('ok'), customer: cus('ok') }),
    ]);
    const { sql } = await setUp(fake);
    for (const n of ['grace', 'ended', 'ok']) await seedLocalSubscription(sql, { id: sub(n), customer: cus(n) });
    // Left in grace with no open cycle and an active subscription (written around the apply path).
    await sql`UPDATE customers SET access_state = 'grace' WHERE id = ${cus('grace')}`;
    expect(await accessOf(sql, cus('ended'))).toBe('active');

    const { runId, result } = await reconcile({ pageSize: 2 });

    expect(result).toMatchObject({ status: 'succeeded', drifted: 2, repaired: 1, flagged: 1, pending: 0, customersChecked: 2 });
    expect(await driftTuples(sql, runId)).toEqual([
      ['customer', cus('grace'), 'access_state', 'grace', 'active', 'flagged'],
      ['subscription', sub('ended'), 'status', 'active', 'canceled', 'repaired'],
    ]);
    // The snapshot repair re-derived access; the flagged one is left for a human: reconciliation writes no billing row.
    expect(await accessOf(sql, cus('ended'))).toBe('suspended');
    expect(await accessOf(sql, cus('grace'))).toBe('grace');
  });

  it('undoes the retired mark_unpaid pause in Stripe once, and the customer workflow mirrors the plain status', async () => {
    const u = uniqueId();
    const fake = createPagingStripe([
      fakeSubscription({ id: `sub_marked_${u}`, customer: `cus_marked_${u}`, status: 'past_due', markedUnpaidFor: `in_marked_${u}` }),
      fakeSubscription({ id: `sub_ended_${u}`, customer: `cus_ended_${u}`, status: 'canceled', markedUnpaidFor: `in_ended_${u}` }),
      fakeSubscription({ id: `sub_ok_${u}`, customer: `cus_ok_${u}` }),
    ]);
    const { sql } = await setUp(fake);
    // What the old mapping recorded for a "marked unpaid" subscription.
    await seedLocalSubscription(sql, { id: `sub_marked_${u}`, customer: `cus_marked_${u}`, status: 'unpaid' });
    await seedLocalSubscription(sql, { id: `sub_ended_${u}`, customer: `cus_ended_${u}`, status: 'canceled' });
    await seedLocalSubscription(sql, { id: `sub_ok_${u}`, customer: `cus_ok_${u}` });

    const first = await reconcile({ pageSize: 2 });

    expect(first.result).toMatchObject({ status: 'succeeded', drifted: 1, repaired: 1, flagged: 0, pending: 0 });
    expect(await driftTuples(sql, first.runId)).toEqual([
      ['subscription', `sub_marked_${u}`, 'pause_collection', null, 'keep_as_draft', 'repaired'],
      ['subscription', `sub_marked_${u}`, 'status', 'unpaid', 'past_due', 'repaired'],
    ]);
    // One update, of the live subscription only, unsetting the pause and the markers.
    const updates = fake.calls.filter((c) => c.method === 'update');
    expect(updates.map((c) => [c.arg, c.params, c.idempotencyKey])).toEqual([
      [`sub_marked_${u}`, { pause_collection: '', metadata: { dunning_final_action: '', dunning_invoice_id: '' } }, `recon:undo-mark-unpaid:sub_marked_${u}`],
    ]);
    expect(fake.subscriptions[0]).toMatchObject({ pause_collection: null, metadata: {} });
    // The exhausted invoice the pause stood for is written off, as the mark_uncollectible final action does.
    expect(fake.calls.filter((c) => c.method === 'invoices.markUncollectible').map((c) => [c.arg, c.idempotencyKey])).toEqual([
      [`in_marked_${u}`, `recon:undo-mark-unpaid:sub_marked_${u}:write-off`],
    ]);
    const [local] = await sql<{ status: string }[]>`SELECT status FROM subscriptions WHERE id = ${`sub_marked_${u}`}`;
    expect(local!.status).toBe('past_due');

    const second = await reconcile({ pageSize: 2 });
    expect(second.result).toMatchObject({ status: 'succeeded', drifted: 0 });
    expect(fake.calls.filter((c) => c.method === 'update')).toHaveLength(1);
  });
});
