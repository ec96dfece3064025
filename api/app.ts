/** createApp(deps): composes the route modules; no listening here (tests call app.request). */
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import type Stripe from 'stripe';
import { within } from '../lib/wait-for';
import type { Config } from '../lib/config';
import { assertApiAuthConfigured, publicBaseUrl, webhookSecrets } from '../lib/config';
import type { Sql } from '../lib/db';
import { devCheckoutEnabled, devCheckoutPageUrl } from '../lib/dev-checkout';
import { logContext, type Logger } from '../lib/logger';
import { migrationsCurrent } from '../lib/migrate';
import { docsRoutes } from './docs';
import { bearerAuth } from './auth';
import { ApiError, commonErrors, ErrorBodySchema, renderError } from './errors';
import type { Ingest } from './ingest';
import { createMetricsScrape, type Metrics } from './metrics';
import { adminAppWebhookRoutes } from './routes/admin-app-webhooks';
import { adminReconciliationRoutes } from './routes/admin-reconciliations';
import { adminCheckoutRoutes, checkoutRoutes } from './routes/checkout';
import { adminWebhookRoutes } from './routes/admin-webhooks';
import { billingPortalRoutes } from './routes/billing-portal';
import { customerRoutes } from './routes/customers';
import { devCheckoutRoutes } from './routes/dev-checkout';
import { createEntitlementReader, type EntitlementReader } from './entitlement-reader';
import { adminEntitlementRoutes, entitlementRoutes } from './routes/entitlements';
import { seatRoutes } from './routes/seats';
import { subscriptionRoutes } from './routes/subscription';
import { webhookRoutes } from './routes/webhooks';
import type { Dispatcher } from './dispatcher';
import { jsonResponse } from './validate';

export interface AppDeps {
  config: Pick<
    Config,
    | 'STRIPE_WEBHOOK_SECRET'
    | 'ADMIN_TOKEN'
    | 'API_TOKEN'
    | 'API_AUTH'
    | 'WEBHOOK_MAX_BODY_BYTES'
    | 'TEMPORAL_TASK_QUEUE'
    | 'TEMPORAL_NAMESPACE'
    | 'TEMPORAL_UI_URL'
    | 'CHECKOUT_SUCCESS_WINDOW_HOURS'
    | 'STUCK_DISPATCH_THRESHOLD_MS'
    | 'NODE_ENV'
    | 'STRIPE_API_BASE'
    | 'STRIPE_SECRET_KEY'
    | 'PORT'
    | 'PUBLIC_BASE_URL'
    | 'LINK_SIGNING_SECRET'
    | 'CARD_UPDATE_RETURN_URL'
    | 'SEAT_DECREASE_AT'
  >;
  sql: Sql;
  temporal: Client;
  stripe: Stripe;
  logger: Logger;
  metrics: Metrics;
  ingest: Ingest;
  /** The process's dispatcher, when it runs one (its state shows in /readyz). */
  dispatcher?: Pick<Dispatcher, 'status'>;
  /** The entitlement reader, LISTEN started by the caller (server.ts); default: one that revalidates every hit. */
  entitlements?: EntitlementReader;
}

type Env = { Variables: { requestId: string } };

/** JSON bodies outside the webhook are small; the webhook has its own (larger) cap. */
const JSON_BODY_LIMIT = 64 * 1024;

/** Probe and scrape endpoints: their successful requests are logged at debug only. */
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/** How long readiness waits for one dependency before calling it failing. */
const READY_CHECK_TIMEOUT_MS = 3000;


