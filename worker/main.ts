/**
 * `npm run worker`: loadConfig → Runtime.install → wait for Postgres and Temporal → setup → Worker.create → run,
 * recreated if run() fails (a long Temporal outage), drained on SIGTERM/SIGINT within a bound.
 */
import { createHash } from 'node:crypto';
import { unlinkSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Runtime, Worker, makeTelemetryFilterString } from '@temporalio/worker';
import { z } from 'zod';
import { createActivities } from '../activities';
import type { ApplyFaults } from '../activities/billing-db';
import { appWebhooksEnabled, emailEnabled, loadConfigOrExit, type Config } from '../lib/config';
import { createSql, describeDatabaseUrl, installPostgresCrashGuard } from '../lib/db';
import { createLogger, type Logger } from '../lib/logger';
import { loadPlanConfig, syncPlans } from '../lib/plan-catalog-sync';
import { createStripe } from '../lib/stripe';
import { createTemporalClient, createWorkerConnection, describeTemporalTarget, isTransientTemporalError, temporalTarget } from '../lib/temporal';
import { initTracing } from '../lib/tracing';
import { describeError, isTransientPostgresError, waitFor } from '../lib/wait-for';
import { pinoToTemporalLogger } from './logging';
import { ensureSearchAttributes } from './setup';
import { ensureReconciliationSchedule, ensureRetentionSchedule } from './schedules';
import { createOutboxRelay } from './outbox-relay';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger({ level: config.LOG_LEVEL, name: 'worker' });
  const faults = applyFaultsFromEnv(process.env, config, logger);
  installPostgresCrashGuard(logger);
  Runtime.install({
    logger: pinoToTemporalLogger(logger),
    // Signals are handled below: the Runtime's own handlers would leave a worker waiting for Temporal unstoppable.
    shutdownSignals: [],
    telemetryOptions: {
      logging: { filter: makeTelemetryFilterString({ core: 'WARN' }), forward: {} },
      ...(config.WORKER_METRICS_ADDRESS ? { metrics: { prometheus: { bindAddress: config.WORKER_METRICS_ADDRESS } } } : {}),
    },
  });
  const lifecycle = handleStopSignals(logger);
  // Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then workflow, activity and apply-transaction spans, exported over OTLP.
  const tracing = await initTracing(process.env, 'billing-worker', { logger });
  const target = temporalTarget(config);
  const temporalAt = `temporal at ${describeTemporalTarget(target)}`;
  const sql = createSql(config.DATABASE_URL, { max: config.DATABASE_POOL_MAX, applicationName: 'billing-worker' });
  // Started before its dependencies (a host reboot, either restarting): wait for them rather than exit.
  await waitFor(`postgres at ${describeDatabaseUrl(config.DATABASE_URL)}`, async () => sql`SELECT 1`, { logger });
  const connection = await waitFor(temporalAt, () => createWorkerConnection(target), { logger });
  const added = await ensureSearchAttributes(connection, config.TEMPORAL_NAMESPACE).catch((err: unknown) => {
    // Temporal Cloud does not serve the operator API: the attributes are created with tcld or the Cloud UI.
    if (![7, 16].includes((err as { code?: number }).code ?? -1)) throw err;
    logger.warn({ err: describeError(err) }, 'cannot list or register search attributes here (Temporal Cloud?): create them in the namespace');
    return [];
  });
  if (added.length) logger.info({ added }, 'registered search attributes');

  // The catalog the customer workflows validate plan changes against; idempotent, so every start re-syncs it.
  // A Postgres restart between the wait above and here (the chaos run hit one) is waited out too.
  const plans = loadPlanConfig(config);
  logger.info(await waitFor('postgres (plan catalog sync)', () => syncPlans(sql, plans), { logger, retryIf: isTransientPostgresError }), 'plan catalog synced');
  const stripe = createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: config.STRIPE_API_BASE });
  // A client for activities that signal workflows (reconciliation repairs) and for the schedule.
  const temporalClient = await waitFor(temporalAt, () => createTemporalClient(target, tracing.clientInterceptors()), { logger });
  const schedule = await waitFor(`${temporalAt} (reconciliation schedule)`, () => ensureReconciliationSchedule(temporalClient, config), { logger, retryIf: isTransientTemporalError });
  logger.info({ scheduleId: schedule.handle.scheduleId, outcome: schedule.outcome }, 'reconciliation schedule ensured');
  const retention = await waitFor(`${temporalAt} (retention schedule)`, () => ensureRetentionSchedule(temporalClient, config), { logger, retryIf: isTransientTemporalError });
  logger.info({ scheduleId: retention.handle.scheduleId, outcome: retention.outcome, retentionDays: config.WEBHOOK_RETENTION_DAYS }, 'retention schedule ensured');
  const createWorker = () => Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    workflowsPath: require.resolve('../workflows'),
    activities: createActivities({ sql, stripe, config, temporalClient, faults }),
    maxConcurrentWorkflowTaskExecutions: 100,
    maxConcurrentActivityTaskExecutions: 100,
    // No fixed maxCachedWorkflows: a cached customer workflow costs ~1 MB (npm run bench: worker RSS
    // 0.58 → 3.05 GB from 100 to 2,600 cached), so 5,000 meant ~5 GB, past Node's default 4 GB heap and
    // most containers. The SDK sizes the cache from the heap limit instead (~600 per GB of --max-old-space-size).
    // On SIGTERM: in-flight activities get this long to finish, then are cancelled; the drain is abandoned after the force time.
    shutdownGraceTime: '10 seconds',
    shutdownForceTime: '20 seconds',
    // Tracing on: OTel activity interceptors, the workflow interceptor module (bundled only then) and the span sink.
    ...tracing.workerOptions(),
  });
  const email = emailEnabled(config);
  const appWebhooks = appWebhooksEnabled(config);
  if (email) logger.info({ from: config.NOTIFY_FROM, quietHours: config.NOTIFY_QUIET_HOURS, timezone: config.NOTIFY_TIMEZONE }, 'customer emails are sent over SMTP');
  else logger.warn('SMTP_URL / NOTIFY_FROM unset: customer notices stay queued in the notifications outbox and are not emailed');
  if (appWebhooks) logger.info({ url: redactUrl(config.APP_WEBHOOK_URL!) }, 'app events are delivered as signed webhooks');
  else logger.info('APP_WEBHOOK_URL unset: no app events are recorded or delivered');
  const relay = createOutboxRelay({
    sql,
    client: temporalClient,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    logger,
    pollMs: config.OUTBOX_RELAY_POLL_MS,
    notices: email,
    appWebhooks,
  });
  relay.start();
  // The SDK retries polls through a Temporal outage; if run() still fails, a new worker replaces it (with backoff).
  for (let failures = 0; ; ) {
    const worker = await waitFor(temporalAt, createWorker, { logger });
    if (!lifecycle.attach(worker)) break;
    logger.info({ taskQueue: config.TEMPORAL_TASK_QUEUE, namespace: config.TEMPORAL_NAMESPACE }, 'worker started');
    const startedAt = Date.now();
    try {
      await worker.run();
      break; // shut down by a signal, drained
    } catch (err) {
      if (lifecycle.stopping) {
        logger.error({ err: describeError(err) }, 'worker drain did not finish');
        break;
      }
      if (Date.now() - startedAt > 300_000) failures = 0;
      const delayMs = Math.min(30_000, 1000 * 2 ** failures++);
      logger.error({ err: describeError(err), retryInMs: delayMs }, 'worker failed; recreating it');
      await sleep(delayMs);
    }
  }
  await relay.stop();
  await sql.end({ timeout: 5 });
  await temporalClient.connection.close();
  await connection.close();
  await tracing.shutdown().catch(() => {});
  logger.info('worker stopped');
  process.exit(0);
}

