/** createApp(deps): composes the route modules; no listening here (tests call app.request). */
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type Stripe from 'stripe';
import type { Config } from '../lib/config';
import { webhookSecrets } from '../lib/config';
import type { Sql } from '../lib/db';
import type { Logger } from '../lib/logger';
import { migrationsCurrent } from '../lib/migrate';
import { bearerAuth } from './auth';
import { ApiError, renderError } from './errors';
import type { Ingest } from './ingest';
import type { Metrics } from './metrics';
import { adminWebhookRoutes } from './routes/admin-webhooks';
import { customerRoutes } from './routes/customers';
import { webhookRoutes } from './routes/webhooks';

export interface AppDeps {
  config: Pick<
    Config,
    'STRIPE_WEBHOOK_SECRET' | 'ADMIN_TOKEN' | 'API_TOKEN' | 'WEBHOOK_MAX_BODY_BYTES' | 'TEMPORAL_TASK_QUEUE' | 'TEMPORAL_NAMESPACE' | 'TEMPORAL_UI_URL'
  >;
  sql: Sql;
  temporal: Client;
  stripe: Stripe;
  logger: Logger;
  metrics: Metrics;
  ingest: Ingest;
}

type Env = { Variables: { requestId: string } };

/** JSON bodies outside the webhook are small; the webhook has its own (larger) cap. */
const JSON_BODY_LIMIT = 64 * 1024;

/** Builds the HTTP application. */
export function createApp(deps: AppDeps): Hono<Env> {
  const { logger } = deps;
  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    const given = c.req.header('x-request-id');
    const requestId = given && /^[\w.:-]{1,100}$/.test(given) ? given : randomUUID();
    c.set('requestId', requestId);
    c.header('X-Request-Id', requestId);
    const started = performance.now();
    await next();
    const ms = Math.round((performance.now() - started) * 10) / 10;
    const line = { requestId, method: c.req.method, path: c.req.path, status: c.res.status, ms };
    if (c.res.status >= 500) logger.error(line, 'request');
    else if (c.req.path !== '/healthz' && c.req.path !== '/metrics') logger.debug(line, 'request');
  });

  const tooLarge = (limit: number) => () => {
    throw new ApiError(413, 'payload_too_large', `body exceeds ${limit} bytes`);
  };
  app.use('/webhooks/*', bodyLimit({ maxSize: deps.config.WEBHOOK_MAX_BODY_BYTES, onError: tooLarge(deps.config.WEBHOOK_MAX_BODY_BYTES) }));
  app.use('*', async (c, next) => {
    if (c.req.path.startsWith('/webhooks/')) return next();
    return bodyLimit({ maxSize: JSON_BODY_LIMIT, onError: tooLarge(JSON_BODY_LIMIT) })(c, next);
  });

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const failing: string[] = [];
    const checks = await Promise.allSettled([
      deps.sql`SELECT 1`.then(() => migrationsCurrent(deps.sql)),
      deps.temporal.connection.workflowService.getSystemInfo({}),
    ]);
    if (checks[0].status === 'rejected') failing.push('postgres');
    else if (checks[0].value === false) failing.push('migrations');
    if (checks[1].status === 'rejected') failing.push('temporal');
    return failing.length === 0
      ? c.json({ status: 'ready' })
      : c.json({ status: 'unavailable', error: 'not_ready', message: `failing: ${failing.join(', ')}`, failing }, 503);
  });
  app.get('/metrics', async (c) => {
    deps.metrics.oldestUndispatchedAge.set(await deps.ingest.oldestUndispatchedAgeSeconds().catch(() => 0));
    return c.text(await deps.metrics.registry.metrics(), 200, { 'Content-Type': deps.metrics.registry.contentType });
  });

  app.route('/', webhookRoutes({
    ingest: deps.ingest,
    secrets: () => webhookSecrets(deps.config),
    maxBodyBytes: deps.config.WEBHOOK_MAX_BODY_BYTES,
    logger,
    metrics: deps.metrics,
  }));

  const apiAuth = bearerAuth({ token: deps.config.API_TOKEN, realm: 'api', whenUnset: 'open' });
  app.use('/customers/*', apiAuth);
  app.use('/checkout', apiAuth);
  app.route('/', customerRoutes({ sql: deps.sql }));

  app.use('/admin/*', bearerAuth({ token: deps.config.ADMIN_TOKEN, realm: 'admin', whenUnset: 'hide' }));
  app.route('/', adminWebhookRoutes({ sql: deps.sql, ingest: deps.ingest, stripe: deps.stripe }));

  app.notFound((c) => c.json({ error: 'not_found', message: 'no such route' }, 404));
  app.onError((err, c) => renderError(err, c, logger));
  return app;
}
