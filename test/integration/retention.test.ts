import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client, ScheduleHandle } from '@temporalio/client';
import { createRetentionActivities, DEDUP_FLOOR_DAYS } from '../../activities/retention';
import { ConfigError, type Config } from '../../lib/config';
import { RETENTION_SCHEDULE_ID, ensureRetentionSchedule, retentionWorkflowId } from '../../worker/schedules';
import type { RetentionResult, retentionWorkflow } from '../../workflows/retention';
import { buildTestApp, postWebhook, stopTestDispatchers } from '../helpers/app';
import { uniqueFixture } from '../helpers/fixtures';
import {
  createTestDatabase,
  eventually,
  startTestWorker,
  testClient,
  testConfig,
  uniqueId,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';
import { TEST_ADMIN_TOKEN } from '../helpers/services';

/** 14 days: payloads go at 14 days, rows (dedup ids) at the 35-day floor. */
const RETENTION_DAYS = 14;
const YOUNG = 2;
const MID = 20;
const OLD = 40;

describe('the retention workflow on a real Temporal dev server and Postgres', () => {
  let client: Client;
  let db: TestDatabase;
  let worker: RunningWorker;
  let config: Config;

  beforeAll(async () => {
    client = await testClient();
    db = await createTestDatabase();
    config = testConfig({ WEBHOOK_RETENTION_DAYS: String(RETENTION_DAYS) });
    worker = await startTestWorker({ taskQueue: config.TEMPORAL_TASK_QUEUE, activities: createRetentionActivities({ sql: db.sql, config }) });
  });

  afterAll(async () => {
    await stopTestDispatchers();
    await worker?.stop();
    await client?.connection.close();
    await db?.drop();
  });

  const ago = (days: number) => db.sql`now() - ${days} * interval '1 day'`;

  /** A delivery-log row `days` old in `status`; applied rows were applied when received unless `appliedDaysAgo`. */
  async function seedDelivery(eventId: string, status: string, days: number, opts: { appliedDaysAgo?: number } = {}): Promise<void> {
    const applied = status === 'applied' ? ago(opts.appliedDaysAgo ?? days) : db.sql`NULL`;
    await db.sql`
      INSERT INTO webhook_events (event_id, type, stripe_created_at, customer_id, status, payload, payload_bytes, received_at, last_received_at, applied_at, quarantined_at)
      VALUES (${eventId}, 'customer.subscription.updated', ${ago(days)}, 'cus_retention', ${status},
              ${db.sql.json({ id: eventId, object: 'event' })}, 100, ${ago(days)}, ${ago(days)}, ${applied},
              ${status === 'quarantined' ? ago(days) : db.sql`NULL`})`;
  }

  /** A ledger row with `effects` recorded effects. */
  async function seedApplied(eventId: string, days: number, effects: number): Promise<void> {
    await db.sql`INSERT INTO applied_events (event_id, customer_id, type, outcome, applied_at) VALUES (${eventId}, 'cus_retention', 'customer.subscription.updated', 'applied', ${ago(days)})`;
    for (let seq = 0; seq < effects; seq++) {
      await db.sql`
        INSERT INTO applied_effects (event_id, kind, target, seq, customer_id, effect, created_at)
        VALUES (${eventId}, 'notify', ${`t${seq}`}, ${seq}, 'cus_retention', ${db.sql.json({ kind: 'notify' })}, ${ago(days)})`;
    }
  }

  async function seedAppWebhook(id: string, status: string, days: number, lastAttemptDaysAgo = days): Promise<void> {
    await db.sql`
      INSERT INTO app_webhooks (id, source_key, customer_id, type, created_at, data, status, last_attempt_at, delivered_at)
      VALUES (${id}, ${`src:${id}`}, 'cus_retention', 'access.changed', ${ago(days)}, ${db.sql.json({ id })}, ${status},
              ${ago(lastAttemptDaysAgo)}, ${status === 'delivered' ? ago(lastAttemptDaysAgo) : db.sql`NULL`})`;
  }

  async function seedNotification(key: string, status: string, days: number, endedDaysAgo = days): Promise<void> {
    const ended = ['sent', 'canceled', 'suppressed', 'given_up'].includes(status) ? ago(endedDaysAgo) : db.sql`NULL`;
    await db.sql`
      INSERT INTO notifications (dedup_key, customer_id, kind, status, created_at, sent_at, ended_at)
      VALUES (${key}, 'cus_retention', 'payment_failed', ${status}, ${ago(days)}, ${status === 'sent' ? ended : db.sql`NULL`}, ${ended})`;
  }

  async function runPass(u: string): Promise<{ result: RetentionResult; continuedAsNew: boolean }> {
    const handle = await client.workflow.start<typeof retentionWorkflow>('retentionWorkflow', {
      workflowId: retentionWorkflowId(`test-${u}-${uniqueId()}`),
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      // Tiny batches and executions: several batches per step, and continue-as-new on the way.
      args: [{ batchSize: 2, batchesPerRun: 3 }],
    });
    const result = await handle.result();
    const latest = await client.workflow.getHandle(handle.workflowId).describe();
    return { result, continuedAsNew: latest.runId !== handle.firstExecutionRunId };
  }

  it('deletes settled rows past the 35-day floor, drops settled payloads past the retention, and keeps the rest', async () => {
    const u = uniqueId('r');
    const e = (name: string) => `evt_${u}_${name}`;
    for (const status of ['received', 'dispatched', 'failed', 'quarantined', 'applied', 'ignored']) {
      for (const [age, days] of [['young', YOUNG], ['mid', MID], ['old', OLD]] as const) await seedDelivery(e(`${status}_${age}`), status, days);
    }
    // Quarantined 45 days ago, replayed and applied yesterday: their last activity is recent. More of them
    // than a batch, ahead of the deletable rows in index order: batches page past rows they keep.
    for (const n of [1, 2, 3]) await seedDelivery(e(`applied_late${n}`), 'applied', OLD + 5, { appliedDaysAgo: 1 });
    await seedApplied(e('applied_old'), OLD, 2);
    await seedApplied(e('applied_mid'), MID, 1);
    // Applied, but the delivery is still in the log as in flight: its ledger row must stay.
    await seedApplied(e('dispatched_old'), OLD, 1);
    // Ledger rows without a delivery (an event applied from a re-fetch): aged like the others.
    await seedApplied(e('ledger_only_old'), OLD, 1);
    await seedApplied(e('ledger_only_mid'), MID, 1);
    for (const status of ['pending', 'failed', 'delivered', 'given_up']) {
      await seedAppWebhook(`aevt_${u}_${status}_mid`, status, MID);
      await seedAppWebhook(`aevt_${u}_${status}_old`, status, OLD);
    }
    await seedAppWebhook(`aevt_${u}_delivered_replayed`, 'delivered', OLD, 1);
    for (const status of ['queued', 'sending', 'failed', 'sent', 'canceled', 'suppressed', 'given_up']) {
      await seedNotification(`${u}:${status}:mid`, status, MID);
      await seedNotification(`${u}:${status}:old`, status, OLD);
    }
    await seedNotification(`${u}:given_up:late`, 'given_up', OLD, 1);

    const { result, continuedAsNew } = await runPass(u);
    expect(result).toMatchObject({ retentionDays: RETENTION_DAYS, rowRetentionDays: DEDUP_FLOOR_DAYS });
    expect(result.counts).toEqual({
      webhookEventsDeleted: 2,
      payloadsPurged: 2,
      payloadBytesPurged: 200,
      appliedEventsDeleted: 2,
      appliedEffectsDeleted: 3,
      appWebhooksDeleted: 2,
      notificationsDeleted: 4,
    });
    expect(result.batches).toBeGreaterThan(3);
    expect(continuedAsNew).toBe(true);

    const events = await db.sql<{ event_id: string; purged: boolean; purged_at: boolean }[]>`
      SELECT event_id, payload IS NULL AS purged, payload_purged_at IS NOT NULL AS purged_at FROM webhook_events
      WHERE event_id LIKE ${`evt_${u}_%`} ORDER BY event_id`;
    const state = Object.fromEntries(events.map((r) => [r.event_id.slice(`evt_${u}_`.length), r.purged ? 'purged' : 'kept']));
    expect(events.every((r) => r.purged === r.purged_at)).toBe(true);
    expect(state).toEqual({
      applied_late1: 'kept',
      applied_late2: 'kept',
      applied_late3: 'kept',
      applied_mid: 'purged',
      applied_young: 'kept',
      dispatched_mid: 'kept',
      dispatched_old: 'kept',
      dispatched_young: 'kept',
      failed_mid: 'kept',
      failed_old: 'kept',
      failed_young: 'kept',
      ignored_mid: 'purged',
      ignored_young: 'kept',
      quarantined_mid: 'kept',
      quarantined_old: 'kept',
      quarantined_young: 'kept',
      received_mid: 'kept',
      received_old: 'kept',
      received_young: 'kept',
    });

    const ledger = await db.sql<{ event_id: string; effects: number }[]>`
      SELECT a.event_id, (SELECT count(*)::int FROM applied_effects f WHERE f.event_id = a.event_id) AS effects
      FROM applied_events a WHERE a.event_id LIKE ${`evt_${u}_%`} ORDER BY a.event_id`;
    expect(ledger).toEqual([
      { event_id: e('applied_mid'), effects: 1 },
      { event_id: e('dispatched_old'), effects: 1 },
      { event_id: e('ledger_only_mid'), effects: 1 },
    ]);
    expect(await db.sql`SELECT 1 FROM applied_effects WHERE event_id NOT IN (SELECT event_id FROM applied_events)`).toHaveLength(0);

    const hooks = await db.sql<{ id: string }[]>`SELECT id FROM app_webhooks WHERE id LIKE ${`aevt_${u}_%`} ORDER BY id`;
    expect(hooks.map((h) => h.id.slice(`aevt_${u}_`.length))).toEqual([
      'delivered_mid', 'delivered_replayed', 'failed_mid', 'failed_old', 'given_up_mid', 'pending_mid', 'pending_old',
    ]);
    const notices = await db.sql<{ dedup_key: string }[]>`SELECT dedup_key FROM notifications WHERE dedup_key LIKE ${`${u}:%`} ORDER BY dedup_key`;
    expect(notices.map((n) => n.dedup_key.slice(`${u}:`.length))).toEqual([
      'canceled:mid', 'failed:mid', 'failed:old', 'given_up:late', 'given_up:mid', 'queued:mid', 'queued:old',
      'sending:mid', 'sending:old', 'sent:mid', 'suppressed:mid',
    ]);

    // A second pass finds nothing more.
    const again = await runPass(u);
    expect(Object.values(again.result.counts).every((n) => n === 0)).toBe(true);
  });

  it('a redelivery of an event whose payload was purged is still answered as a duplicate', async () => {
    const { app } = buildTestApp({ sql: db.sql, temporal: client, config, dispatch: false });
    const { envelope } = uniqueFixture('customer.subscription.created');
    const first = await postWebhook(app, envelope);
    expect(await first.json()).toMatchObject({ status: 'received', duplicate: false });
    // As if it was applied 20 days ago: past the payload retention, inside the 35-day dedup floor.
    await db.sql`
      UPDATE webhook_events SET status = 'applied', received_at = ${ago(MID)}, last_received_at = ${ago(MID)}, applied_at = ${ago(MID)}
      WHERE event_id = ${envelope.id}`;

    await runPass(uniqueId('d'));
    const [purged] = await db.sql<{ payload: unknown; attempts: number }[]>`SELECT payload, attempts FROM webhook_events WHERE event_id = ${envelope.id}`;
    expect(purged).toEqual({ payload: null, attempts: 1 });

    const again = await postWebhook(app, envelope);
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ eventId: envelope.id, status: 'applied', duplicate: true });
    const [row] = await db.sql<{ status: string; payload: unknown; attempts: number }[]>`
      SELECT status, payload, attempts FROM webhook_events WHERE event_id = ${envelope.id}`;
    expect(row).toEqual({ status: 'applied', payload: null, attempts: 2 });
  });

  it('an admin replay of an ignored delivery whose payload was purged is a no-op that says so, not a failure', async () => {
    const built = buildTestApp({ sql: db.sql, temporal: client, config, dispatch: false });
    const eventId = `evt_${uniqueId('purged')}`;
    await db.sql`
      INSERT INTO webhook_events (event_id, type, stripe_created_at, status, payload, payload_bytes, received_at, payload_purged_at)
      VALUES (${eventId}, 'balance.available', now() - interval '20 days', 'ignored', NULL, 2, now() - interval '20 days', now())`;
    const res = await built.app.request(`/admin/webhook-events/${eventId}/replay`, { method: 'POST', headers: { Authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ eventId, reason: expect.stringMatching(/payload purged by retention/) });
    expect(JSON.stringify(body)).not.toContain('failed');
    const [row] = await db.sql<{ status: string }[]>`SELECT status FROM webhook_events WHERE event_id = ${eventId}`;
    expect(row!.status).toBe('ignored');
  });

  it('plans from WEBHOOK_RETENTION_DAYS (default 90) and refuses less than 7 days', async () => {
    const defaults = testConfig();
    expect(defaults.WEBHOOK_RETENTION_DAYS).toBe(90);
    expect(() => testConfig({ WEBHOOK_RETENTION_DAYS: '3' })).toThrow(ConfigError);
    expect(() => testConfig({ WEBHOOK_RETENTION_DAYS: '3' })).toThrow(/WEBHOOK_RETENTION_DAYS must be at least 7/);
    expect(testConfig({ WEBHOOK_RETENTION_DAYS: '7' }).WEBHOOK_RETENTION_DAYS).toBe(7);

    const plan = await createRetentionActivities({ sql: db.sql, config: defaults }).planRetention();
    expect(plan).toMatchObject({ retentionDays: 90, rowRetentionDays: 90 });
    expect(plan.payloadCutoff).toBe(plan.rowCutoff);
    const days = (Date.now() - Date.parse(plan.rowCutoff)) / 86_400_000;
    expect(days).toBeGreaterThan(89.99);
    expect(days).toBeLessThan(90.01);
  });
});