/** Builds the HTTP application. */
export function createApp(deps: AppDeps): OpenAPIHono<Env> {
  const { logger } = deps;
  const app = new OpenAPIHono<Env>();

  app.use('*', async (c, next) => {
    const given = c.req.header('x-request-id');
    const requestId = given && /^[\w.:-]{1,100}$/.test(given) ? given : randomUUID();
    c.set('requestId', requestId);
    c.header('X-Request-Id', requestId);
    const started = performance.now();
    // Every line logged while handling this request (ingest, errors) carries its requestId, and the
    // handler may add to it (the webhook route adds the event's ids, so its one line says it all).
    const context: Record<string, unknown> = { requestId };
    await logContext.run(context, next);
    const ms = Math.round((performance.now() - started) * 10) / 10;
    // Method, path, status and timing only: never bodies, query strings or headers.
    const line = { ...context, method: c.req.method, path: c.req.path, status: c.res.status, ms };
    if (c.res.status >= 500) logger.error(line, 'request');
    else if (c.res.status >= 400) logger.warn(line, 'request');
    else if (QUIET_PATHS.has(c.req.path)) logger.debug(line, 'request');
    else logger.info(line, 'request');
  });

  const tooLarge = (limit: number) => () => {
    throw new ApiError(413, 'payload_too_large', `body exceeds ${limit} bytes`);
  };
  // A declared length is checked by the route before it reads the body; only a body of unknown length
  // (chunked) is counted as it streams. (Touching c.req.raw makes @hono/node-server build a full web
  // Request with a stream body for every delivery: a third of the ack path's CPU, npm run bench.)
  const webhookStreamLimit = bodyLimit({ maxSize: deps.config.WEBHOOK_MAX_BODY_BYTES, onError: tooLarge(deps.config.WEBHOOK_MAX_BODY_BYTES) });
  app.use('/webhooks/*', (c, next) =>
    c.req.header('content-length') !== undefined && c.req.header('transfer-encoding') === undefined ? next() : webhookStreamLimit(c, next),
  );
  // The same for the JSON routes, and a GET or HEAD without framing headers has no body: the web Request
  // it no longer builds cost every GET 3–15 ms GC pauses at 1,000/s (npm run bench:entitlements).
  const jsonStreamLimit = bodyLimit({ maxSize: JSON_BODY_LIMIT, onError: tooLarge(JSON_BODY_LIMIT) });
  app.use('*', async (c, next) => {
    if (c.req.path.startsWith('/webhooks/')) return next();
    const length = c.req.header('content-length');
    if (c.req.header('transfer-encoding') === undefined) {
      if (length !== undefined) return Number(length) > JSON_BODY_LIMIT ? tooLarge(JSON_BODY_LIMIT)() : next();
      if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    }
    return jsonStreamLimit(c, next);
  });
  // A NUL in a path parameter or query value can match no Postgres text and would fail the query: 400.
  app.use('*', async (c, next) => {
    if (c.req.url.includes('%00')) throw new ApiError(400, 'invalid_request', 'the URL contains a NUL character');
    return next();
  });

  // Plain routes (no input to validate), documented through the registry.
  for (const route of OPERATIONAL_ROUTES) app.openAPIRegistry.registerPath(route);
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const failing: string[] = [];
    const checks = await Promise.allSettled([
      within(READY_CHECK_TIMEOUT_MS, deps.sql`SELECT 1`.then(() => migrationsCurrent(deps.sql))),
      // The deadline also ends the client's retries of an unreachable server.
      within(
        READY_CHECK_TIMEOUT_MS,
        deps.temporal.connection.withDeadline(Date.now() + READY_CHECK_TIMEOUT_MS, () => deps.temporal.connection.workflowService.getSystemInfo({})),
      ),
    ]);
    if (checks[0].status === 'rejected') failing.push('postgres');
    else if (checks[0].value === false) failing.push('migrations');
    const temporalUp = checks[1].status === 'fulfilled';
    const dispatcher = deps.dispatcher?.status();
    if (failing.length > 0) {
      return c.json({ status: 'unavailable', error: 'not_ready', message: `failing: ${failing.join(', ')}`, failing, temporal: temporalUp ? 'up' : 'down' }, 503);
    }
    // Temporal down is not a reason to leave the load balancer: webhooks are still stored and
    // acknowledged, and the dispatcher hands them over when Temporal is back.
    if (!temporalUp) {
      return c.json({
        status: 'degraded',
        temporal: 'down',
        degraded: ['temporal'],
        message: 'temporal unreachable: webhooks are stored and acknowledged, and dispatched when it is back; plan changes and cancellations answer 503',
        ...(dispatcher ? { dispatcher } : {}),
      });
    }
    return c.json({ status: 'ready', temporal: 'up', ...(dispatcher ? { dispatcher } : {}) });
  });
  const scrapeMetrics = createMetricsScrape({ sql: deps.sql, metrics: deps.metrics, ingest: deps.ingest, config: deps.config, logger });
  app.get('/metrics', async (c) => {
    await scrapeMetrics();
    return c.text(await deps.metrics.registry.metrics(), 200, { 'Content-Type': deps.metrics.registry.contentType });
  });

  app.route('/', webhookRoutes({
    ingest: deps.ingest,
    secrets: () => webhookSecrets(deps.config),
    maxBodyBytes: deps.config.WEBHOOK_MAX_BODY_BYTES,
    logger,
    metrics: deps.metrics,
  }));

  assertApiAuthConfigured(deps.config);
  if (deps.config.API_AUTH === 'none') {
    logger.warn('API_AUTH=none: /checkout and /customers/* (cancel included) answer WITHOUT authentication; only safe on a private network behind your own auth');
  }
  const apiAuth = bearerAuth({ token: deps.config.API_AUTH === 'none' ? undefined : deps.config.API_TOKEN, realm: 'api', whenUnset: 'open' });
  app.use('/customers/*', apiAuth);
  app.use('/checkout', apiAuth);
  app.use('/checkout/*', apiAuth);
  app.route('/', customerRoutes({ sql: deps.sql }));
  const entitlements = deps.entitlements ?? createEntitlementReader({ sql: deps.sql });
  app.route('/', entitlementRoutes({ reader: entitlements }));
  app.route('/', billingPortalRoutes({ sql: deps.sql, stripe: deps.stripe, config: deps.config }));
  app.route('/', subscriptionRoutes({ sql: deps.sql, temporal: deps.temporal, stripe: deps.stripe }));
  app.route('/', seatRoutes({ sql: deps.sql, temporal: deps.temporal, stripe: deps.stripe, seatDecreaseAt: deps.config.SEAT_DECREASE_AT }));
  // DEV ONLY (NODE_ENV=development on a Stripe emulator; never in production, see lib/dev-checkout.ts):
  // POST /checkout answers the local checkout page, which pays through the emulator.
  const devCheckout = devCheckoutEnabled(deps.config) && deps.config.STRIPE_API_BASE ? deps.config.STRIPE_API_BASE : null;
  const checkoutPageUrl = devCheckout ? (sessionId: string) => devCheckoutPageUrl(publicBaseUrl(deps.config), sessionId) : undefined;
  app.route('/', checkoutRoutes({ sql: deps.sql, stripe: deps.stripe, ...(checkoutPageUrl ? { checkoutPageUrl } : {}) }));
  if (devCheckout) {
    app.route('/', devCheckoutRoutes({ sql: deps.sql, stripe: deps.stripe, stripeApiBase: devCheckout, stripeSecretKey: deps.config.STRIPE_SECRET_KEY }));
  }

  app.use('/admin/*', bearerAuth({ token: deps.config.ADMIN_TOKEN, realm: 'admin', whenUnset: 'hide' }));
  app.route('/', adminWebhookRoutes({ sql: deps.sql, ingest: deps.ingest, stripe: deps.stripe, stuckThresholdMs: deps.config.STUCK_DISPATCH_THRESHOLD_MS }));
  app.route('/', adminReconciliationRoutes({ sql: deps.sql, temporal: deps.temporal, taskQueue: deps.config.TEMPORAL_TASK_QUEUE }));
  app.route('/', adminCheckoutRoutes({ sql: deps.sql }));
  app.route('/', adminAppWebhookRoutes({ sql: deps.sql }));
  app.route('/', adminEntitlementRoutes({ sql: deps.sql, reader: entitlements }));

  app.openAPIRegistry.registerComponent('securitySchemes', 'adminToken', {
    type: 'http',
    scheme: 'bearer',
    description: 'ADMIN_TOKEN, compared in constant time. Missing → 401, wrong → 403. With no ADMIN_TOKEN configured every /admin route answers 404.',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'apiToken', {
    type: 'http',
    scheme: 'bearer',
    description: 'API_TOKEN for the app-facing routes. Optional: with no API_TOKEN configured these routes are open and are expected to sit behind the app’s own auth.',
  });
  // Generated once, on first request, from the routes' own createRoute definitions.
  let openapi: ReturnType<typeof app.getOpenAPI31Document> | null = null;
  app.get('/openapi.json', (c) => c.json((openapi ??= app.getOpenAPI31Document(DOCUMENT_CONFIG))));
  app.route('/', docsRoutes());

  const allowedMethods = createAllowedMethods(app.routes);
  app.notFound((c) => {
    // A known path with another method: 405 with the methods it does answer.
    const allow = allowedMethods(c.req.path);
    if (allow.length > 0) {
      c.header('Allow', allow.join(', '));
      return c.json({ error: 'method_not_allowed', message: `${c.req.method} is not allowed here; use ${allow.join(', ')}` }, 405);
    }
    return c.json({ error: 'not_found', message: 'no such route' }, 404);
  });
  app.onError((err, c) => renderError(err, c, logger));
  return app;
}

