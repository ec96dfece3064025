/**
 * Records real histories of the customer workflow into test/fixtures/histories/ for the replay test.
 * Run after a deliberate, patched() change has landed: `npx tsx scripts/record-histories.ts`. It writes
 * the current generation (${GEN}-*: effects as data, the dunning cycle reporting to its customer workflow and reading declines from Stripe,
 * update writes in the main loop); older generations stay as recorded.
 * It starts its own PostgreSQL and Temporal dev server, runs scripted scenarios with the real
 * database activities (Stripe faked at the boundary) and saves each history as JSON.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Runtime, Worker, DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import { createActivities } from '../activities';
import type { BillingEvent } from '../domain/billing-event';
import { normalizeStripeEvent } from '../domain/events';
import { customerWorkflowId } from '../domain/ids';
import { cancelPendingPlanChangeUpdate, changePlanUpdate, changeQuantityUpdate, stateQuery, stripeEventSignal, reconcileSignal } from '../workflows/contracts';
import { loadCurrentSubscription } from '../lib/subscriptions';
import { subscriptionVersion } from '../domain/plan-change';
import { loadConfig } from '../lib/config';
import { createSql } from '../lib/db';
import { migrate } from '../lib/migrate';
import { createStripe } from '../lib/stripe';
import { uniqueFixture } from '../support/fixtures';
import { freePort, startMailpit, startPostgres, startStripeMock, startTemporal, tempDir, ROOT } from '../support/services';
import { createServer } from 'node:http';
import { createLogger } from '../lib/logger';
import { createOutboxRelay } from '../worker/outbox-relay';

const OUT = path.join(ROOT, 'test', 'fixtures', 'histories');
/** The generation this run records; older generations stay as recorded. */
const GEN = 'v7';
/**
 * `--new-only`: record only the scenarios this generation adds (7 and 8); the scenarios of earlier
 * generations (1-6) replay the same code paths as their v6 recordings.
 */
const NEW_ONLY = process.argv.includes('--new-only');

