/** `npm run worker`: loadConfig → Runtime.install → NativeConnection → setup → Worker.create → run. */
import { createHash } from 'node:crypto';
import { unlinkSync, writeSync } from 'node:fs';
import { NativeConnection, Runtime, Worker, makeTelemetryFilterString } from '@temporalio/worker';
import { z } from 'zod';
import { createActivities } from '../activities';
import type { ApplyFaults } from '../activities/billing-db';
import { appWebhooksEnabled, emailEnabled, loadConfigOrExit, type Config } from '../lib/config';
import { createSql } from '../lib/db';
import { createLogger, type Logger } from '../lib/logger';
import { loadPlanConfig, syncPlans } from '../lib/plans';
import { createStripe } from '../lib/stripe';
import { createTemporalClient } from '../lib/temporal';
import { pinoToTemporalLogger } from './logging';
import { ensureSearchAttributes } from './setup';
import { ensureReconciliationSchedule } from './schedules';
import { createOutboxRelay } from './outbox-relay';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger({ level: config.LOG_LEVEL, name: 'worker' });
  const faults = applyFaultsFromEnv(process.env, config, logger);
  Runtime.install({
    logger: pinoToTemporalLogger(logger),
    telemetryOptions: {
      logging: { filter: makeTelemetryFilterString({ core: 'WARN' }), forward: {} },
      ...(config.WORKER_METRICS_ADDRESS ? { metrics: { prometheus: { bindAddress: config.WORKER_METRICS_ADDRESS } } } : {}),
    },
  });
  const connection = await NativeConnection.connect({ address: config.TEMPORAL_ADDRESS });
  const added = await ensureSearchAttributes(connection, config.TEMPORAL_NAMESPACE);
  if (added.length) logger.info({ added }, 'registered search attributes');

  const sql = createSql(config.DATABASE_URL, { max: config.DATABASE_POOL_MAX, applicationName: 'billing-worker' });
  // The catalog the customer workflows validate plan changes against; idempotent, so every start re-syncs it.
  logger.info(await syncPlans(sql, loadPlanConfig(config)), 'plan catalog synced');
  const stripe = createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: config.STRIPE_API_BASE });
  // A client for activities that signal workflows (reconciliation repairs) and for the schedule.
  const temporalClient = await createTemporalClient({ address: config.TEMPORAL_ADDRESS, namespace: config.TEMPORAL_NAMESPACE });
  const schedule = await ensureReconciliationSchedule(temporalClient, config);
  logger.info({ scheduleId: schedule.handle.scheduleId, outcome: schedule.outcome }, 'reconciliation schedule ensured');
  const worker = await Worker.create({
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
  });
  logger.info({ taskQueue: config.TEMPORAL_TASK_QUEUE, namespace: config.TEMPORAL_NAMESPACE }, 'worker started');
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
  // Runtime's default shutdownSignals (SIGINT, SIGTERM) drain the worker gracefully.
  await worker.run();
  await relay.stop();
  await sql.end({ timeout: 5 });
  await temporalClient.connection.close();
  await connection.close();
  logger.info('worker stopped');
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
