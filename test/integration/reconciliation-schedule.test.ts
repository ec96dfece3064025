import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client, ScheduleHandle } from '@temporalio/client';
import { reconciliationWorkflowId } from '../../domain/ids';
import type { Config } from '../../lib/config';
import { ensureReconciliationSchedule } from '../../worker/schedules';
import { buildTestApp, stopTestDispatchers } from '../helpers/app';
import { createPagingStripe, fakeSubscription, type PagingStripe } from '../helpers/paging-stripe';
import { seedLocalSubscription, seedPlans, startReconciliationWorker } from '../helpers/reconciliation';
import {
  TEST_ADMIN_TOKEN,
  createTestDatabase,
  eventually,
  testClient,
  testConfig,
  uniqueId,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';

describe('the reconciliation schedule and admin API', () => {
  let client: Client;
  let db: TestDatabase;
  let worker: RunningWorker;
  let fake: PagingStripe;
  let config: Config;
  const u = uniqueId();
  const created: ScheduleHandle[] = [];

  beforeAll(async () => {
    client = await testClient();
    db = await createTestDatabase();
    config = testConfig({ RECONCILIATION_CRON: '30 4 * * *', RECONCILIATION_TIMEZONE: 'Europe/Berlin', RECONCILIATION_CATCHUP_WINDOW: '45 minutes' });
    await seedPlans(db.sql);
    // One subscription drifted (canceled in Stripe, active here) so every run has something to repair.
    fake = createPagingStripe([
      fakeSubscription({ id: `sub_a_${u}`, customer: `cus_a_${u}`, status: 'canceled' }),
      fakeSubscription({ id: `sub_b_${u}`, customer: `cus_b_${u}` }),
    ]);
    await seedLocalSubscription(db.sql, { id: `sub_a_${u}`, customer: `cus_a_${u}` });
    await seedLocalSubscription(db.sql, { id: `sub_b_${u}`, customer: `cus_b_${u}` });
    worker = await startReconciliationWorker({ sql: db.sql, config, client, fake });
  });

  afterAll(async () => {
    await stopTestDispatchers();
    for (const handle of created) await handle.delete().catch(() => {});
    await worker?.stop();
    await client?.connection.close();
    await db?.drop();
  });

  async function ensure(scheduleId: string) {
    const out = await ensureReconciliationSchedule(client, config, { scheduleId, workflowInput: { pageSize: 1, repairWaitSeconds: 20 } });
    if (!created.some((h) => h.scheduleId === scheduleId)) created.push(out.handle);
    return out;
  }

  /** Puts sub_a back to 'active' locally: Stripe says canceled, so the next run has one drift to repair. */
  async function driftSubA(): Promise<void> {
    await db.sql`UPDATE subscriptions SET status = 'active', updated_at = now() - interval '1 minute' WHERE id = ${`sub_a_${u}`}`;
  }

  /**
   * Triggers the way a cron firing is handled: no overlap override, so the schedule's own policy decides.
   * (`temporal schedule trigger` sends Skip explicitly; the SDK's handle.trigger() sends AllowAll.)
   */
  async function triggerWithSchedulePolicy(handle: ScheduleHandle): Promise<void> {
    await client.workflowService.patchSchedule({
      namespace: 'default',
      scheduleId: handle.scheduleId,
      patch: { triggerImmediately: {} },
      identity: 'reconciliation-schedule.test',
      requestId: randomUUID(),
    });
  }

  /** Workflow ids of the runs this schedule has started so far. */
  async function startedRuns(handle: ScheduleHandle): Promise<string[]> {
    return (await handle.describe()).info.recentActions.map((a) => a.action.workflow.workflowId);
  }

  it('creates the schedule once and updates it in place on later starts, keeping an operator pause', async () => {
    const scheduleId = `reconciliation-daily-${uniqueId()}`;
    expect((await ensure(scheduleId)).outcome).toBe('created');
    const { handle, outcome } = await ensure(scheduleId);
    expect(outcome).toBe('updated');

    const d = await handle.describe();
    expect(d.policies).toMatchObject({ overlap: 'SKIP', catchupWindow: 45 * 60_000 });
    expect(d.spec.timezone).toBe('Europe/Berlin');
    expect(d.spec.calendars?.[0]).toMatchObject({ hour: [{ start: 4, end: 4, step: 1 }], minute: [{ start: 30, end: 30, step: 1 }] });
    expect(d.action).toMatchObject({
      type: 'startWorkflow',
      workflowType: 'reconciliationWorkflow',
      workflowId: reconciliationWorkflowId(scheduleId),
      taskQueue: config.TEMPORAL_TASK_QUEUE,
    });
    const scheduleIds: string[] = [];
    for await (const s of client.schedule.list()) scheduleIds.push(s.scheduleId);
    expect(scheduleIds.filter((id) => id === scheduleId)).toHaveLength(1);

    await handle.pause('investigating');
    await ensure(scheduleId);
    expect((await handle.describe()).state.paused).toBe(true);
  });

  it('runs a reconciliation when triggered', async () => {
    await driftSubA();
    const { handle } = await ensure(`reconciliation-daily-${uniqueId()}`);
    await handle.trigger();
    const [workflowId] = await eventually(async () => {
      const runs = await startedRuns(handle);
      return runs.length ? runs : null;
    }, 20_000, 'the schedule to start a run');
    const result = await client.workflow.getHandle(workflowId!).result();
    expect(result).toMatchObject({ runId: workflowId, status: 'succeeded', scanned: 2, drifted: 1, repaired: 1 });
    const run = await db.sql`SELECT trigger, status FROM reconciliation_runs WHERE id = ${workflowId!}`;
    expect(run[0]).toMatchObject({ trigger: 'schedule', status: 'succeeded' });
  });

  it('skips a trigger that arrives while a run is still going (the schedule\'s overlap policy)', async () => {
    const { handle } = await ensure(`reconciliation-daily-${uniqueId()}`);
    fake.delayMs = 1500;
    try {
      await triggerWithSchedulePolicy(handle);
      const [first] = await eventually(async () => {
        const runs = await startedRuns(handle);
        return runs.length ? runs : null;
      }, 20_000, 'the first run');
      expect((await client.workflow.getHandle(first!).describe()).status.name).toBe('RUNNING');
      // Run ids carry the action time in seconds: let a second action get an id of its own.
      await new Promise((r) => setTimeout(r, 1100));
      await triggerWithSchedulePolicy(handle);
      // Either the second trigger is skipped or (the failure this guards against) a second run starts.
      const settled = await eventually(async () => {
        const d = await handle.describe();
        return d.info.numActionsSkippedOverlap + d.info.recentActions.length >= 2 ? d : null;
      }, 20_000, 'the second trigger to be handled');
      expect(settled.info.recentActions).toHaveLength(1);
      expect(settled.info.numActionsSkippedOverlap).toBe(1);
      await client.workflow.getHandle(first!).result();
    } finally {
      fake.delayMs = 0;
    }
    expect(await startedRuns(handle)).toHaveLength(1);
  });

  it('POST /admin/reconciliations requires the admin token and returns a run id whose GET shows the results', async () => {
    const { app } = buildTestApp({ sql: db.sql, temporal: client, config });

    expect((await app.request('/admin/reconciliations', { method: 'POST' })).status).toBe(401);
    const wrong = await app.request('/admin/reconciliations', { method: 'POST', headers: { Authorization: 'Bearer not-the-admin-token-xx' } });
    expect(wrong.status).toBe(403);
    expect((await app.request('/admin/reconciliations')).status).toBe(401);

    const auth = { Authorization: `Bearer ${TEST_ADMIN_TOKEN}` };
    await driftSubA();
    const started = await app.request('/admin/reconciliations', {
      method: 'POST',
      headers: { ...auth, 'Content-Type': 'application/json' },
      body: JSON.stringify({ pageSize: 1, repairWaitSeconds: 20 }),
    });
    expect(started.status).toBe(202);
    const { runId } = (await started.json()) as { runId: string };
    expect(runId).toMatch(/^reconciliation:manual-/);

    const done = await eventually(async () => {
      const res = await app.request(`/admin/reconciliations/${encodeURIComponent(runId)}`, { headers: auth });
      const body = (await res.json()) as Record<string, unknown>;
      // The run records 'succeeded' in its last activity and completes just after: wait for both.
      return res.status === 200 && body.status === 'succeeded' && body.workflowStatus === 'COMPLETED' ? body : null;
    }, 30_000, 'the run to finish');
    expect(done).toMatchObject({
      runId,
      trigger: 'manual',
      scanned: 2,
      drifted: 1,
      repaired: 1,
      flagged: 0,
      workflowStatus: 'COMPLETED',
      repairs: { pending: 0, repaired: 1, flagged: 0, failed: 0 },
      drift: [
        { subscriptionId: `sub_a_${u}`, customerId: `cus_a_${u}`, field: 'status', kind: 'canceled_in_stripe', localValue: 'active', stripeValue: 'canceled', repairStatus: 'repaired' },
      ],
      nextCursor: null,
    });

    const list = await app.request('/admin/reconciliations?limit=50', { headers: auth });
    const listed = (await list.json()) as { data: { runId: string }[] };
    expect(listed.data.map((r) => r.runId)).toContain(runId);
    expect((await app.request('/admin/reconciliations/reconciliation:nope', { headers: auth })).status).toBe(404);

    const metrics = await (await app.request('/metrics')).text();
    expect(metrics).toMatch(/^billing_reconciliation_drift_found 1$/m);
    expect(metrics).toMatch(/^billing_reconciliation_drift_repaired 1$/m);
    expect(metrics).not.toMatch(/^billing_reconciliation_last_success_timestamp_seconds 0$/m);
  });
});