/** The document's header (the paths come from the routes). */
const DOCUMENT_CONFIG = {
  openapi: '3.1.0',
  info: {
    title: 'Billing engine API',
    version: '0.1.0',
    description:
      'Stripe billing orchestrated by Temporal. Every error is `{ error, message, details? }` and every response carries X-Request-Id. JSON bodies are limited to 64 KiB (the webhook to WEBHOOK_MAX_BODY_BYTES). A known path called with another method answers 405 with an Allow header.',
  },
};

/**
 * The methods registered for a path, for 405 answers: computed lazily from the app's routes (after every
 * route is mounted), middleware (method ALL) excluded; GET implies HEAD, which Hono answers from it.
 */
function createAllowedMethods(routes: { method: string; path: string }[]): (path: string) => string[] {
  let table: { pattern: RegExp; method: string }[] | null = null;
  return (path) => {
    table ??= routes
      .filter((r) => r.method !== 'ALL')
      .map((r) => ({
        method: r.method,
        pattern: new RegExp(`^${r.path.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg === '*' ? '.*' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}/?$`),
      }));
    const methods = new Set(table.filter((t) => t.pattern.test(path)).map((t) => t.method));
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods].sort();
  };
}

const DispatcherStatusSchema = z
  .object({ running: z.boolean(), temporalUp: z.boolean(), lastError: z.string().nullable(), window: z.number().int(), inFlight: z.number().int() })
  .describe("This replica's dispatcher: whether it reaches Temporal, its admission window and signals in flight");

