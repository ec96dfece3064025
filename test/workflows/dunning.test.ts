/**
 * dunningWorkflow on the time-skipping test server: weeks of durable timers in seconds. Activities
 * are the real ones on a real Postgres database; only the Stripe network is a scripted fake.
 */
import path from 'node:path';
import { WorkflowExecutionAlreadyStartedError, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { MockActivityEnvironment, TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities';
import { createNotifyActivities, type SendNoticeResult } from '../../activities/notify';
import { DEFAULT_DUNNING_POLICY } from '../../domain/dunning-policy';
import { customerWorkflowId, dunningWorkflowId } from '../../domain/ids';
import type { BillingEvent } from '../../domain/billing-event';
import { type DunningWorkflowInput, type DunningWorkflowResult } from '../../domain/messages';
import { dunningEventSignal, dunningStateQuery, stateQuery, stripeEventSignal } from '../../workflows/contracts';
import { BillingWorkflowKindKey, DunningStateKey, StripeCustomerIdKey } from '../../workflows/contracts';
import { dunningStats } from '../../lib/dunning-stats';
import {
  createFakeStripe,
  dunningIds,
  invoiceEvent,
  registerSearchAttributes,
  subscriptionEvent,
  type FakeStripe,
  type PayOutcome,
} from '../helpers/dunning';
import { startSmtpSink, type SmtpSink } from '../helpers/smtp-sink';
import { createLogger } from '../../lib/logger';
import { createOutboxRelay, type OutboxRelay } from '../../worker/outbox-relay';
import { createTestDatabase, eventually, installQuietRuntime, testConfig, uniqueId, type TestDatabase } from '../helpers/services';

const TEST_SERVER = path.resolve(__dirname, '..', '..', '.tools', 'bin', 'temporal-test-server');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

describe('dunningWorkflow (time-skipping)', () => {
  let env: TestWorkflowEnvironment;
  let db: TestDatabase;

  beforeAll(async () => {
    installQuietRuntime();
    [env, db] = await Promise.all([
      TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path: TEST_SERVER } } }),
      createTestDatabase(),
    ]);
    await registerSearchAttributes(env);
  });

  afterAll(async () => {
    await env?.teardown();
    await db?.drop();
  });

  /** A worker on a fresh task queue with the real activities, the fake Stripe and the given config. */
  async function startWorker(opts: {
    fake: FakeStripe;
    config?: Record<string, string>;
    taskQueue?: string;
    /** 0: no sticky cache. The test server never times out a dead worker's sticky queue, so a restart test needs it. */
    maxCachedWorkflows?: number;
  }): Promise<{ taskQueue: string; stop(): Promise<void> }> {
    const taskQueue = opts.taskQueue ?? uniqueId('dunning-');
    const config = testConfig({ TEMPORAL_TASK_QUEUE: taskQueue, ...opts.config });
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue,
      workflowBundle: { codePath: inject('workflowBundlePath') },
      activities: createActivities({ sql: db.sql, stripe: opts.fake.stripe, config, temporalClient: env.client }),
      shutdownGraceTime: '1 second',
      ...(opts.maxCachedWorkflows === undefined ? {} : { maxCachedWorkflows: opts.maxCachedWorkflows }),
    });
    const running = worker.run();
    return {
      taskQueue,
      async stop() {
        // A cycle reports to its customer workflow (started on demand). Let it go idle before its worker
        // stops: a workflow task left pending on this queue (or one cut short by a terminate) would hold
        // the test server's time-skipping lock for the later tests. An idle workflow holds nothing.
        for (const customerId of reportedCustomers) {
          const customer = env.client.workflow.getHandle(customerWorkflowId(customerId));
          await eventually(async () => {
            const desc = await customer.describe();
            if (desc.status.name !== 'RUNNING') return true;
            // No workflow task and no activity in flight: either on this queue, left behind by a stopped worker,
            // would hold the test server's time-skipping lock.
            const idle = !desc.raw.pendingWorkflowTask && (desc.raw.pendingActivities ?? []).length === 0;
            return idle && (await customer.query(stateQuery)).queued === 0;
          }, 20_000, 'the customer workflow to be idle').catch(() => {});
        }
        reportedCustomers.clear();
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await running;
      },
    };
  }

  /** Customers whose customer workflow a cycle under test may have started. */
  const reportedCustomers = new Set<string>();

  /** Retries an assertion block until it holds: the customer workflow records a cycle's reports asynchronously. */
  async function eventuallyExpect(block: () => Promise<void>, what = 'the cycle\'s reports to be recorded'): Promise<void> {
    await eventually(async () => {
      try {
        await block();
        return true;
      } catch {
        return false;
      }
    }, 20_000, what).catch(() => {});
    await block();
  }

  async function seedSubscription(ids: { customerId: string; subscriptionId: string }, status = 'active'): Promise<void> {
    reportedCustomers.add(ids.customerId);
    await db.sql`INSERT INTO customers (id, access_state) VALUES (${ids.customerId}, 'active') ON CONFLICT (id) DO NOTHING`;
    await db.sql`
      INSERT INTO subscriptions (id, customer_id, status, price_id, stripe_updated_at)
      VALUES (${ids.subscriptionId}, ${ids.customerId}, ${status}, 'price_dunning_test', now() - interval '1 hour')`;
  }

  async function startDunning(
    taskQueue: string,
    ids: { customerId: string; subscriptionId: string; invoiceId: string },
    firstFailure: { declineCode: string | null },
    extra: Partial<DunningWorkflowInput> = {},
  ): Promise<{ handle: WorkflowHandleWithFirstExecutionRunId; startedAtMs: number }> {
    const startedAtMs = await env.currentTimeMs();
    const handle = await env.client.workflow.start('dunningWorkflow', {
      workflowId: dunningWorkflowId(ids.invoiceId),
      taskQueue,
      args: [
        {
          invoiceId: ids.invoiceId,
          customerId: ids.customerId,
          subscriptionId: ids.subscriptionId,
          firstFailure: { eventId: `evt_${uniqueId()}`, declineCode: firstFailure.declineCode, at: Math.floor(startedAtMs / 1000) },
          ...extra,
        } satisfies DunningWorkflowInput,
      ],
    });
    return { handle, startedAtMs };
  }

  async function attempts(invoiceId: string) {
    return db.sql<{ attempt: number; trigger: string; outcome: string; decline_code: string | null; attempted_at: Date; idempotency_key: string }[]>`
      SELECT attempt, trigger, outcome, decline_code, attempted_at, idempotency_key FROM dunning_attempts
      WHERE invoice_id = ${invoiceId} ORDER BY attempt`;
  }

  async function notices(invoiceId: string) {
    return db.sql<{ kind: string; status: string; created_at: Date; due_at: Date | null; deferred_by: string | null; payload: Record<string, unknown>; dedup_key: string }[]>`
      SELECT kind, status, created_at, due_at, deferred_by, payload, dedup_key FROM notifications WHERE invoice_id = ${invoiceId} ORDER BY created_at, id`;
  }

  async function cycle(invoiceId: string) {
    const [row] = await db.sql<{ state: string; attempts_made: number; ended_at: Date | null; final_action: string | null; first_decline_code: string | null; last_decline_code: string | null; decline_class: string | null; next_attempt_at: Date | null }[]>`
      SELECT state, attempts_made, ended_at, final_action, first_decline_code, last_decline_code, decline_class, next_attempt_at
      FROM dunning_cycles WHERE invoice_id = ${invoiceId}`;
    return row;
  }

  async function localState(customerId: string) {
    const [row] = await db.sql<{ access_state: string; status: string | null }[]>`
      SELECT c.access_state, s.status::text AS status FROM customers c LEFT JOIN subscriptions s ON s.customer_id = c.id
      WHERE c.id = ${customerId}`;
    return row;
  }

  const scripted = (outcomes: PayOutcome[]) => (attempt: number): PayOutcome => outcomes[attempt - 1] ?? { decline: 'generic_decline' };

  it('recovers a soft decline on attempt 2, on the configured schedule', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: scripted([{ decline: 'insufficient_funds' }, 'succeed']) });
    const worker = await startWorker({ fake });
    try {
      const { handle, startedAtMs } = await startDunning(worker.taskQueue, ids, { declineCode: 'insufficient_funds' });

      await env.sleep('36 hours');
      const view = await handle.query(dunningStateQuery);
      expect(view).toMatchObject({ state: 'retrying', attempt: 1, maxAttempts: 4, lastDeclineCode: 'insufficient_funds' });
      expect(view.nextAttemptAt! * 1000).toBeGreaterThanOrEqual(startedAtMs + 3 * DAY - 1000);
      expect(view.nextAttemptAt! * 1000).toBeLessThan(startedAtMs + 3 * DAY + 60_000);
      const meta = (await handle.query('__temporal_workflow_metadata')) as { currentDetails?: string };
      expect(meta.currentDetails).toBe(`attempt 1/4, next ${new Date(startedAtMs + 3 * DAY).toISOString().slice(0, 10)}`);
      // Upserted search attributes (registered on the test server in beforeAll; it rejects unknown ones).
      const attributes = (await handle.describe()).typedSearchAttributes;
      expect([attributes.get(DunningStateKey), attributes.get(StripeCustomerIdKey), attributes.get(BillingWorkflowKindKey)]).toEqual([
        'retrying',
        ids.customerId,
        'dunning',
      ]);
      expect(await localState(ids.customerId)).toEqual({ access_state: 'grace', status: 'past_due' });

      const result = (await handle.result()) as DunningWorkflowResult;
      expect(result).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 2 });

      await eventuallyExpect(async () => expect((await cycle(ids.invoiceId))?.ended_at ?? null).not.toBeNull());
      await eventuallyExpect(async () => expect(await localState(ids.customerId)).toEqual({ access_state: 'active', status: 'active' }));
      const rows = await attempts(ids.invoiceId);
      expect(rows.map((r) => [r.attempt, r.trigger, r.outcome, r.decline_code])).toEqual([
        [1, 'schedule', 'failed', 'insufficient_funds'],
        [2, 'schedule', 'succeeded', null],
      ]);
      // Days 1 and 3 after the failure (the default "1,3,5,7" schedule).
      expect(rows[0]!.attempted_at.getTime() - startedAtMs).toBeGreaterThanOrEqual(DAY - 1000);
      expect(rows[0]!.attempted_at.getTime() - startedAtMs).toBeLessThan(DAY + 60_000);
      expect(rows[1]!.attempted_at.getTime() - startedAtMs).toBeGreaterThanOrEqual(3 * DAY - 1000);
      expect(rows[1]!.attempted_at.getTime() - startedAtMs).toBeLessThan(3 * DAY + 60_000);
      expect(fake.payCalls.map((c) => [c.idempotencyKey, c.params])).toEqual([
        [`dunning:${ids.invoiceId}:1`, { off_session: true }],
        [`dunning:${ids.invoiceId}:2`, { off_session: true }],
      ]);
      expect(await cycle(ids.invoiceId)).toMatchObject({ state: 'recovered', attempts_made: 2, first_decline_code: 'insufficient_funds', next_attempt_at: null });
      expect((await cycle(ids.invoiceId))!.ended_at).not.toBeNull();
      expect(await localState(ids.customerId)).toEqual({ access_state: 'active', status: 'active' });
    } finally {
      await worker.stop();
    }
  });

  it('on a hard decline sends exactly one notice and never retries blindly; a new payment method retries at once and recovers', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: scripted(['succeed']) });
    const worker = await startWorker({ fake });
    try {
      const { handle, startedAtMs } = await startDunning(worker.taskQueue, ids, { declineCode: 'stolen_card' });

      // Past two scheduled retry days: nothing may have been charged.
      await env.sleep('4 days');
      expect(fake.payCalls).toHaveLength(0);
      expect(await handle.query(dunningStateQuery)).toMatchObject({ state: 'awaiting_payment_method', attempt: 0, nextAttemptAt: null });
      const waiting = await notices(ids.invoiceId);
      expect(waiting.map((n) => [n.kind, n.status])).toEqual([['update_payment_method', 'queued']]);
      expect(waiting[0]!.payload).toMatchObject({ hostedInvoiceUrl: `https://invoice.example.test/${ids.invoiceId}`, declineCode: 'stolen_card' });
      const meta = (await handle.query('__temporal_workflow_metadata')) as { currentDetails?: string };
      expect(meta.currentDetails).toMatch(/^attempt 0\/4, no further retries; waiting for a new payment method until \d{4}-\d{2}-\d{2}$/);

      const pmAtMs = await env.currentTimeMs();
      await handle.signal(dunningEventSignal, { kind: 'payment_method_updated', eventId: `evt_${uniqueId()}`, paymentMethodId: 'pm_new', at: Math.floor(pmAtMs / 1000) });
      const result = (await handle.result()) as DunningWorkflowResult;
      expect(result).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 1 });

      await eventuallyExpect(async () => expect((await cycle(ids.invoiceId))?.ended_at ?? null).not.toBeNull());
      const rows = await attempts(ids.invoiceId);
      expect(rows.map((r) => [r.attempt, r.trigger, r.outcome])).toEqual([[1, 'payment_method', 'succeeded']]);
      // Immediately after the signal, not at a scheduled retry day.
      expect(rows[0]!.attempted_at.getTime() - pmAtMs).toBeLessThan(60_000);
      expect(rows[0]!.attempted_at.getTime() - startedAtMs).toBeGreaterThan(4 * DAY - 1000);
      // Still exactly one notice; recovered before anything was sent, so it is withdrawn from the outbox.
      expect((await notices(ids.invoiceId)).map((n) => [n.kind, n.status])).toEqual([['update_payment_method', 'canceled']]);
      expect(await cycle(ids.invoiceId)).toMatchObject({ state: 'recovered', decline_class: 'hard', first_decline_code: 'stolen_card' });
    } finally {
      await worker.stop();
    }
  });

  it('asks for authentication with the hosted invoice link instead of retrying silently', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: scripted([{ authenticationRequired: true }]) });
    const worker = await startWorker({ fake });
    try {
      const { handle } = await startDunning(worker.taskQueue, ids, { declineCode: 'insufficient_funds' });
      await env.sleep('30 hours');
      // Attempt 1 met a 3DS challenge: no further off-session attempt until the customer acts.
      await env.sleep('5 days');
      expect(fake.payCalls).toHaveLength(1);
      expect(await handle.query(dunningStateQuery)).toMatchObject({ state: 'awaiting_authentication', attempt: 1, lastDeclineCode: 'authentication_required' });
      const sent = (await notices(ids.invoiceId)).filter((n) => n.kind === 'authenticate_payment');
      expect(sent).toHaveLength(1);
      expect(sent[0]!.payload.hostedInvoiceUrl).toBe(`https://invoice.example.test/${ids.invoiceId}`);

      await handle.signal(dunningEventSignal, { kind: 'paid', eventId: `evt_${uniqueId()}`, at: Math.floor((await env.currentTimeMs()) / 1000) });
      expect(await handle.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 1 });
      expect(fake.payCalls).toHaveLength(1);
    } finally {
      await worker.stop();
    }
  });

  it('ends at once when the invoice is paid mid-wait: no later attempts, queued notices withdrawn', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: scripted([{ decline: 'insufficient_funds' }]) });
    const worker = await startWorker({ fake });
    try {
      const { handle } = await startDunning(worker.taskQueue, ids, { declineCode: 'insufficient_funds' });
      await env.sleep('36 hours');
      expect(fake.payCalls).toHaveLength(1);
      const before = await notices(ids.invoiceId);
      expect(before.map((n) => [n.kind, n.status, n.deferred_by])).toEqual([
        ['payment_failed', 'queued', null],
        ['payment_failed', 'queued', 'cooldown'], // attempt 1's notice fell inside the 48 h cooldown: deferred, not dropped
      ]);
      expect(before[1]!.due_at!.getTime() - before[0]!.due_at!.getTime()).toBe(48 * HOUR);

      // The customer pays on the hosted invoice page: Stripe's subscription turns active, invoice.paid follows.
      fake.subscription.status = 'active';
      const paidAtMs = await env.currentTimeMs();
      await handle.signal(dunningEventSignal, { kind: 'paid', eventId: `evt_${uniqueId()}`, at: Math.floor(paidAtMs / 1000) });
      expect(await handle.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 1 });

      await env.sleep('10 days');
      expect(fake.payCalls).toHaveLength(1);
      const after = await notices(ids.invoiceId);
      expect(after.map((n) => [n.kind, n.status])).toEqual([
        ['payment_failed', 'canceled'],
        ['payment_failed', 'canceled'],
      ]);
      await eventuallyExpect(async () => {
        expect(await cycle(ids.invoiceId)).toMatchObject({ state: 'recovered', attempts_made: 1, next_attempt_at: null });
        expect(await localState(ids.customerId)).toEqual({ access_state: 'active', status: 'active' });
      });
    } finally {
      await worker.stop();
    }
  });

  it('writes the invoice off when every attempt fails (mark_uncollectible): access suspended, a later payment restores it', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: () => ({ decline: 'do_not_honor' }) });
    // The retired 'mark_unpaid' setting reads as mark_uncollectible.
    const worker = await startWorker({ fake, config: { DUNNING_RETRY_DAYS: '1,3', DUNNING_FINAL_ACTION: 'mark_unpaid' } });
    try {
      const { handle } = await startDunning(worker.taskQueue, ids, { declineCode: 'do_not_honor' });
      expect(await handle.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'exhausted', attempts: 2 });
      expect(fake.payCalls).toHaveLength(2);
      expect(fake.invoiceCalls.filter((c) => c.method === 'markUncollectible')).toEqual([
        { method: 'markUncollectible', invoiceId: ids.invoiceId, params: {}, idempotencyKey: `dunning:${ids.invoiceId}:final` },
      ]);
      // No service for free: collection is never paused, and nothing else changes on the subscription.
      expect(fake.subscriptionCalls.filter((c) => c.method === 'update')).toEqual([]);
      await eventuallyExpect(async () => expect(await cycle(ids.invoiceId)).toMatchObject({ state: 'exhausted', final_action: 'mark_uncollectible', attempts_made: 2 }));
      expect((await notices(ids.invoiceId)).map((n) => n.kind)).toContain('final_notice');

      // Stripe's webhook for the write-off reaches the customer workflow: access suspended, subscription continues.
      const customer = env.client.workflow.getHandle(customerWorkflowId(ids.customerId));
      const now = Math.floor((await env.currentTimeMs()) / 1000);
      await customer.signal(stripeEventSignal, invoiceEvent({ type: 'invoice.marked_uncollectible', ...ids, created: now }));
      await eventuallyExpect(async () => expect((await localState(ids.customerId))?.access_state).toBe('suspended'));
      // The customer pays the written-off invoice later: access comes back.
      await customer.signal(stripeEventSignal, invoiceEvent({ type: 'invoice.paid', ...ids, created: now + 60 }));
      await eventuallyExpect(async () => expect((await localState(ids.customerId))?.access_state).not.toBe('suspended'));
    } finally {
      await worker.stop();
    }
  });

  it('classifies by the decline Stripe holds, not the payload: a hard decline with advice do_not_try_again is never retried blindly', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    // Today's invoice.payment_failed carries no decline code; the invoice's payment does.
    const fake = createFakeStripe({
      ...ids,
      pay: scripted(['succeed']),
      sourceDecline: { declineCode: 'generic_decline', adviceCode: 'do_not_try_again', networkDeclineCode: '14' },
    });
    const worker = await startWorker({ fake });
    try {
      const { handle } = await startDunning(worker.taskQueue, ids, { declineCode: null });
      await env.sleep('3 days');
      expect(fake.payCalls).toHaveLength(0);
      expect(fake.invoiceCalls.filter((c) => c.method === 'listPayments')).toMatchObject([
        { invoiceId: ids.invoiceId, params: { invoice: ids.invoiceId, expand: ['data.payment.payment_intent'] } },
      ]);
      expect(await handle.query(dunningStateQuery)).toMatchObject({ state: 'awaiting_payment_method', attempt: 0, lastDeclineCode: 'generic_decline' });
      expect((await notices(ids.invoiceId)).map((n) => n.kind)).toEqual(['update_payment_method']);
      await eventuallyExpect(async () =>
        expect(await db.sql`SELECT last_decline_code, last_advice_code, last_network_decline_code, decline_class FROM dunning_cycles WHERE invoice_id = ${ids.invoiceId}`).toEqual([
          { last_decline_code: 'generic_decline', last_advice_code: 'do_not_try_again', last_network_decline_code: '14', decline_class: 'hard' },
        ]),
      );
      await handle.signal(dunningEventSignal, { kind: 'paid', eventId: `evt_${uniqueId()}`, at: Math.floor((await env.currentTimeMs()) / 1000) });
      await handle.result();
    } finally {
      await worker.stop();
    }
  });

  it('pays with the new card: it becomes the subscription default and the retry names it', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: scripted(['succeed']), sourceDecline: { declineCode: 'expired_card' } });
    const worker = await startWorker({ fake });
    try {
      const { handle } = await startDunning(worker.taskQueue, ids, { declineCode: null });
      await env.sleep('2 days');
      expect(fake.payCalls).toHaveLength(0);
      await handle.signal(dunningEventSignal, { kind: 'payment_method_updated', eventId: `evt_${uniqueId()}`, paymentMethodId: 'pm_new_card', at: Math.floor((await env.currentTimeMs()) / 1000) });
      expect(await handle.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 1 });
      expect(fake.subscriptionCalls.filter((c) => c.method === 'update')).toEqual([
        { method: 'update', params: { default_payment_method: 'pm_new_card' }, idempotencyKey: `dunning:${ids.invoiceId}:1:default-payment-method` },
      ]);
      expect(fake.payCalls.map((c) => [c.params, c.idempotencyKey])).toEqual([[{ off_session: true, payment_method: 'pm_new_card' }, `dunning:${ids.invoiceId}:1`]]);
    } finally {
      await worker.stop();
    }
  });

  it('takes no final action when the invoice was voided meanwhile: the final action re-reads it', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: () => ({ decline: 'insufficient_funds', advice: 'try_again_later' }) });
    const worker = await startWorker({ fake, config: { DUNNING_RETRY_DAYS: '1,3', DUNNING_FINAL_ACTION: 'cancel' } });
    try {
      const { handle } = await startDunning(worker.taskQueue, ids, { declineCode: 'insufficient_funds' });
      await env.sleep('36 hours');
      expect(fake.payCalls).toHaveLength(1);
      // Voided at Stripe (e.g. by ops in the Dashboard) with no webhook reaching us yet.
      fake.setInvoiceStatus(ids.invoiceId, 'void');
      expect(await handle.result()).toMatchObject({ invoiceId: ids.invoiceId, outcome: 'canceled' });
      expect(fake.subscriptionCalls.filter((c) => c.method === 'cancel')).toEqual([]);
      expect(fake.invoiceCalls.filter((c) => c.method === 'markUncollectible')).toEqual([]);
      expect((await notices(ids.invoiceId)).map((n) => n.kind)).not.toContain('final_notice');
    } finally {
      await worker.stop();
    }
  });

  it('keeps notices within the cap over a 14-day cycle with 6 failure events', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const codes = ['insufficient_funds', 'do_not_honor', 'try_again_later', 'insufficient_funds', 'generic_decline'];
    const fake = createFakeStripe({ ...ids, pay: (n) => ({ decline: codes[n - 1] ?? 'insufficient_funds' }) });
    const worker = await startWorker({ fake });
    try {
      // 1 failure webhook + 5 failed retries over 14 days; defaults allow 1 notice per 48 h and 4 per cycle.
      const { handle, startedAtMs } = await startDunning(worker.taskQueue, ids, { declineCode: 'insufficient_funds' }, {
        policyOverride: { retryDaysAfterFailure: [1, 2.5, 5, 9, 14], finalAction: 'leave_past_due' },
      });
      await env.sleep('12 hours');
      // Stripe's echo of a failure without a code adds nothing.
      await handle.signal(dunningEventSignal, { kind: 'payment_failed', eventId: `evt_${uniqueId()}`, declineCode: null, at: Math.floor((await env.currentTimeMs()) / 1000) });
      expect(await handle.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'exhausted', attempts: 5 });

      const all = await notices(ids.invoiceId);
      // The cooldown defers (deferred_by), the cycle cap drops reminders past 4, the final notice is never dropped.
      expect(all.map((n) => [n.kind, n.status, n.deferred_by ?? n.payload.suppressedBy ?? null])).toEqual([
        ['payment_failed', 'queued', null],
        ['payment_failed', 'queued', 'cooldown'],
        ['payment_failed', 'queued', 'cooldown'],
        ['payment_failed', 'queued', 'cooldown'],
        ['final_attempt_ahead', 'suppressed', 'cycle_cap'],
        ['final_notice', 'queued', null],
      ]);
      const reminders = all.filter((n) => n.status === 'queued' && n.kind !== 'final_notice');
      expect(reminders.length).toBeLessThanOrEqual(4);
      for (let i = 1; i < reminders.length; i++) {
        expect(reminders[i]!.due_at!.getTime() - reminders[i - 1]!.due_at!.getTime()).toBeGreaterThanOrEqual(48 * HOUR);
      }
      expect(all.at(-1)!.created_at.getTime() - startedAtMs).toBeGreaterThanOrEqual(14 * DAY - 1000);
      await eventuallyExpect(async () => {
        expect(await cycle(ids.invoiceId)).toMatchObject({ state: 'exhausted', final_action: 'leave_past_due', last_decline_code: 'generic_decline' });
        expect(await localState(ids.customerId)).toEqual({ access_state: 'grace', status: 'past_due' });
      });
    } finally {
      await worker.stop();
    }
  });

  it('continues the schedule where it was after the worker is restarted mid-cycle', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: scripted([{ decline: 'insufficient_funds' }, { decline: 'insufficient_funds' }, 'succeed']) });
    // The cycle's customer workflow runs on its own worker with a normal cache: a workflow that calls
    // local activities does not run on a worker without one (the SDK loses the local activity's result).
    const customers = await startWorker({ fake });
    await env.client.workflow.start('customerWorkflow', { workflowId: customerWorkflowId(ids.customerId), taskQueue: customers.taskQueue, args: [{ customerId: ids.customerId }] });
    const first = await startWorker({ fake, maxCachedWorkflows: 0 });
    const { handle, startedAtMs } = await startDunning(first.taskQueue, ids, { declineCode: 'insufficient_funds' });
    await env.sleep('2 days');
    expect(fake.payCalls).toHaveLength(1);
    await first.stop();

    const second = await startWorker({ fake, taskQueue: first.taskQueue, maxCachedWorkflows: 0 });
    try {
      expect(await handle.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 3 });
      await eventuallyExpect(async () => expect((await cycle(ids.invoiceId))?.ended_at ?? null).not.toBeNull());
      const rows = await attempts(ids.invoiceId);
      expect(rows.map((r) => [r.attempt, r.outcome])).toEqual([
        [1, 'failed'],
        [2, 'failed'],
        [3, 'succeeded'],
      ]);
      const days = rows.map((r) => Math.round((r.attempted_at.getTime() - startedAtMs) / HOUR) / 24);
      expect(days).toEqual([1, 3, 5]);
      expect(fake.payCalls.map((c) => c.idempotencyKey)).toEqual([1, 2, 3].map((n) => `dunning:${ids.invoiceId}:${n}`));
    } finally {
      await second.stop();
      await customers.stop();
    }
  });

  it('carries its state across its own continue-as-new without repeating an attempt', async () => {
    const ids = dunningIds();
    await seedSubscription(ids);
    const fake = createFakeStripe({ ...ids, pay: scripted([{ decline: 'insufficient_funds' }, 'succeed']) });
    const worker = await startWorker({ fake });
    try {
      const { handle } = await startDunning(worker.taskQueue, ids, { declineCode: 'insufficient_funds' }, { continueAsNewAtHistoryLength: 10 });
      expect(await handle.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 2 });
      const desc = await handle.describe();
      expect(desc.runId).not.toBe(handle.firstExecutionRunId);
      expect(fake.payCalls.map((c) => c.idempotencyKey)).toEqual([`dunning:${ids.invoiceId}:1`, `dunning:${ids.invoiceId}:2`]);
      // One notice per decision, none repeated by the new run: attempt 0's and attempt 1's (deferred by the cooldown, then withdrawn).
      expect((await notices(ids.invoiceId)).map((n) => [n.dedup_key, n.status])).toEqual([
        [`invoice:${ids.invoiceId}:payment_failed:0`, 'canceled'],
        [`invoice:${ids.invoiceId}:payment_failed:1`, 'canceled'],
      ]);
    } finally {
      await worker.stop();
    }
  });

  describe('emails over SMTP', () => {
    const FROM = 'Billing <billing@example.test>';
    let sink: SmtpSink;
    beforeAll(async () => {
      sink = await startSmtpSink();
    });
    afterAll(async () => {
      await sink?.close();
    });

    /** The outbox relay of a worker, driving notice workflows on `taskQueue` (polls every 50 ms). */
    function relayFor(taskQueue: string): OutboxRelay {
      const relay = createOutboxRelay({ sql: db.sql, client: env.client, taskQueue, logger: createLogger({ level: 'silent' }), pollMs: 50, notices: true, appWebhooks: false });
      relay.start();
      return relay;
    }

    /** Terminates the notice workflows of an invoice still running (a failed assertion must not leave one holding the test server's clock). */
    async function stopNotices(invoiceId: string): Promise<void> {
      for (const row of await ledger(invoiceId)) {
        await env.client.workflow.getHandle(`notice:${row.dedup_key}`).terminate('test cleanup').catch(() => {});
      }
    }

    /** A customer with a subscription and an email address; no customer workflow (nothing to wait for at stop). */
    async function seedCustomer(ids: { customerId: string; subscriptionId: string }, email: string): Promise<void> {
      await seedSubscription(ids);
      reportedCustomers.delete(ids.customerId);
      await db.sql`UPDATE customers SET email = ${email} WHERE id = ${ids.customerId}`;
    }

    /** Waits until the notice's workflow sleeps in its timer (its plan activity done). */
    async function untilWaiting(workflowId: string): Promise<void> {
      await eventually(async () => {
        const handle = env.client.workflow.getHandle(workflowId);
        const history = await handle.fetchHistory().catch(() => null);
        return (history?.events ?? []).some((e) => e.timerStartedEventAttributes);
      }, 10_000, `${workflowId} to wait in its timer`);
    }

    async function ledger(invoiceId: string) {
      return db.sql<{ id: string; kind: string; status: string; dedup_key: string; message_id: string | null; attempts: number; deferred_by: string | null }[]>`
        SELECT id, kind, status, dedup_key, message_id, attempts, deferred_by FROM notifications WHERE invoice_id = ${invoiceId} ORDER BY id`;
    }

    it('a dunning cycle sends exactly the expected emails, in order, across a worker restart', async () => {
      sink.clear();
      const ids = dunningIds();
      await seedSubscription(ids);
      await db.sql`UPDATE customers SET email = 'ada@example.test', name = 'Ada' WHERE id = ${ids.customerId}`;
      const fake = createFakeStripe({ ...ids, pay: scripted([{ decline: 'insufficient_funds' }, { decline: 'insufficient_funds' }]) });
      const email = { SMTP_URL: sink.url, NOTIFY_FROM: FROM };
      const customers = await startWorker({ fake, config: email });
      await env.client.workflow.start('customerWorkflow', { workflowId: customerWorkflowId(ids.customerId), taskQueue: customers.taskQueue, args: [{ customerId: ids.customerId }] });
      const first = await startWorker({ fake, config: email, maxCachedWorkflows: 0 });
      const relay = relayFor(first.taskQueue);
      let second: Awaited<ReturnType<typeof startWorker>> | null = null;
      try {
        // Retries on days 1 and 3; the default cooldown is 48 h; the final action cancels.
        const { handle } = await startDunning(first.taskQueue, ids, { declineCode: 'insufficient_funds' }, { policyOverride: { retryDaysAfterFailure: [1, 3] } });
        await sink.waitFor(1);
        expect(sink.messages[0]!.subject).toMatch(/payment/i);

        // Day 1: the retry fails; the notice that the last try is ahead falls inside the cooldown and waits in its timer.
        await env.sleep('1 day');
        await eventually(async () => (await ledger(ids.invoiceId)).length === 2, 10_000, 'the second notice');
        const waiting = (await ledger(ids.invoiceId))[1]!;
        expect(waiting).toMatchObject({ kind: 'final_attempt_ahead', status: 'queued', deferred_by: 'cooldown' });
        await untilWaiting(`notice:${waiting.dedup_key}`);
        expect(sink.messages).toHaveLength(1);

        // The worker dies while that notice waits; another takes over the same task queue.
        await first.stop();
        second = await startWorker({ fake, config: email, taskQueue: first.taskQueue, maxCachedWorkflows: 0 });
        await env.sleep('1 day');
        await sink.waitFor(2);

        // Day 3: the last retry fails; the final action cancels and the customer is told, at once.
        expect(await handle.result()).toMatchObject({ invoiceId: ids.invoiceId, outcome: 'exhausted', attempts: 2 });
        await sink.waitFor(3);
        await new Promise((r) => setTimeout(r, 500));
        expect(sink.messages.map((m) => m.subject)).toHaveLength(3);
        expect(sink.messages.every((m) => m.to.includes('ada@example.test'))).toBe(true);
        expect(sink.messages[1]!.text).toMatch(/last/i);
        expect(sink.messages[2]!.subject).toMatch(/cancel/i);
        const rows = await ledger(ids.invoiceId);
        expect(rows.map((r) => [r.kind, r.status, r.attempts])).toEqual([
          ['payment_failed', 'sent', 1],
          ['final_attempt_ahead', 'sent', 1],
          ['final_notice', 'sent', 1],
        ]);
        expect(rows.map((r) => r.message_id)).toEqual(sink.messages.map((m) => m.messageId));
        expect(new Set(rows.map((r) => r.message_id)).size).toBe(3);
        // Each email links the card-update page and the invoice.
        expect(sink.messages[0]!.text).toContain('/billing/card-update/');
      } finally {
        await relay.stop();
        await stopNotices(ids.invoiceId);
        await second?.stop();
        await first.stop().catch(() => {});
        await customers.stop();
      }
    });

    /** Records one notice now (workflow time) through the real activity and lets the relay start its workflow. */
    async function recordNotice(config: ReturnType<typeof testConfig>, ids: { customerId: string; invoiceId: string }) {
      const { sendDunningNotice } = createNotifyActivities({ sql: db.sql, config });
      const atMs = await env.currentTimeMs();
      const result = (await new MockActivityEnvironment().run(sendDunningNotice, {
        customerId: ids.customerId,
        invoiceId: ids.invoiceId,
        kind: 'payment_failed' as const,
        attempt: 0,
        atMs,
        policy: DEFAULT_DUNNING_POLICY,
        payload: { maxAttempts: 4, declineCode: 'insufficient_funds', nextAttemptAt: null, hostedInvoiceUrl: null },
      })) as SendNoticeResult;
      return { result, atMs };
    }

    /** Quiet hours that cover the server's current hour (UTC) and end 2–3 hours later. */
    async function quietNow(): Promise<{ quiet: string; endMs: number }> {
      const now = new Date(await env.currentTimeMs());
      const h = now.getUTCHours();
      const end = (h + 3) % 24;
      const endMs = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate(), h + 3);
      return { quiet: `${h}-${end}`, endMs };
    }

    it('quiet hours defer a notice by a durable timer, and it goes out when they end', async () => {
      sink.clear();
      const ids = dunningIds();
      await seedCustomer(ids, 'night@example.test');
      const { quiet, endMs } = await quietNow();
      const config = testConfig({ SMTP_URL: sink.url, NOTIFY_FROM: FROM, NOTIFY_QUIET_HOURS: quiet, NOTIFY_TIMEZONE: 'UTC' });
      const worker = await startWorker({ fake: createFakeStripe({ ...ids, pay: scripted([]) }), config: { SMTP_URL: sink.url, NOTIFY_FROM: FROM, NOTIFY_QUIET_HOURS: quiet } });
      const relay = relayFor(worker.taskQueue);
      try {
        const { result } = await recordNotice(config, ids);
        expect(result).toMatchObject({ status: 'queued', deferredBy: 'quiet_hours', dueAt: new Date(endMs).toISOString() });
        const [row] = await ledger(ids.invoiceId);
        const notice = env.client.workflow.getHandle(`notice:${row!.dedup_key}`);
        await eventually(async () => (await notice.describe().catch(() => null))?.status.name === 'RUNNING', 10_000, 'the relay to start the notice');
        await new Promise((r) => setTimeout(r, 300));
        expect(sink.messages).toHaveLength(0);

        const outcome = await notice.result();
        expect(outcome).toMatchObject({ outcome: 'sent', waits: 1 });
        await sink.waitFor(1);
        expect(sink.messages[0]!.to).toEqual(['night@example.test']);
        // The wait was a durable timer up to the end of the quiet hours, in workflow time.
        const history = await notice.fetchHistory();
        const timers = (history.events ?? []).filter((e) => e.timerStartedEventAttributes);
        expect(timers).toHaveLength(1);
        const started = Number(history.events![0]!.eventTime!.seconds) * 1000;
        const timeoutMs = Number(timers[0]!.timerStartedEventAttributes!.startToFireTimeout!.seconds) * 1000;
        expect(Math.abs(started + timeoutMs - endMs)).toBeLessThan(60_000);
        expect(await ledger(ids.invoiceId)).toMatchObject([{ status: 'sent', deferred_by: 'quiet_hours' }]);
      } finally {
        await relay.stop();
        await stopNotices(ids.invoiceId);
        await worker.stop();
      }
    });

    it('a deferred notice whose invoice got paid meanwhile is cancelled, not sent', async () => {
      sink.clear();
      const ids = dunningIds();
      await seedCustomer(ids, 'paid@example.test');
      await db.sql`INSERT INTO invoices (id, customer_id, subscription_id, status, amount_due, currency, stripe_updated_at) VALUES (${ids.invoiceId}, ${ids.customerId}, ${ids.subscriptionId}, 'open', 1900, 'usd', now())`;
      const { quiet } = await quietNow();
      const config = testConfig({ SMTP_URL: sink.url, NOTIFY_FROM: FROM, NOTIFY_QUIET_HOURS: quiet });
      const worker = await startWorker({ fake: createFakeStripe({ ...ids, pay: scripted([]) }), config: { SMTP_URL: sink.url, NOTIFY_FROM: FROM, NOTIFY_QUIET_HOURS: quiet } });
      const relay = relayFor(worker.taskQueue);
      try {
        await recordNotice(config, ids);
        const [row] = await ledger(ids.invoiceId);
        const notice = env.client.workflow.getHandle(`notice:${row!.dedup_key}`);
        await untilWaiting(notice.workflowId);
        await db.sql`UPDATE invoices SET status = 'paid' WHERE id = ${ids.invoiceId}`;
        expect(await notice.result()).toMatchObject({ outcome: 'canceled', waits: 1 });
        await new Promise((r) => setTimeout(r, 300));
        expect(sink.messages).toHaveLength(0);
        expect(await ledger(ids.invoiceId)).toMatchObject([{ status: 'canceled' }]);
      } finally {
        await relay.stop();
        await stopNotices(ids.invoiceId);
        await worker.stop();
      }
    });
  });

  describe('driven by the customer workflow', () => {
    async function startCustomer(taskQueue: string, customerId: string, first: ReturnType<typeof subscriptionEvent>, continueAsNewAfter?: number) {
      return env.client.workflow.signalWithStart('customerWorkflow', {
        workflowId: customerWorkflowId(customerId),
        taskQueue,
        args: [{ customerId, continueAsNewAfter }],
        signal: stripeEventSignal,
        signalArgs: [first],
      });
    }

    async function runningChild(invoiceId: string): Promise<WorkflowHandle> {
      const child = env.client.workflow.getHandle(dunningWorkflowId(invoiceId));
      await eventually(async () => (await child.describe()).status.name === 'RUNNING', 20_000, `dunning:${invoiceId} to run`);
      return child;
    }

    /**
     * Terminates a customer workflow once it is idle. The test server leaks its time-skipping lock
     * for a task that is in flight when its workflow is terminated, which would freeze later tests.
     */
    async function stopCustomer(customer: WorkflowHandle): Promise<void> {
      await eventually(async () => {
        const desc = await customer.describe();
        if (desc.status.name !== 'RUNNING') return true;
        const idle = !desc.raw.pendingWorkflowTask && (desc.raw.pendingActivities ?? []).length === 0;
        return idle && (await customer.query(stateQuery)).queued === 0;
      }, 20_000, 'the customer workflow to be idle').catch(() => {});
      await customer.terminate().catch(() => {});
    }

    async function dunningSignals(child: WorkflowHandle): Promise<number> {
      const history = await child.fetchHistory();
      return (history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'dunningEvent').length;
    }

    it('cancels the subscription when every attempt fails and the customer workflow records it', async () => {
      const ids = dunningIds();
      const fake = createFakeStripe({ ...ids, pay: () => ({ decline: 'insufficient_funds' }) });
      const worker = await startWorker({ fake, config: { DUNNING_RETRY_DAYS: '1,3', DUNNING_FINAL_ACTION: 'cancel' } });
      // Invoice events on the test server's clock (earlier tests moved it days ahead): they anchor the schedule.
      // Subscription events on the real clock, like the Stripe snapshots the activities read.
      const now = Math.floor((await env.currentTimeMs()) / 1000);
      const realNow = Math.floor(Date.now() / 1000);
      const customer = await startCustomer(worker.taskQueue, ids.customerId, subscriptionEvent({ ...ids, status: 'active', created: realNow - 60 }));
      try {
        await customer.signal(stripeEventSignal, invoiceEvent({ type: 'invoice.payment_failed', ...ids, declineCode: 'insufficient_funds', created: now - 30 }));
        const child = await runningChild(ids.invoiceId);
        expect(await child.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'exhausted', attempts: 2 });

        expect(fake.subscriptionCalls.filter((c) => c.method === 'cancel')).toEqual([
          expect.objectContaining({ idempotencyKey: `dunning:${ids.invoiceId}:final`, params: expect.objectContaining({ prorate: false, invoice_now: false }) }),
        ]);
        await eventuallyExpect(async () => expect(await cycle(ids.invoiceId)).toMatchObject({ state: 'exhausted', final_action: 'cancel' }));
        // The single writer applied Stripe's canceled subscription; access follows.
        await eventually(async () => {
          const local = await localState(ids.customerId);
          return local?.status === 'canceled' && local.access_state === 'suspended';
        }, 20_000, 'the local subscription to be canceled');
        await eventually(async () => {
          const state = await customer.query(stateQuery);
          return state.subscription?.status === 'canceled' && state.dunning[0]?.state === 'exhausted';
        }, 20_000, 'the customer workflow view');
      } finally {
        await stopCustomer(customer);
        await worker.stop();
      }
    });

    it('does not start a second cycle for a duplicate or second payment_failed of the same invoice', async () => {
      const ids = dunningIds();
      const fake = createFakeStripe({ ...ids, pay: scripted(['succeed']) });
      const worker = await startWorker({ fake });
      // Invoice events on the test server's clock (earlier tests moved it days ahead): they anchor the schedule.
      // Subscription events on the real clock, like the Stripe snapshots the activities read.
      const now = Math.floor((await env.currentTimeMs()) / 1000);
      const realNow = Math.floor(Date.now() / 1000);
      const customer = await startCustomer(worker.taskQueue, ids.customerId, subscriptionEvent({ ...ids, status: 'active', created: realNow - 60 }));
      try {
        const failed = invoiceEvent({ type: 'invoice.payment_failed', ...ids, declineCode: 'insufficient_funds', created: now - 30 });
        await customer.signal(stripeEventSignal, failed);
        await customer.signal(stripeEventSignal, failed); // a redelivery
        await customer.signal(stripeEventSignal, invoiceEvent({ type: 'invoice.payment_failed', ...ids, declineCode: 'do_not_honor', created: now - 20 }));
        const child = await runningChild(ids.invoiceId);
        await eventually(async () => (await customer.query(stateQuery)).queued === 0 && (await dunningSignals(child)) === 1, 20_000, 'the second failure to join');
        await expect(
          env.client.workflow.start('dunningWorkflow', {
            workflowId: dunningWorkflowId(ids.invoiceId),
            taskQueue: worker.taskQueue,
            workflowIdReusePolicy: 'REJECT_DUPLICATE',
            args: [{ invoiceId: ids.invoiceId, customerId: ids.customerId, subscriptionId: ids.subscriptionId, firstFailure: { eventId: 'evt_other', declineCode: null, at: now } }],
          }),
        ).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);

        expect(await child.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 1 });
        expect((await customer.query(stateQuery)).duplicatesDropped).toBeGreaterThanOrEqual(1);
        const [count] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM dunning_cycles WHERE invoice_id = ${ids.invoiceId}`;
        expect(count!.n).toBe(1);
        expect(fake.payCalls).toHaveLength(1);
        expect((await notices(ids.invoiceId)).filter((n) => n.kind === 'payment_failed')).toHaveLength(1);
      } finally {
        await stopCustomer(customer);
        await worker.stop();
      }
    });

    // Keep this the last test that skips time: when a child completes after its parent run continued-as-new,
    // the Java test server keeps a time-skipping lock, so nothing may need skipped time afterwards.
    it('survives the customer workflow continuing-as-new mid-cycle: same cycle, no duplicate', async () => {
      const ids = dunningIds();
      const fake = createFakeStripe({ ...ids, pay: scripted([{ decline: 'insufficient_funds' }, 'succeed']) });
      const worker = await startWorker({ fake });
      // Invoice events on the test server's clock (earlier tests moved it days ahead): they anchor the schedule.
      // Subscription events on the real clock, like the Stripe snapshots the activities read.
      const now = Math.floor((await env.currentTimeMs()) / 1000);
      const realNow = Math.floor(Date.now() / 1000);
      // Continue-as-new after 4 applied items: the subscription, the failure, the cycle's first subscription
      // sync (a reconcile signal) and the second failure, sent once the cycle waits on its timer.
      const customer = await startCustomer(worker.taskQueue, ids.customerId, subscriptionEvent({ ...ids, status: 'active', created: realNow - 60 }), 4);
      try {
        await customer.signal(stripeEventSignal, invoiceEvent({ type: 'invoice.payment_failed', ...ids, declineCode: 'insufficient_funds', created: now - 30 }));
        const child = await runningChild(ids.invoiceId);
        await eventually(async () => {
          const events = (await child.fetchHistory()).events ?? [];
          return events.some((e) => e.timerStartedEventAttributes) && (await customer.query(stateQuery)).queued === 0;
        }, 20_000, 'the cycle to wait for retry 1');

        await customer.signal(stripeEventSignal, invoiceEvent({ type: 'invoice.payment_failed', ...ids, declineCode: 'insufficient_funds', created: now - 20 }));
        await eventually(async () => (await customer.describe()).runId !== customer.signaledRunId, 20_000, 'the customer workflow to continue-as-new');
        expect((await child.describe()).status.name).toBe('RUNNING');

        // The new run still knows the cycle: a third failure joins it instead of starting another.
        await customer.signal(stripeEventSignal, invoiceEvent({ type: 'invoice.payment_failed', ...ids, declineCode: 'insufficient_funds', created: now - 10 }));
        await eventually(async () => (await dunningSignals(child)) === 2, 20_000, 'both later failures to reach the running cycle');
        await env.sleep('30 hours');
        expect(fake.payCalls).toHaveLength(1);
        expect((await child.describe()).status.name).toBe('RUNNING');

        expect(await child.result()).toEqual({ invoiceId: ids.invoiceId, outcome: 'recovered', attempts: 2 });
        const history = await child.fetchHistory();
        expect((history.events ?? []).filter((e) => e.workflowExecutionStartedEventAttributes)).toHaveLength(1);
        const [count] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM dunning_cycles WHERE invoice_id = ${ids.invoiceId}`;
        expect(count!.n).toBe(1);
        await eventually(async () => (await customer.query(stateQuery)).dunning.find((d) => d.invoiceId === ids.invoiceId)?.state === 'recovered', 20_000, 'the parent to see the recovery');
        // The parent applies Stripe's active subscription from its queue, after the progress signal's handler ran.
        await eventually(async () => {
          const local = await localState(ids.customerId);
          return local?.access_state === 'active' && local.status === 'active';
        }, 20_000, 'the local state to be active again');
      } finally {
        await stopCustomer(customer);
        await worker.stop();
      }
    });

    // After the last time-skipping test: this one needs no skipped time (a stuck lock cannot slow it).
    it('a declined upgrade is not renewal dunning: the customer is told, and the proration invoice is voided when the pending update expires', async () => {
      const ids = dunningIds();
      const fake = createFakeStripe({ ...ids, pay: scripted(['succeed']) });
      const worker = await startWorker({ fake });
      const realNow = Math.floor(Date.now() / 1000);
      const customer = await startCustomer(worker.taskQueue, ids.customerId, subscriptionEvent({ ...ids, status: 'active', created: realNow - 60 }));
      try {
        // pending_if_incomplete: the proration invoice (billing_reason subscription_update) is declined.
        await customer.signal(stripeEventSignal, invoiceEvent({ type: 'invoice.payment_failed', billingReason: 'subscription_update', ...ids, declineCode: 'insufficient_funds', created: realNow - 30 }));
        await eventually(async () => (await notices(ids.invoiceId)).some((n) => n.kind === 'upgrade_declined'), 20_000, 'the upgrade-declined notice');
        await expect(env.client.workflow.getHandle(dunningWorkflowId(ids.invoiceId)).describe()).rejects.toThrow();
        expect(await db.sql`SELECT 1 FROM dunning_cycles WHERE invoice_id = ${ids.invoiceId}`).toHaveLength(0);

        // Stripe gives up on the pending update: the old plan stays, the proration invoice must not stay collectible.
        const expired = { ...subscriptionEvent({ ...ids, status: 'active', created: realNow - 10 }), type: 'customer.subscription.pending_update_expired' };
        await customer.signal(stripeEventSignal, expired);
        await eventually(async () => fake.invoiceCalls.some((c) => c.method === 'voidInvoice'), 20_000, 'the proration invoice to be voided');
        expect(fake.invoiceCalls.filter((c) => c.method === 'voidInvoice')).toEqual([
          { method: 'voidInvoice', invoiceId: ids.invoiceId, params: {}, idempotencyKey: `void:${ids.invoiceId}` },
        ]);
        expect((await notices(ids.invoiceId)).filter((n) => n.kind === 'upgrade_declined')).toHaveLength(1);
      } finally {
        await stopCustomer(customer);
        await worker.stop();
      }
    });

    it('a trial that ended without a card and paused resumes once the customer adds one, charged to that card', async () => {
      const ids = dunningIds();
      const fake = createFakeStripe({ ...ids, pay: scripted(['succeed']) });
      fake.subscription.status = 'paused';
      const worker = await startWorker({ fake });
      const realNow = Math.floor(Date.now() / 1000);
      const base = subscriptionEvent({ ...ids, status: 'active', created: realNow - 60 });
      const paused: BillingEvent = {
        ...base,
        type: 'customer.subscription.paused',
        data: { ...(base.data as Extract<BillingEvent['data'], { kind: 'subscription' }>), status: 'paused', trialEnd: realNow - 60, trialMissingPaymentMethod: 'pause' },
      };
      const customer = await startCustomer(worker.taskQueue, ids.customerId, paused);
      const access = async () => (await db.sql<{ access_state: string }[]>`SELECT access_state FROM customers WHERE id = ${ids.customerId}`)[0]?.access_state;
      try {
        await eventually(async () => (await access()) === 'restricted', 20_000, 'the paused trial to restrict access');
        expect(fake.subscriptionCalls.filter((c) => c.method === 'resume')).toEqual([]);

        // The customer adds a card through the portal: Stripe sends setup_intent.succeeded, then customer.updated.
        const pm = `pm_${ids.customerId}`;
        await customer.signal(stripeEventSignal, {
          eventId: `evt_seti_${ids.customerId}`, type: 'setup_intent.succeeded', created: realNow - 30, customerId: ids.customerId, objectId: `seti_${ids.customerId}`, livemode: false,
          data: { kind: 'setup_intent', setupIntentId: `seti_${ids.customerId}`, status: 'succeeded', paymentMethodId: pm },
        });
        await customer.signal(stripeEventSignal, {
          eventId: `evt_cus_${ids.customerId}`, type: 'customer.updated', created: realNow - 29, customerId: ids.customerId, objectId: ids.customerId, livemode: false,
          data: { kind: 'customer', email: 'trial@example.test', name: null, defaultPaymentMethodId: pm, deleted: false, defaultPaymentMethodChanged: true },
        });
        await eventually(async () => (await customer.query(stateQuery)).queued === 0 && fake.subscriptionCalls.some((c) => c.method === 'resume'), 20_000, 'the subscription to be resumed');
        // Each resume effect reads the subscription first: two reads, two effects run.
        await eventually(async () => fake.subscriptionCalls.filter((c) => c.method === 'retrieve').length >= 2, 20_000, 'both card events to be applied');

        // Once: the second event finds it resumed. The card became the subscription's default first.
        expect(fake.subscriptionCalls.filter((c) => c.method === 'resume')).toEqual([
          { method: 'resume', params: {}, idempotencyKey: `resume-paused:${ids.subscriptionId}:${pm}` },
        ]);
        expect(fake.subscriptionCalls.filter((c) => c.method === 'update')).toEqual([
          { method: 'update', params: { default_payment_method: pm }, idempotencyKey: `resume-paused:${ids.subscriptionId}:${pm}:default-payment-method` },
        ]);
      } finally {
        await stopCustomer(customer);
        await worker.stop();
      }
    });
  });
});