describe('the retention-daily schedule', () => {
  let client: Client;
  let db: TestDatabase;
  let worker: RunningWorker;
  let config: Config;
  let handle: ScheduleHandle | undefined;

  beforeAll(async () => {
    client = await testClient();
    db = await createTestDatabase();
    config = testConfig();
    worker = await startTestWorker({ taskQueue: config.TEMPORAL_TASK_QUEUE, activities: createRetentionActivities({ sql: db.sql, config }) });
  });

  afterAll(async () => {
    await handle?.delete().catch(() => {});
    await worker?.stop();
    await client?.connection.close();
    await db?.drop();
  });

  it('is created once, updated in place on later starts (keeping an operator pause), and starts a retention pass', async () => {
    // Its own id: the shared dev server may already hold `retention-daily` from a worker another test started.
    const scheduleId = `${RETENTION_SCHEDULE_ID}-${uniqueId()}`;
    const created = await ensureRetentionSchedule(client, config, { scheduleId });
    handle = created.handle;
    expect(created.outcome).toBe('created');
    expect(handle.scheduleId).toBe(scheduleId);
    expect(RETENTION_SCHEDULE_ID).toBe('retention-daily');
    expect((await ensureRetentionSchedule(client, config, { scheduleId })).outcome).toBe('updated');

    const d = await handle.describe();
    expect(d.policies).toMatchObject({ overlap: 'SKIP', catchupWindow: 60 * 60_000 });
    expect(d.spec.timezone).toBe('UTC');
    expect(d.spec.calendars?.[0]).toMatchObject({ hour: [{ start: 4, end: 4, step: 1 }], minute: [{ start: 30, end: 30, step: 1 }] });
    expect(d.action).toMatchObject({
      type: 'startWorkflow',
      workflowType: 'retentionWorkflow',
      workflowId: retentionWorkflowId(scheduleId),
      taskQueue: config.TEMPORAL_TASK_QUEUE,
    });
    const ids: string[] = [];
    for await (const s of client.schedule.list()) ids.push(s.scheduleId);
    expect(ids.filter((id) => id === scheduleId)).toHaveLength(1);

    await handle.trigger();
    const workflowId = await eventually(async () => (await handle!.describe()).info.recentActions[0]?.action.workflow.workflowId, 20_000, 'a scheduled pass');
    expect(workflowId.startsWith(`${retentionWorkflowId(scheduleId)}-`)).toBe(true);
    const result = await client.workflow.getHandle<typeof retentionWorkflow>(workflowId).result();
    expect(result).toMatchObject({ retentionDays: 90, rowRetentionDays: 90 });

    await handle.pause('investigating');
    await ensureRetentionSchedule(client, config, { scheduleId });
    expect((await handle.describe()).state.paused).toBe(true);
  });
});