async function main(): Promise<void> {
  const dir = tempDir('record-histories');
  const [pgPort, tPort, smPort] = [await freePort(), await freePort(), await freePort()];
  const pg = await startPostgres({ dataDir: path.join(dir, 'pg'), port: pgPort, fast: true, logDir: dir });
  const temporal = await startTemporal({ port: tPort, logDir: dir });
  const stripeMock = await startStripeMock({ port: smPort, logDir: dir });
  const mailpit = await startMailpit({ smtpPort: await freePort(), httpPort: await freePort(), logDir: dir });
  const appHook = await startFlakyApp();
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const sql = createSql(pg.url, { max: 5 });
  try {
    await migrate(sql);
    const config = loadConfig({
      DATABASE_URL: pg.url,
      STRIPE_SECRET_KEY: 'sk_test_123',
      STRIPE_WEBHOOK_SECRET: 'whsec_record',
      STRIPE_API_BASE: stripeMock.baseUrl,
      TEMPORAL_ADDRESS: temporal.address,
      TEMPORAL_TASK_QUEUE: 'record-histories',
      DUNNING_RETRY_DAYS: '0.00001,0.00002',
      SMTP_URL: `smtp://127.0.0.1:${mailpit.smtpPort}`,
      NOTIFY_FROM: 'Billing <billing@example.test>',
      NOTIFY_QUIET_HOURS: 'off',
      APP_WEBHOOK_URL: appHook.url,
      APP_WEBHOOK_SECRET: 'record-histories-app-secret',
    });
    const stripe = createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: config.STRIPE_API_BASE, maxNetworkRetries: 0 });
    const connection = await Connection.connect({ address: temporal.address });
    const client = new Client({ connection });
    const activities = createActivities({ sql, stripe, config, temporalClient: client });
    const bundle = await bundleWorkflowCode({ workflowsPath: path.join(ROOT, 'workflows', 'index.ts') });
    const nativeConnection = await NativeConnection.connect({ address: temporal.address });
    const worker = await Worker.create({
      connection: nativeConnection,
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      workflowBundle: bundle,
      activities,
    });
    mkdirSync(OUT, { recursive: true });
    /** The customer workflow of customerId, started (or signalled) with its first event. */
    const startCustomer = (customerId: string, first: BillingEvent, opts: { continueAsNewAfter?: number } = {}) =>
      client.workflow.signalWithStart('customerWorkflow', {
        workflowId: customerWorkflowId(customerId),
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [{ customerId, ...opts }],
        signal: stripeEventSignal,
        signalArgs: [first],
      });
    const relay = createOutboxRelay({ sql, client, taskQueue: config.TEMPORAL_TASK_QUEUE, logger: createLogger({ level: 'silent' }), pollMs: 100, notices: true, appWebhooks: true });
    relay.start();

    await worker.runUntil(async () => {
      if (!NEW_ONLY) await earlierScenarios();
      // Scenario 7 (v7): seats. A decrease at the period end (a schedule), withdrawn, then an increase
      // (stripe-mock's subscription always carries a pending_update: the increase reads as pending).
      await sql`
        INSERT INTO plans (id, stripe_price_id, name, amount, currency, interval, rank) VALUES
          ('pro-monthly', 'price_ProMonthly', 'Pro', 2900, 'usd', 'month', 20)
        ON CONFLICT (id) DO NOTHING`;
      const s7 = uniqueFixture('customer.created', { token: 'RecSeats' });
      const subEnvelope = uniqueFixture('customer.subscription.created', { token: s7.token }).envelope;
      (subEnvelope.data.object as { items: { data: { quantity: number }[] } }).items.data[0]!.quantity = 5;
      const env7 = [uniqueFixture('customer.created', { token: s7.token }).envelope, subEnvelope].map(normalized);
      const h7 = await startCustomer(s7.customerId, env7[0]!);
      await h7.signal(stripeEventSignal, env7[1]!);
      await waitFor(async () => (await h7.query(stateQuery)).applied >= 2);
      await h7.executeUpdate(changeQuantityUpdate, { args: [{ quantity: 2, requestId: 'record-seats-down', decreaseAt: 'period_end' }] });
      await h7.executeUpdate(cancelPendingPlanChangeUpdate, { args: [{ requestId: 'record-seats-withdraw' }] });
      const local7 = await loadCurrentSubscription(sql, s7.customerId);
      if (!local7) throw new Error('scenario 7: no local subscription');
      await h7.executeUpdate(changeQuantityUpdate, {
        args: [{ quantity: 6, requestId: 'record-seats-up', prorationDate: Math.floor(Date.now() / 1000), subscriptionVersion: subscriptionVersion(local7) }],
      });
      await save(client, h7.workflowId, h7.signaledRunId, `${GEN}-customer-seats`);
      await client.workflow.getHandle(h7.workflowId).terminate('recorded');

      // Scenario 8 (v7): a trial that ended without a card is paused, then the customer sets a default
      // card: the resume_subscription effect runs (stripe-mock's subscription is not paused: a no-op).
      const s8 = uniqueFixture('customer.created', { token: 'RecTrial' });
      const env8 = ['customer.created', 'customer.subscription.paused', 'customer.updated'].map((t) => normalized(uniqueFixture(t, { token: s8.token }).envelope));
      const h8 = await startCustomer(s8.customerId, env8[0]!);
      for (const e of env8.slice(1)) await h8.signal(stripeEventSignal, e);
      await waitFor(async () => (await h8.query(stateQuery)).lastEventId === env8[2]!.eventId);
      await waitFor(async () => {
        const history = await client.workflow.getHandle(h8.workflowId).fetchHistory();
        return (history.events ?? []).some((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'resumePausedSubscription');
      });
      await new Promise((r) => setTimeout(r, 2000)); // the activity completes and the workflow task after it
      await save(client, h8.workflowId, h8.signaledRunId, `${GEN}-customer-trial-resumed`);
      await client.workflow.getHandle(h8.workflowId).terminate('recorded');
    });

    /** The scenarios recorded since v1 (as of v6). */
    async function earlierScenarios(): Promise<void> {
      // Scenario 1: a subscription lifecycle with a duplicate, a stale event and a continue-as-new.
      const { customerId, token } = uniqueFixture('customer.created', { token: 'RecLifecycle' });
      const envs = ['customer.created', 'customer.subscription.created', 'customer.subscription.updated', 'invoice.paid', 'customer.updated']
        .map((t) => uniqueFixture(t, { token }).envelope);
      const events = envs.map((e) => {
        const n = normalizeStripeEvent(e);
        if (n.outcome !== 'handled') throw new Error(`fixture ${e.type} did not normalize`);
        return n.event;
      });
      const handle = await startCustomer(customerId, events[0]!, { continueAsNewAfter: 4 });
      for (const e of events.slice(1)) await handle.signal(stripeEventSignal, e);
      await handle.signal(stripeEventSignal, events[1]!); // duplicate
      await waitFor(async () => (await client.workflow.getHandle(handle.workflowId).query(stateQuery)).applied >= 5);
      const sub = events.find((e) => e.data.kind === 'subscription')!;
      if (sub.data.kind !== 'subscription') throw new Error('unreachable');
      await client.workflow.getHandle(handle.workflowId).signal(reconcileSignal, {
        runId: 'record-run',
        subscriptionId: sub.data.subscriptionId,
        subscription: {
          subscriptionId: sub.data.subscriptionId,
          customerId,
          status: 'active',
          priceId: sub.data.priceId,
          currentPeriodStart: sub.data.currentPeriodStart,
          currentPeriodEnd: sub.data.currentPeriodEnd,
          cancelAtPeriodEnd: false,
          canceledAt: null,
          trialEnd: null,
          fetchedAt: 1_780_000_000,
        },
      });
      await waitFor(async () => (await client.workflow.getHandle(handle.workflowId).query(stateQuery)).applied >= 6);
      await save(client, handle.workflowId, handle.signaledRunId, `${GEN}-customer-lifecycle-run1`);
      const latest = await client.workflow.getHandle(handle.workflowId).describe();
      await save(client, handle.workflowId, latest.runId, `${GEN}-customer-lifecycle-run2`);
      await client.workflow.getHandle(handle.workflowId).terminate('recorded');

      // Scenario 2 (current code): plan catalog loaded, a downgrade Update, a payment failure that
      // starts a dunning child, and the invoice paid that ends it.
      await sql`
        INSERT INTO plans (id, stripe_price_id, name, amount, currency, interval, rank) VALUES
          ('pro-monthly', 'price_ProMonthly', 'Pro', 2900, 'usd', 'month', 20),
          ('basic-monthly', 'price_BasicMonthly', 'Basic', 900, 'usd', 'month', 10)
        ON CONFLICT (id) DO NOTHING`;
      const s2 = uniqueFixture('customer.created', { token: 'RecDunning' });
      const env2 = ['customer.created', 'customer.subscription.created']
        .map((t) => uniqueFixture(t, { token: s2.token }).envelope)
        .map((e) => {
          const n = normalizeStripeEvent(e);
          if (n.outcome !== 'handled') throw new Error(`fixture ${e.type} did not normalize`);
          return n.event;
        });
      const h2 = await startCustomer(s2.customerId, env2[0]!);
      await h2.signal(stripeEventSignal, env2[1]!);
      await waitFor(async () => (await h2.query(stateQuery)).applied >= 2);
      await h2.executeUpdate(changePlanUpdate, { args: [{ planId: 'basic-monthly', requestId: 'record-downgrade-1' }] });
      const failed = uniqueFixture('invoice.payment_failed', { token: s2.token }).envelope;
      const paid = uniqueFixture('invoice.paid', { token: s2.token }).envelope;
      for (const e of [failed, paid]) {
        const n = normalizeStripeEvent(e);
        if (n.outcome !== 'handled') throw new Error(`fixture ${e.type} did not normalize`);
        await h2.signal(stripeEventSignal, n.event);
        await waitFor(async () => (await h2.query(stateQuery)).lastEventId === e.id);
      }
      await new Promise((r) => setTimeout(r, 3000));
      await save(client, h2.workflowId, h2.signaledRunId, `${GEN}-customer-plan-change-dunning`);
      const failedInvoice = failed.data.object.id as string;
      await save(client, `dunning:${failedInvoice}`, (await client.workflow.getHandle(`dunning:${failedInvoice}`).describe()).runId, `${GEN}-dunning-ended-by-payment`);

      // Scenario 3: a failure whose cycle retries on its (seconds-long) schedule and recovers; the cycle
      // reports each step to the customer workflow, which records it.
      const s3 = uniqueFixture('customer.created', { token: 'RecRetry' });
      const env3 = ['customer.subscription.created', 'invoice.payment_failed']
        .map((t) => uniqueFixture(t, { token: s3.token }).envelope)
        .map((e) => {
          const n = normalizeStripeEvent(e);
          if (n.outcome !== 'handled') throw new Error(`fixture ${e.type} did not normalize`);
          return n.event;
        });
      const h3 = await startCustomer(s3.customerId, env3[0]!);
      await h3.signal(stripeEventSignal, env3[1]!);
      const retryInvoice = env3[1]!.data.kind === 'invoice' ? env3[1]!.data.invoiceId : '';
      const child = client.workflow.getHandle(`dunning:${retryInvoice}`);
      await waitFor(async () => (await child.describe()).status.name === 'COMPLETED');
      await new Promise((r) => setTimeout(r, 2000));
      await save(client, child.workflowId, (await child.describe()).runId, `${GEN}-dunning-retry-recovered`);
      await save(client, h3.workflowId, h3.signaledRunId, `${GEN}-customer-dunning-reports`);
      await client.workflow.getHandle(h3.workflowId).terminate('recorded');

      // Scenario 4: a reconciliation run (patched reconciliation-invoices) against stripe-mock's canned
      // objects, one page per run so it continues as new; the first and the last run are saved.
      const recon = await client.workflow.start('reconciliationWorkflow', {
        workflowId: 'reconciliation:record-histories',
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [{ repairWaitSeconds: 5, pagesPerRun: 1, pageSize: 1 }],
      });
      await recon.result();
      await save(client, recon.workflowId, recon.firstExecutionRunId, `${GEN}-reconciliation-run1`);
      const lastRun = await client.workflow.getHandle(recon.workflowId).describe();
      if (lastRun.runId !== recon.firstExecutionRunId) await save(client, recon.workflowId, lastRun.runId, `${GEN}-reconciliation-last-run`);
      await client.workflow.getHandle(h2.workflowId).terminate('recorded');

      // Scenario 5 (v6): a cycle with one retry: its first notice says the last attempt is ahead
      // (patched dunning-final-attempt-notice) and is emailed by its notice workflow through Mailpit;
      // the app events of the customer go out through app-webhook workflows, the first answered 500.
      const s5 = uniqueFixture('customer.created', { token: 'RecNotice' });
      const env5 = ['customer.created', 'customer.subscription.created', 'invoice.payment_failed']
        .map((t) => uniqueFixture(t, { token: s5.token }).envelope)
        .map((e) => {
          const n = normalizeStripeEvent(e);
          if (n.outcome !== 'handled') throw new Error(`fixture ${e.type} did not normalize`);
          return n.event;
        });
      const h5 = await startCustomer(s5.customerId, env5[0]!);
      await h5.signal(stripeEventSignal, env5[1]!);
      await waitFor(async () => (await h5.query(stateQuery)).applied >= 2);
      const invoice5 = env5[2]!.data.kind === 'invoice' ? env5[2]!.data.invoiceId : '';
      const cycle5 = await client.workflow.start('dunningWorkflow', {
        workflowId: `dunning:${invoice5}`,
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [{
          invoiceId: invoice5,
          customerId: s5.customerId,
          subscriptionId: env5[1]!.data.kind === 'subscription' ? env5[1]!.data.subscriptionId : null,
          firstFailure: { eventId: env5[2]!.eventId, declineCode: 'insufficient_funds', at: env5[2]!.created },
          policyOverride: { retryDaysAfterFailure: [0.00002], noticeMinIntervalMs: 0 },
        }],
      });
      await cycle5.result();
      const [notice] = await sql<{ dedup_key: string }[]>`SELECT dedup_key FROM notifications WHERE invoice_id = ${invoice5} AND kind = 'final_attempt_ahead'`;
      if (!notice) throw new Error('no final_attempt_ahead notice recorded');
      const noticeHandle = client.workflow.getHandle(`notice:${notice.dedup_key}`);
      await waitFor(async () => (await noticeHandle.describe()).status.name === 'COMPLETED');
      await save(client, cycle5.workflowId, cycle5.firstExecutionRunId, `${GEN}-dunning-final-attempt-notice`);
      await save(client, noticeHandle.workflowId, (await noticeHandle.describe()).runId, `${GEN}-notice-sent`);
      await waitFor(async () => appHook.delivered > 0);
      const [hook] = await sql<{ id: string }[]>`SELECT id FROM app_webhooks WHERE attempts >= 2 AND status = 'delivered' LIMIT 1`;
      if (!hook) throw new Error('no app webhook delivered after a retry');
      const hookHandle = client.workflow.getHandle(`app-webhook:${hook.id}`);
      await save(client, hookHandle.workflowId, (await hookHandle.describe()).runId, `${GEN}-app-webhook-retried`);
      await client.workflow.getHandle(h5.workflowId).terminate('recorded');

      // Scenario 6 (v6): a retention pass over rows made to look 100 days old, in batches of 2 and
      // 3 batches per run, so it continues as new; the first and the last run are saved.
      await sql`
        UPDATE webhook_events SET received_at = now() - interval '100 days', last_received_at = now() - interval '100 days',
               applied_at = now() - interval '100 days'
        WHERE status IN ('applied', 'ignored')`;
      await sql`UPDATE applied_events SET applied_at = now() - interval '100 days'`;
      const retention = await client.workflow.start('retentionWorkflow', {
        workflowId: 'retention:record-histories',
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [{ batchSize: 2, batchesPerRun: 3 }],
      });
      await retention.result();
      await save(client, retention.workflowId, retention.firstExecutionRunId, `${GEN}-retention-run1`);
      const lastRetention = await client.workflow.getHandle(retention.workflowId).describe();
      if (lastRetention.runId !== retention.firstExecutionRunId) await save(client, retention.workflowId, lastRetention.runId, `${GEN}-retention-last-run`);
    }
    await relay.stop();
    await nativeConnection.close();
    await connection.close();
  } finally {
    await sql.end();
    appHook.close();
    await Promise.allSettled([temporal.stop(), stripeMock.stop(), pg.stop(), mailpit.stop()]);
  }
}

/** A stand-in app for outgoing webhooks: the first request answers 500, the rest 200. */
async function startFlakyApp(): Promise<{ url: string; delivered: number; close(): void }> {
  let requests = 0;
  const state = { url: '', delivered: 0, close: () => server.close() };
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      requests += 1;
      if (requests === 1) return res.writeHead(500).end('try again');
      state.delivered += 1;
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  state.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/billing-events`;
  return state;
}

/** A fixture envelope as the webhook normalizer hands it to the workflow. */
function normalized(e: { type: string }) {
  const n = normalizeStripeEvent(e);
  if (n.outcome !== 'handled') throw new Error(`fixture ${e.type} did not normalize`);
  return n.event;
}

async function waitFor(fn: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn().catch(() => false))) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function save(client: Client, workflowId: string, runId: string, name: string): Promise<void> {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  const file = path.join(OUT, `${name}.json`);
  writeFileSync(file, JSON.stringify({ workflowId, runId, history }, null, 0));
  process.stdout.write(`recorded ${file} (${history.events?.length ?? 0} events)\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