/**
 * SIGTERM/SIGINT: a running worker drains (worker.shutdown(), bounded by its shutdownForceTime); before one
 * runs there is nothing to drain and the process exits. Either way it is gone within 30 s.
 */
function handleStopSignals(logger: Logger) {
  let worker: Worker | undefined;
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'worker shutting down');
    setTimeout(() => {
      logger.error('worker shutdown took longer than 30 s; exiting');
      process.exit(1);
    }, 30_000).unref();
    if (worker?.getState() === 'RUNNING') worker.shutdown();
    else process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return {
    get stopping() {
      return stopping;
    },
    /** Makes `w` the worker a signal drains; false if a stop is already under way. */
    attach(w: Worker): boolean {
      worker = w;
      return !stopping;
    },
  };
}

const FaultEnvSchema = z.object({
  FAULT_AFTER_COMMIT_RATE: z.coerce.number().min(0).max(1).default(0),
  FAULT_SEED: z.coerce.number().int().optional(),
  FAULT_AFTER_COMMIT_FOCUS: z.string().optional(),
  FAULT_KILL_AFTER_COMMIT_FILE: z.string().optional(),
});

/**
 * Test-only apply faults (npm run chaos), from FAULT_* variables; refused when NODE_ENV=production.
 * FAULT_AFTER_COMMIT_RATE (0..1): that share of applies fails once after its commit, as if the worker
 * died before completing the task (chosen by a hash of FAULT_SEED and the event ids, so a seed replays);
 * FAULT_AFTER_COMMIT_FOCUS: comma-separated event-id substrings whose applies always fail once;
 * FAULT_KILL_AFTER_COMMIT_FILE: once that file exists, the next apply deletes it and SIGKILLs this process after its commit.
 */
