/** `npm run worker`: loadConfig → Runtime.install → NativeConnection → setup → Worker.create → run. */
import { NativeConnection, Runtime, Worker, makeTelemetryFilterString } from '@temporalio/worker';
import { createActivities } from '../activities';
import { loadConfigOrExit } from '../lib/config';
import { createSql } from '../lib/db';
import { createLogger } from '../lib/logger';
import { loadPlanConfig, syncPlans } from '../lib/plans';
import { createStripe } from '../lib/stripe';
import { createTemporalClient } from '../lib/temporal';
import { pinoToTemporalLogger } from './logging';
import { ensureSearchAttributes } from './setup';
import { ensureReconciliationSchedule } from './schedules';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger({ level: config.LOG_LEVEL, name: 'worker' });
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
    activities: createActivities({ sql, stripe, config, temporalClient }),
    maxConcurrentWorkflowTaskExecutions: 100,
    maxConcurrentActivityTaskExecutions: 100,
    // No fixed maxCachedWorkflows: a cached customer workflow costs ~1 MB (npm run bench: worker RSS
    // 0.58 → 3.05 GB from 100 to 2,600 cached), so 5,000 meant ~5 GB, past Node's default 4 GB heap and
    // most containers. The SDK sizes the cache from the heap limit instead (~600 per GB of --max-old-space-size).
  });
  logger.info({ taskQueue: config.TEMPORAL_TASK_QUEUE, namespace: config.TEMPORAL_NAMESPACE }, 'worker started');
  // Runtime's default shutdownSignals (SIGINT, SIGTERM) drain the worker gracefully.
  await worker.run();
  await sql.end({ timeout: 5 });
  await temporalClient.connection.close();
  await connection.close();
  logger.info('worker stopped');
}

main().catch((err: unknown) => {
  process.stderr.write(`worker failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
