/**
 * Events for the app come from state transitions, written in the apply transaction (app_webhooks):
 * access.changed, subscription.changed, dunning.started / recovered / exhausted, checkout.completed.
 * Re-applying an applied event adds none; with APP_WEBHOOK_URL unset none are recorded. Real Postgres;
 * the activities are called directly (their Temporal side is covered by the workflow suites).
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerWorkflowId } from '../../domain/ids';
import { verifyAppWebhook } from '../../lib/app-webhook-signature';
import { createLogger } from '../../lib/logger';
import { stripeEventSignal } from '../../workflows/contracts';
import { createOutboxRelay } from '../../worker/outbox-relay';
import { createBillingDbActivities } from '../../activities/billing-db';
import { appEventId } from '../../activities/db/app-events';
import type { BillingEvent } from '../../domain/billing-event';
import type { DunningReport } from '../../domain/messages';
import { dunningIds, invoiceEvent, subscriptionEvent } from '../helpers/dunning';
import { createTestDatabase, eventually, realActivities, startTestWorker, testClient, testConfig, uniqueId, type TestDatabase } from '../helpers/services';

describe('app events from the apply path', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  async function appEvents(customerId: string) {
    return db.sql<{ id: string; type: string; data: Record<string, any>; source_key: string; status: string }[]>`
      SELECT id, type, data, source_key, status FROM app_webhooks WHERE customer_id = ${customerId} ORDER BY created_at, source_key`;
  }

  function checkoutCompleted(ids: { customerId: string; subscriptionId: string }, created: number): BillingEvent {
    return {
      eventId: `evt_co_${ids.customerId}`,
      type: 'checkout.session.completed',
      created,
      customerId: ids.customerId,
      objectId: `cs_${ids.customerId}`,
      livemode: false,
      data: {
        kind: 'checkout_session',
        sessionId: `cs_${ids.customerId}`,
        status: 'complete',
        mode: 'subscription',
        subscriptionId: ids.subscriptionId,
        clientReferenceId: null,
        planId: null,
        paymentStatus: 'paid',
      },
    };
  }

  it('records each transition once: checkout, access and subscription, dunning started and recovered', async () => {
    const ids = dunningIds();
    const t = Math.floor(Date.now() / 1000) - 100;
    const db1 = createBillingDbActivities({ sql: db.sql, appEvents: true });

    const batch1 = [checkoutCompleted(ids, t), subscriptionEvent({ ...ids, status: 'active', created: t + 1 })];
    await db1.applyBillingEvents(batch1);
    let events = await appEvents(ids.customerId);
    expect(events.map((e) => e.type).sort()).toEqual(['access.changed', 'checkout.completed', 'subscription.changed']);
    const access = events.find((e) => e.type === 'access.changed')!;
    expect(access.data).toEqual({ customerId: ids.customerId, accessState: 'active', previousAccessState: 'none' });
    expect(access.id).toBe(appEventId(access.source_key));
    expect(events.find((e) => e.type === 'subscription.changed')!.data).toMatchObject({
      customerId: ids.customerId,
      subscription: { id: ids.subscriptionId, status: 'active' },
      previousAttributes: null,
    });
    expect(events.every((e) => e.status === 'pending')).toBe(true);

    // Re-applying the same events (a re-run after a crash) adds nothing.
    await db1.applyBillingEvents(batch1);
    expect(await appEvents(ids.customerId)).toHaveLength(3);

    const failed = invoiceEvent({ type: 'invoice.payment_failed', ...ids, declineCode: 'insufficient_funds', created: t + 10 });
    await db1.applyBillingEvents([failed]);
    events = await appEvents(ids.customerId);
    expect(events.filter((e) => e.type === 'dunning.started').map((e) => e.data)).toEqual([
      { customerId: ids.customerId, invoiceId: ids.invoiceId, subscriptionId: ids.subscriptionId, declineCode: 'insufficient_funds' },
    ]);
    expect(events.filter((e) => e.type === 'access.changed').map((e) => e.data.accessState)).toEqual(['active', 'grace']);

    const paid = invoiceEvent({ type: 'invoice.paid', ...ids, created: t + 20 });
    await db1.applyBillingEvents([paid]);
    await db1.applyBillingEvents([paid]);
    events = await appEvents(ids.customerId);
    expect(events.filter((e) => e.type === 'dunning.recovered')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'access.changed').map((e) => e.data.accessState)).toEqual(['active', 'grace', 'active']);

    // A stale event (older than the stored subscription) changes nothing and tells the app nothing.
    const before = (await appEvents(ids.customerId)).length;
    await db1.applyBillingEvents([subscriptionEvent({ ...ids, status: 'past_due', created: t })]);
    expect(await appEvents(ids.customerId)).toHaveLength(before);

    // A real change of the subscription names what changed.
    await db1.applyBillingEvents([subscriptionEvent({ ...ids, status: 'past_due', created: t + 30 })]);
    const changed = (await appEvents(ids.customerId)).filter((e) => e.type === 'subscription.changed').at(-1)!;
    expect(changed.data.previousAttributes).toMatchObject({ status: 'active' });
    expect(changed.data.subscription).toMatchObject({ status: 'past_due' });
  });

  it('records dunning.exhausted when a cycle reports its end after the final action', async () => {
    const ids = dunningIds();
    const t = Math.floor(Date.now() / 1000) - 100;
    const acts = createBillingDbActivities({ sql: db.sql, appEvents: true });
    await acts.applyBillingEvents([subscriptionEvent({ ...ids, status: 'active', created: t })]);
    await acts.applyBillingEvents([invoiceEvent({ type: 'invoice.payment_failed', ...ids, declineCode: 'insufficient_funds', created: t + 1 })]);
    const report: DunningReport = {
      invoiceId: ids.invoiceId,
      subscriptionId: ids.subscriptionId,
      state: 'exhausted',
      attemptsMade: 4,
      maxAttempts: 4,
      nextAttemptAtMs: null,
      firstDeclineCode: 'insufficient_funds',
      lastDeclineCode: 'insufficient_funds',
      declineClass: 'soft',
      finalAction: 'cancel',
      startedAtMs: Date.now() - 1000,
      endedAtMs: Date.now(),
      attempt: null,
    };
    await acts.recordDunningReports({ customerId: ids.customerId, reports: [report] });
    await acts.recordDunningReports({ customerId: ids.customerId, reports: [report] });
    const exhausted = (await appEvents(ids.customerId)).filter((e) => e.type === 'dunning.exhausted');
    expect(exhausted.map((e) => e.data)).toEqual([
      { customerId: ids.customerId, invoiceId: ids.invoiceId, subscriptionId: ids.subscriptionId, finalAction: 'cancel', attempts: 4 },
    ]);
  });

  it('records nothing when app webhooks are off', async () => {
    const ids = dunningIds();
    const t = Math.floor(Date.now() / 1000) - 100;
    const acts = createBillingDbActivities({ sql: db.sql });
    await acts.applyBillingEvents([checkoutCompleted(ids, t), subscriptionEvent({ ...ids, status: 'active', created: t + 1 })]);
    expect(await appEvents(ids.customerId)).toEqual([]);
  });
});

describe('app events end to end: apply → app_webhooks → outbox relay → delivery workflow → the app', () => {
  it('tells the app that a new subscription made the customer active, signed, once per event', async () => {
    const db = await createTestDatabase();
    const received: { headers: IncomingHttpHeaders; body: string }[] = [];
    const app = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        received.push({ headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const secret = 'app-secret-0123456789abcdef';
    const taskQueue = uniqueId('app-events-');
    const config = testConfig({ TEMPORAL_TASK_QUEUE: taskQueue, APP_WEBHOOK_URL: `http://127.0.0.1:${(app.address() as AddressInfo).port}/hooks`, APP_WEBHOOK_SECRET: secret });
    const client = await testClient();
    const worker = await startTestWorker({ taskQueue, activities: realActivities(db.sql, config) });
    const relay = createOutboxRelay({ sql: db.sql, client, taskQueue, logger: createLogger({ level: 'silent' }), pollMs: 50, notices: false, appWebhooks: true });
    relay.start();
    try {
      const ids = dunningIds();
      const event = subscriptionEvent({ ...ids, status: 'active', created: Math.floor(Date.now() / 1000) });
      await client.workflow.signalWithStart('customerWorkflow', {
        workflowId: customerWorkflowId(ids.customerId),
        taskQueue,
        args: [{ customerId: ids.customerId }],
        signal: stripeEventSignal,
        signalArgs: [event],
      });
      await eventually(async () => received.length >= 2, 20_000, 'two app events');
      await new Promise((r) => setTimeout(r, 500));
      const bodies = received.map((r) => JSON.parse(r.body) as { id: string; type: string; created: number; data: Record<string, any> });
      expect(bodies.map((b) => b.type).sort()).toEqual(['access.changed', 'subscription.changed']);
      for (const r of received) {
        expect(verifyAppWebhook(r.body, String(r.headers['billing-signature']), secret)).toBe(true);
        expect(Object.keys(JSON.parse(r.body))).toEqual(['id', 'type', 'created', 'data']);
      }
      expect(bodies.find((b) => b.type === 'access.changed')!.data).toEqual({ customerId: ids.customerId, accessState: 'active', previousAccessState: 'none' });
      const rows = await db.sql<{ id: string; status: string; attempts: number }[]>`SELECT id, status, attempts FROM app_webhooks WHERE customer_id = ${ids.customerId}`;
      expect(rows.map((r) => [r.status, r.attempts])).toEqual([['delivered', 1], ['delivered', 1]]);
      expect(new Set(bodies.map((b) => b.id))).toEqual(new Set(rows.map((r) => r.id)));
      await client.workflow.getHandle(customerWorkflowId(ids.customerId)).terminate('test done');
    } finally {
      await relay.stop();
      await worker.stop();
      await client.connection.close();
      app.close();
      await db.drop();
    }
  });
});