function applyFaultsFromEnv(env: NodeJS.ProcessEnv, config: Config, logger: Logger): ApplyFaults | undefined {
  const set = Object.keys(FaultEnvSchema.shape).filter((name) => env[name]);
  if (set.length === 0) return undefined;
  const fail = (message: string): never => {
    process.stderr.write(`${message}\n`);
    process.exit(1);
  };
  if (config.NODE_ENV === 'production') fail(`Refusing to start: ${set.join(', ')} injects faults (test only) and is not allowed when NODE_ENV=production`);
  const parsed = FaultEnvSchema.safeParse(Object.fromEntries(set.map((name) => [name, env[name]])));
  if (!parsed.success) return fail(`Invalid fault injection settings: ${parsed.error.issues.map((i) => `${String(i.path[0])}: ${i.message}`).join('; ')}`);
  const { FAULT_AFTER_COMMIT_RATE: rate, FAULT_AFTER_COMMIT_FOCUS, FAULT_KILL_AFTER_COMMIT_FILE: killFile } = parsed.data;
  const seed = parsed.data.FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31);
  const focus = (FAULT_AFTER_COMMIT_FOCUS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  logger.warn({ rate, seed, focus, killFile: killFile ?? null }, 'FAULT INJECTION ENABLED (test only): applies will fail after their commit');
  const unit = (key: string) => createHash('sha256').update(`${seed}:${key}`).digest().readUInt32BE(0) / 2 ** 32;
  const consume = (file: string) => {
    try {
      unlinkSync(file);
      return true;
    } catch {
      return false;
    }
  };
  // Only the first attempt (in this process) fails: the retry must find the events applied and re-run their recorded effects.
  const failedOnce = new Set<string>();
  return {
    afterCommit(eventIds) {
      if (killFile && consume(killFile)) {
        // Written synchronously, in the logger's format: pino's buffered lines die with the process.
        const line = { level: 'warn', time: new Date().toISOString(), service: 'worker', eventIds, msg: 'fault injected: SIGKILL after commit' };
        writeSync(2, `${JSON.stringify(line)}\n`);
        process.kill(process.pid, 'SIGKILL');
      }
      const key = eventIds.join(',');
      const focused = eventIds.some((id) => focus.some((f) => id.includes(f)));
      if (failedOnce.has(key) || (!focused && unit(key) >= rate)) return false;
      failedOnce.add(key);
      logger.warn({ eventIds, focused }, 'fault injected: apply failed after commit');
      return true;
    },
  };
}

/** A URL without its credentials, query and fragment, for logs. */
function redactUrl(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

main().catch((err: unknown) => {
  process.stderr.write(`worker failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
