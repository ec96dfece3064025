/** `npm run api`: loadConfig → wait for Postgres and Temporal → deps → serve(createApp(deps)) → graceful shutdown. */
import { serve } from '@hono/node-server';
import { assertApiAuthConfigured, loadConfigOrExit } from '../lib/config';
import { createSql, describeDatabaseUrl, installPostgresCrashGuard } from '../lib/db';
import { createInboxNotifier } from '../lib/inbox';
import { createLogger } from '../lib/logger';
import { createStripe } from '../lib/stripe';
import { createTemporalClient, describeTemporalTarget, temporalTarget } from '../lib/temporal';
import { initTracing } from '../lib/tracing';
import { waitFor } from '../lib/wait-for';
import { createApp } from './app';
import { createDispatcher, dispatcherOptions } from './dispatcher';
import { createEntitlementReader } from './entitlement-reader';
import { createIngest } from './ingest';
import { createMetrics } from './metrics';
import { createSweeper } from './sweeper';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  try {
    // Before waiting for anything: an API that would serve app endpoints open by accident does not start.
    assertApiAuthConfigured(config);
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  const logger = createLogger({ level: config.LOG_LEVEL, name: 'api' });
  installPostgresCrashGuard(logger);
  const sql = createSql(config.DATABASE_URL, { max: config.DATABASE_POOL_MAX, applicationName: 'billing-api' });
  // Started before its dependencies (a host reboot, either restarting): wait for them rather than exit.
  await waitFor(`postgres at ${describeDatabaseUrl(config.DATABASE_URL)}`, async () => sql`SELECT 1`, { logger });
  const target = temporalTarget(config);
  // Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then webhook → dispatch → signal spans, exported over OTLP.
  const tracing = await initTracing(process.env, 'billing-api', { logger });
  const temporal = await waitFor(`temporal at ${describeTemporalTarget(target)}`, () => createTemporalClient(target, tracing.clientInterceptors()), { logger });
  const stripe = createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: config.STRIPE_API_BASE });
  const metrics = createMetrics({ defaultMetrics: true });
  const ingest = createIngest({
    sql,
    temporal,
    tracer: tracing.tracer,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    logger,
    metrics,
    payloadStoreLimitBytes: config.WEBHOOK_PAYLOAD_STORE_LIMIT_BYTES,
    stripe,
    // This replica's dispatcher at once; the other replicas' through LISTEN.
    onStored: () => {
      dispatcher.wake();
      inbox.notify();
    },
  });
  const inbox = createInboxNotifier(sql, logger);
  // Hands stored deliveries to Temporal; the request path only stores them.
  const dispatcher = createDispatcher({ sql, ingest, logger, metrics, options: dispatcherOptions(config), webhookInFlight: () => ingest.load.recentPeak() });
  // Its cache is trusted without a round trip only while its LISTEN is up (api/entitlement-reader.ts).
  const entitlements = createEntitlementReader({ sql, logger });
  entitlements.start();
  const app = createApp({ config, sql, temporal, stripe, logger, metrics, ingest, dispatcher, entitlements });

  const server = serve({ fetch: app.fetch, port: config.PORT, hostname: '0.0.0.0' }, (info) => {
    logger.info({ port: info.port, stripeApiBase: config.STRIPE_API_BASE ?? 'api.stripe.com' }, 'api listening');
  });

  if (config.DISPATCH_ENABLED) await dispatcher.start();
  else logger.warn('DISPATCH_ENABLED=false: this replica only stores webhooks; another replica must dispatch them');
  // The dispatcher's fallback, and the re-send of deliveries stuck in 'dispatched'.
  const stopSweeper = createSweeper({
    ingest,
    metrics,
    logger,
    dispatcher,
    stuckThresholdMs: config.STUCK_DISPATCH_THRESHOLD_MS,
  }).start(config.SWEEPER_INTERVAL_MS);

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'api shutting down');
    stopSweeper();
    const force = setTimeout(() => {
      logger.error('shutdown took longer than 10 s; exiting');
      process.exit(1);
    }, 10_000);
    force.unref();
    // Stops accepting; the callback runs once in-flight requests are answered (idle keep-alive sockets are closed).
    server.close(async () => {
      inbox.stop();
      await dispatcher.stop().catch(() => {});
      await entitlements.stop().catch(() => {});
      await sql.end({ timeout: 5 }).catch(() => {});
      await temporal.connection.close().catch(() => {});
      await tracing.shutdown().catch(() => {});
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`api failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