describe('notice ledger', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('records a notice at most once per dedup key, even when recorded twice at the same time', async () => {
    const { sendDunningNotice } = createNotifyActivities({ sql: db.sql, config: testConfig() });
    const ids = dunningIds();
    const input = {
      customerId: ids.customerId,
      invoiceId: ids.invoiceId,
      kind: 'update_payment_method' as const,
      attempt: 0,
      atMs: Date.now(),
      policy: DEFAULT_DUNNING_POLICY,
      payload: { maxAttempts: 4, declineCode: 'expired_card', nextAttemptAt: null, hostedInvoiceUrl: null },
    };
    const activity = new MockActivityEnvironment();
    const send = (): Promise<SendNoticeResult> => activity.run(sendDunningNotice, input) as Promise<SendNoticeResult>;
    const results = await Promise.all([send(), send()]);
    expect(results.map((r) => r.status).sort()).toEqual(['duplicate', 'queued']);
    expect(await send()).toMatchObject({ status: 'duplicate', previous: 'queued' });
    const rows = await db.sql`SELECT status, dedup_key, due_at FROM notifications WHERE invoice_id = ${ids.invoiceId}`;
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status: 'queued', dedup_key: `invoice:${ids.invoiceId}:update_payment_method:0` });
    expect(rows[0]!.due_at).not.toBeNull();
  });
});