/** GET /healthz, GET /readyz and GET /metrics, as the document shows them. */
const OPERATIONAL_ROUTES = [
  createRoute({
    method: 'get',
    path: '/healthz',
    tags: ['operations'],
    summary: 'Liveness: the process is up',
    responses: { 200: jsonResponse(z.object({ status: z.literal('ok') }).openapi('Health'), 'Up'), ...commonErrors },
  }),
  createRoute({
    method: 'get',
    path: '/readyz',
    tags: ['operations'],
    summary: 'Readiness: Postgres reachable and migrations current; Temporal down only degrades',
    responses: {
      200: jsonResponse(
        z
          .object({
            status: z.enum(['ready', 'degraded']).describe('degraded: Temporal is unreachable; webhooks are still stored, acknowledged and dispatched once it is back'),
            temporal: z.enum(['up', 'down']),
            degraded: z.array(z.literal('temporal')).optional(),
            message: z.string().optional(),
            dispatcher: DispatcherStatusSchema.optional(),
          })
          .openapi('Ready'),
        'Ready, or degraded while Temporal is down (the replica keeps taking webhooks)',
      ),
      503: jsonResponse(
        ErrorBodySchema.extend({
          status: z.literal('unavailable'),
          failing: z.array(z.enum(['postgres', 'migrations'])).describe('The failing dependencies'),
          temporal: z.enum(['up', 'down']),
        }).openapi('NotReady'),
        'Postgres or the migrations are failing; `failing` names it',
      ),
      ...commonErrors,
    },
  }),
  createRoute({
    method: 'get',
    path: '/metrics',
    tags: ['operations'],
    summary: 'Prometheus metrics (text exposition format)',
    description:
      'Webhook counters, ack latency, created→applied and received→applied lag histograms, inbox depth and oldest undispatched age, dispatcher and admission-control series, quarantined and stuck delivery gauges, reconciliation, dunning and checkout series. Keep it on the internal network.',
    responses: { 200: { description: 'Metrics', content: { 'text/plain': { schema: z.string() } } }, ...commonErrors },
  }),
];