describe('dunningStats', () => {
  it('computes started, recovered, exhausted, recovery rate, recovered-by-attempt and by decline code', async () => {
    const db = await createTestDatabase();
    try {
      await db.sql`INSERT INTO customers (id) VALUES ('cus_stats')`;
      const cycles: [string, string, string | null][] = [
        ['in_a', 'recovered', 'insufficient_funds'],
        ['in_b', 'recovered', 'insufficient_funds'],
        ['in_c', 'exhausted', 'do_not_honor'],
        ['in_d', 'recovered', 'stolen_card'],
        ['in_e', 'retrying', null],
        ['in_f', 'canceled', 'weird_new_code'],
      ];
      for (const [invoiceId, state, code] of cycles) {
        await db.sql`
          INSERT INTO dunning_cycles (invoice_id, customer_id, workflow_id, state, max_attempts, first_decline_code, ended_at)
          VALUES (${invoiceId}, 'cus_stats', ${`dunning:${invoiceId}`}, ${state}, 4, ${code}, ${state === 'retrying' ? null : new Date()})`;
      }
      const attempt = (invoiceId: string, n: number, outcome: string) => db.sql`
        INSERT INTO dunning_attempts (invoice_id, attempt, trigger, outcome, idempotency_key)
        VALUES (${invoiceId}, ${n}, 'schedule', ${outcome}, ${`dunning:${invoiceId}:${n}`})`;
      await attempt('in_a', 1, 'succeeded');
      await attempt('in_b', 1, 'failed');
      await attempt('in_b', 2, 'succeeded');
      // in_d was paid by the customer without a successful retry of ours.

      const stats = await dunningStats(db.sql);
      expect(stats).toMatchObject({ started: 6, open: 1, recovered: 3, exhausted: 1, canceled: 1, recoveryRate: 0.75 });
      expect(stats.recoveredByAttempt).toEqual({ '1': 1, '2': 1, none: 1 });
      expect(stats.byDeclineCode).toEqual({
        insufficient_funds: { started: 2, recovered: 2, exhausted: 0 },
        do_not_honor: { started: 1, recovered: 0, exhausted: 1 },
        stolen_card: { started: 1, recovered: 1, exhausted: 0 },
        unknown: { started: 1, recovered: 0, exhausted: 0 },
        other: { started: 1, recovered: 0, exhausted: 0 },
      });
    } finally {
      await db.drop();
    }
  });
});
