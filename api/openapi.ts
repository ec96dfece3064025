/**
 * The OpenAPI 3.1 document of the HTTP API, served at GET /openapi.json and rendered at GET /docs.
 *
 * Request schemas are the zod schemas the route modules validate with (imported, never copied), so
 * the document cannot drift from validation. Response schemas are declared here; the operability
 * tests check real responses against them and compare every route on the Hono app with this
 * document. A new route fails that test until it is registered here.
 */
import { OpenAPIRegistry, OpenApiGeneratorV31, extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { APP_WEBHOOK_STATUSES, ListAppWebhooksQuerySchema } from './routes/admin-app-webhooks';
import { ListRunsQuerySchema, RunDriftQuerySchema, StartReconciliationBodySchema } from './routes/admin-reconciliations';
import {
  BulkReplayBodySchema,
  ListStuckWebhookEventsQuerySchema,
  ListWebhookEventsQuerySchema,
  WEBHOOK_EVENT_STATUSES,
} from './routes/admin-webhooks';
import { CheckoutBodySchema, SuccessRateQuerySchema } from './routes/checkout';
import { BillingPortalBodySchema, BillingPortalSessionSchema } from './routes/billing-portal';
import { CustomerIdParamsSchema } from './routes/customers';
import {
  CancelSubscriptionBodySchema,
  ChangePlanBodySchema,
  PreviewPlanChangeBodySchema,
  RequestIdBodySchema,
} from './routes/subscription';

// Adds `.openapi()` to zod schemas (idempotent; @hono/zod-openapi does the same on import).
extendZodWithOpenApi(z);

type Responses = Parameters<OpenAPIRegistry['registerPath']>[0]['responses'];
/** The generated document. */
export type OpenAPIObject = ReturnType<OpenApiGeneratorV31['generateDocument']>;

const isoTime = z.string().describe('ISO 8601 timestamp');

/** The one error shape of every route (api/errors.ts). */
export const ErrorBodySchema = z.object({
  error: z.string().describe('Stable machine-readable code, e.g. validation_error, unauthorized, not_found'),
  message: z.string().describe('Human-readable explanation; never a stack trace or SQL'),
  details: z
    .unknown()
    .optional()
    .describe('For validation_error: a list of { path, message } per invalid field'),
});

/** Shared pieces of the registration functions below. */
interface OpenApiKit {
  registry: OpenAPIRegistry;
  /** A response whose body is the error shape. */
  error: (description: string) => Responses[string];
  /** 413 and 500, which every route can answer. */
  common: Responses;
  /** 401, 403 and 404 of the admin bearer guard. */
  adminAuth: Responses;
  /** 401 and 403 of the app API token guard (only when API_TOKEN is set). */
  apiAuth: Responses;
  /** 400 (invalid JSON or fields) and 415 (not application/json) of parseJsonBody. */
  jsonBody: Responses;
  adminSecurity: { adminToken: string[] }[];
  apiSecurity: { apiToken: string[] }[];
}

function createKit(): OpenApiKit {
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'adminToken', {
    type: 'http',
    scheme: 'bearer',
    description:
      'ADMIN_TOKEN, compared in constant time. Missing → 401, wrong → 403. With no ADMIN_TOKEN configured every /admin route answers 404.',
  });
  registry.registerComponent('securitySchemes', 'apiToken', {
    type: 'http',
    scheme: 'bearer',
    description:
      'API_TOKEN for the app-facing routes. Optional: with no API_TOKEN configured these routes are open and are expected to sit behind the app’s own auth.',
  });
  const ErrorBody = registry.register('Error', ErrorBodySchema);
  const error = (description: string) => ({ description, content: { 'application/json': { schema: ErrorBody } } });
  return {
    registry,
    error,
    common: {
      413: error('Body larger than the route’s limit (payload_too_large)'),
      500: error('Unexpected failure (internal_error); details are only in the server log, keyed by X-Request-Id'),
    },
    adminAuth: {
      401: error('No `Authorization: Bearer` header (unauthorized)'),
      403: error('Wrong admin token (forbidden)'),
      404: error('Admin API disabled because ADMIN_TOKEN is not set, or the resource does not exist'),
    },
    apiAuth: {
      401: error('API_TOKEN is set and no bearer token was given (unauthorized)'),
      403: error('Wrong API token (forbidden)'),
    },
    jsonBody: {
      400: error('Body is not valid JSON (invalid_json) or fails the schema (validation_error, with details)'),
      415: error('Content-Type is not application/json (unsupported_media_type)'),
    },
    adminSecurity: [{ adminToken: [] }],
    apiSecurity: [{ apiToken: [] }],
  };
}

/**
 * Registers a route module's schema as a named component. Route modules build their schemas before
 * this module extends zod, so the schema gets `.openapi` through a clone first (same definition).
 */
function named<T extends z.ZodType>(k: OpenApiKit, refId: string, schema: T): T {
  const openapi = (z.ZodType.prototype as unknown as { openapi: (this: T, meta: object) => T }).openapi;
  const extended = typeof (schema as { openapi?: unknown }).openapi === 'function' ? schema : openapi.call(schema, {});
  return k.registry.register(refId, extended);
}

const json = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });

/** GET /healthz, GET /readyz, GET /metrics. */
function registerOperationalPaths(k: OpenApiKit): void {
  const Health = k.registry.register('Health', z.object({ status: z.literal('ok') }));
  const DispatcherStatus = z
    .object({ running: z.boolean(), temporalUp: z.boolean(), lastError: z.string().nullable(), window: z.number().int(), inFlight: z.number().int() })
    .describe("This replica's dispatcher: whether it reaches Temporal, its admission window and signals in flight");
  const Ready = k.registry.register(
    'Ready',
    z.object({
      status: z.enum(['ready', 'degraded']).describe('degraded: Temporal is unreachable; webhooks are still stored, acknowledged and dispatched once it is back'),
      temporal: z.enum(['up', 'down']),
      degraded: z.array(z.literal('temporal')).optional(),
      message: z.string().optional(),
      dispatcher: DispatcherStatus.optional(),
    }),
  );
  const NotReady = k.registry.register(
    'NotReady',
    ErrorBodySchema.extend({
      status: z.literal('unavailable'),
      failing: z.array(z.enum(['postgres', 'migrations'])).describe('The failing dependencies'),
      temporal: z.enum(['up', 'down']),
    }),
  );
  k.registry.registerPath({
    method: 'get',
    path: '/healthz',
    tags: ['operations'],
    summary: 'Liveness: the process is up',
    responses: { 200: json(Health, 'Up'), ...k.common },
  });
  k.registry.registerPath({
    method: 'get',
    path: '/readyz',
    tags: ['operations'],
    summary: 'Readiness: Postgres reachable and migrations current; Temporal down only degrades',
    responses: {
      200: json(Ready, 'Ready, or degraded while Temporal is down (the replica keeps taking webhooks)'),
      503: json(NotReady, 'Postgres or the migrations are failing; `failing` names it'),
      ...k.common,
    },
  });
  k.registry.registerPath({
    method: 'get',
    path: '/metrics',
    tags: ['operations'],
    summary: 'Prometheus metrics (text exposition format)',
    description:
      'Webhook counters, ack latency, created→applied and received→applied lag histograms, inbox depth and oldest undispatched age, dispatcher and admission-control series, quarantined and stuck delivery gauges, reconciliation, dunning and checkout series. Keep it on the internal network.',
    responses: {
      200: { description: 'Metrics', content: { 'text/plain': { schema: z.string() } } },
      ...k.common,
    },
  });
}

/** POST /webhooks/stripe. */
function registerWebhookPaths(k: OpenApiKit): void {
  const StripeEvent = k.registry.register(
    'StripeEvent',
    z
      .object({
        id: z.string().describe('evt_…'),
        object: z.literal('event').optional(),
        type: z.string().describe('e.g. invoice.payment_failed'),
        created: z.number().int().describe('Unix seconds'),
        api_version: z.string().nullable().optional(),
        livemode: z.boolean().optional(),
        data: z.object({ object: z.record(z.string(), z.unknown()) }),
      })
      .loose()
      .describe('A Stripe event exactly as Stripe sends it. The raw bytes are verified before anything parses them.'),
  );
  const WebhookAck = k.registry.register(
    'WebhookAck',
    z.object({
      received: z.literal(true),
      eventId: z.string(),
      status: z
        .enum(WEBHOOK_EVENT_STATUSES)
        .describe('received on first delivery (stored; the dispatcher hands it to Temporal), ignored or failed when it will not be; the stored status for a redelivery'),
      duplicate: z.boolean().optional(),
      error: z.string().optional().describe('For status failed: why the verified event did not match the schema'),
    }),
  );
  k.registry.registerPath({
    method: 'post',
    path: '/webhooks/stripe',
    tags: ['webhooks'],
    summary: 'Stripe webhook endpoint',
    description:
      'Verifies Stripe-Signature (HMAC over the raw body, 300 s tolerance, any of the configured secrets during rotation), stores the delivery and answers 200 once it is committed, whatever Temporal is doing; the API\'s dispatcher then hands it to the customer workflow. Unknown event types are stored as ignored and answered 200.',
    request: {
      headers: z.object({ 'stripe-signature': z.string().describe('t=<unix>,v1=<hex hmac>[,v1=…]') }),
      body: { required: true, content: { 'application/json': { schema: StripeEvent } } },
    },
    responses: {
      200: json(WebhookAck, 'Stored (or a redelivery, an ignored type, or a verified event that failed the schema)'),
      400: k.error('missing_signature, bad_signature, stale_timestamp, malformed_json or malformed_event: nothing was stored'),
      413: k.error('Body larger than WEBHOOK_MAX_BODY_BYTES (payload_too_large): nothing was stored'),
      503: k.error('Postgres could not store it (unavailable): nothing was stored, Stripe retries'),
      500: k.common[500]!,
    },
  });
}

/** GET /customers/{customerId}. */
function registerCustomerPaths(k: OpenApiKit): void {
  const Customer = k.registry.register(
    'Customer',
    z.object({
      customerId: z.string(),
      email: z.string().nullable(),
      accessState: z.string().describe('active → grace → restricted → suspended'),
      deleted: z.boolean(),
      subscription: z
        .object({
          id: z.string(),
          status: z.string(),
          planId: z.string().nullable(),
          priceId: z.string().nullable(),
          currentPeriodEnd: isoTime.nullable(),
          cancelAtPeriodEnd: z.boolean(),
          pendingPlanId: z.string().nullable(),
          needsReview: z.boolean(),
        })
        .nullable(),
      dunning: z
        .object({
          invoiceId: z.string(),
          state: z.string(),
          attempt: z.number().int(),
          nextAttemptAt: isoTime.nullable(),
          lastDeclineCode: z.string().nullable(),
          /** Stripe's advice on the last decline: do_not_try_again, try_again_later, confirm_card_data. */
          lastAdviceCode: z.string().nullable(),
        })
        .nullable(),
    }),
  );
  k.registry.registerPath({
    method: 'get',
    path: '/customers/{customerId}',
    tags: ['customers'],
    summary: 'The customer’s billing state from the local read model',
    security: k.apiSecurity,
    request: { params: CustomerIdParamsSchema },
    responses: {
      200: json(Customer, 'The customer'),
      400: k.error('customerId does not look like cus_… (invalid_customer_id)'),
      ...k.apiAuth,
      404: k.error('No such customer (customer_not_found)'),
      ...k.common,
    },
  });
  k.registry.registerPath({
    method: 'post',
    path: '/customers/{customerId}/billing-portal',
    tags: ['customers'],
    summary: 'A Stripe Billing Portal session: where the customer replaces a failing card',
    security: k.apiSecurity,
    request: {
      params: CustomerIdParamsSchema,
      body: { required: true, content: { 'application/json': { schema: named(k, 'BillingPortalRequest', BillingPortalBodySchema) } } },
    },
    responses: {
      201: json(named(k, 'BillingPortalSession', BillingPortalSessionSchema), 'Session created: send the customer to `url`'),
      ...k.jsonBody,
      ...k.apiAuth,
      404: k.error('No such customer (customer_not_found)'),
      409: k.error('The customer was deleted in Stripe (customer_deleted)'),
      422: k.error('Stripe refused the request (stripe_rejected), e.g. no portal configuration in this Stripe account'),
      503: k.error('Stripe unreachable (stripe_unavailable)'),
      ...k.common,
    },
  });
  k.registry.registerPath({
    method: 'get',
    path: '/billing/card-update/{token}',
    tags: ['customers'],
    summary: 'The stable card-update link of customer emails: opens a fresh Billing Portal session',
    description: 'Public: the signed token names the customer and is the credential. Each visit creates a portal session and redirects to it.',
    request: { params: z.object({ token: z.string().describe('Signed token from a notice email') }) },
    responses: {
      303: { description: 'Redirect to the Stripe Billing Portal session' },
      404: k.error('Invalid or forged token, or the customer is gone (link_not_found)'),
      422: k.error('Stripe refused the request (stripe_rejected)'),
      503: k.error('Stripe unreachable (stripe_unavailable)'),
      ...k.common,
    },
  });
}

/** The admin delivery log: list, show, replay one, replay many. */
function registerAdminWebhookPaths(k: OpenApiKit): void {
  const BulkReplayBody = named(k, 'BulkReplayRequest', BulkReplayBodySchema);
  const EventIdParams = z.object({ eventId: z.string().min(1).describe('evt_…') });
  const summary = {
    eventId: z.string(),
    type: z.string(),
    status: z.enum(WEBHOOK_EVENT_STATUSES),
    customerId: z.string().nullable(),
    attempts: z.number().int().describe('Deliveries received for this event id'),
    lastError: z.string().nullable().describe('Why it failed, was quarantined or is waiting (schema, data, lookup or dispatch error)'),
    receivedAt: isoTime,
    dispatchedAt: isoTime.nullable().describe('Last hand-over to the workflow (a sweeper re-send moves it)'),
    firstDispatchedAt: isoTime.nullable().describe('When it entered dispatched: how long a stuck delivery has waited'),
    appliedAt: isoTime.nullable(),
    quarantinedAt: isoTime.nullable().describe('When the worker last set it aside after a data error'),
    payloadTruncated: z.boolean(),
  };
  const EventSummary = k.registry.register('WebhookEventSummary', z.object(summary));
  const EventList = k.registry.register(
    'WebhookEventList',
    z.object({ data: z.array(EventSummary), nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page') }),
  );
  const EventDetail = k.registry.register(
    'WebhookEvent',
    z.object({
      ...summary,
      apiVersion: z.string().nullable(),
      objectId: z.string().nullable(),
      workflowId: z.string().nullable().describe('customer:<cus_id> once dispatched'),
      lastReceivedAt: isoTime,
      appliedOutcome: z.enum(['applied', 'stale', 'refetched', 'noop']).nullable(),
      payloadBytes: z.number().int(),
      payload: z.record(z.string(), z.unknown()).describe('The stored event (trimmed to ids when larger than the store limit)'),
    }),
  );
  const ReplayResult = k.registry.register(
    'ReplayResult',
    z.object({
      eventId: z.string(),
      result: z
        .enum(['dispatched', 'noop', 'ignored', 'failed', 'deferred'])
        .describe('noop: already applied; deferred: a Stripe lookup failed, left received for the sweeper'),
      reason: z.string().optional(),
      error: z.string().optional(),
    }),
  );
  const BulkReplayResult = k.registry.register(
    'BulkReplayResult',
    z.object({
      selected: z.number().int(),
      results: z.record(z.string(), z.number().int()).describe('Count per outcome: dispatched, noop, ignored, failed, deferred, unavailable'),
    }),
  );
  const base = { tags: ['admin: webhook deliveries'], security: k.adminSecurity };
  k.registry.registerPath({
    ...base,
    method: 'get',
    path: '/admin/webhook-events',
    summary: 'List the delivery log, newest first',
    request: { query: ListWebhookEventsQuerySchema },
    responses: {
      200: json(EventList, 'One page'),
      400: k.error('Invalid filter (validation_error) or cursor (invalid_cursor)'),
      ...k.adminAuth,
      ...k.common,
    },
  });
  k.registry.registerPath({
    ...base,
    method: 'get',
    path: '/admin/webhook-events/stuck',
    summary: 'Deliveries dispatched but not applied for longer than olderThanSeconds, longest waiting first',
    description:
      'olderThanSeconds defaults to STUCK_DISPATCH_THRESHOLD_MS / 1000. The sweeper re-sends these once per threshold; they stay listed until applied. Same items and cursor paging as the delivery log.',
    request: { query: ListStuckWebhookEventsQuerySchema },
    responses: {
      200: json(EventList, 'One page'),
      400: k.error('Invalid query (validation_error) or cursor (invalid_cursor)'),
      ...k.adminAuth,
      ...k.common,
    },
  });
  k.registry.registerPath({
    ...base,
    method: 'get',
    path: '/admin/webhook-events/{eventId}',
    summary: 'One delivery with its payload and apply outcome',
    request: { params: EventIdParams },
    responses: { 200: json(EventDetail, 'The delivery'), ...k.adminAuth, ...k.common },
  });
  k.registry.registerPath({
    ...base,
    method: 'post',
    path: '/admin/webhook-events/{eventId}/replay',
    summary: 'Replay one delivery through its customer workflow (an applied event is a no-op)',
    request: { params: EventIdParams },
    responses: {
      200: json(ReplayResult, 'Replayed, or why not'),
      ...k.adminAuth,
      503: k.error('Temporal unreachable (unavailable)'),
      ...k.common,
    },
  });
  k.registry.registerPath({
    ...base,
    method: 'post',
    path: '/admin/webhook-events/replay',
    summary: 'Replay many deliveries selected by status and/or type, rate limited',
    request: { body: { required: true, content: { 'application/json': { schema: BulkReplayBody } } } },
    responses: { 200: json(BulkReplayResult, 'Counts per outcome'), ...k.jsonBody, ...k.adminAuth, ...k.common },
  });
}

/** The log of outgoing app webhooks: list, show, replay (api/routes/admin-app-webhooks.ts). */
function registerAdminAppWebhookPaths(k: OpenApiKit): void {
  const IdParams = z.object({ id: z.string().min(1).describe('aevt_… (the id the app receives)') });
  const summary = {
    id: z.string(),
    type: z.string().describe('access.changed, subscription.changed, plan_change.completed, …'),
    customerId: z.string().nullable(),
    status: z.enum(APP_WEBHOOK_STATUSES).describe('failed: the last attempt failed and retries go on; given_up: retried for 3 days'),
    attempts: z.number().int().describe('POSTs made, replays included'),
    lastStatusCode: z.number().int().nullable().describe("The app's HTTP status on the last attempt (null: network error or timeout)"),
    lastError: z.string().nullable(),
    lastAttemptAt: isoTime.nullable(),
    deliveredAt: isoTime.nullable(),
    createdAt: isoTime,
    replays: z.number().int().describe('Admin replays so far'),
  };
  const Summary = k.registry.register('AppWebhookSummary', z.object(summary));
  const List = k.registry.register(
    'AppWebhookList',
    z.object({ data: z.array(Summary), nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page') }),
  );
  const Detail = k.registry.register(
    'AppWebhook',
    z.object({ ...summary, data: z.record(z.string(), z.unknown()).describe('The event payload, as the app receives it in `data`') }),
  );
  const Replayed = k.registry.register(
    'AppWebhookReplay',
    z.object({
      id: z.string(),
      replays: z.number().int(),
      workflowId: z.string().describe('app-webhook:<id>:replay-<replays>, started by the worker’s outbox relay'),
    }),
  );
  const base = { tags: ['admin: app webhooks'], security: k.adminSecurity };
  k.registry.registerPath({
    ...base,
    method: 'get',
    path: '/admin/app-webhooks',
    summary: 'List the outgoing app webhooks, newest first',
    request: { query: ListAppWebhooksQuerySchema },
    responses: {
      200: json(List, 'One page'),
      400: k.error('Invalid filter (validation_error) or cursor (invalid_cursor)'),
      ...k.adminAuth,
      ...k.common,
    },
  });
  k.registry.registerPath({
    ...base,
    method: 'get',
    path: '/admin/app-webhooks/{id}',
    summary: 'One app webhook with its payload',
    request: { params: IdParams },
    responses: { 200: json(Detail, 'The event and its delivery'), ...k.adminAuth, ...k.common },
  });
  k.registry.registerPath({
    ...base,
    method: 'post',
    path: '/admin/app-webhooks/{id}/replay',
    summary: 'Deliver an app webhook again (same id): sets it pending for the outbox relay',
    request: { params: IdParams },
    responses: {
      202: json(Replayed, 'Accepted: the relay starts the replay workflow'),
      ...k.adminAuth,
      409: k.error('A delivery of it is in flight (delivery_in_flight)'),
      ...k.common,
    },
  });
}

/** The admin reconciliation API (api/routes/admin-reconciliations.ts). */
function registerAdminReconciliationPaths(k: OpenApiKit): void {
  const StartBody = named(k, 'StartReconciliationRequest', StartReconciliationBodySchema);
  const RunIdParams = z.object({ runId: z.string().min(1).describe('reconciliation:… (the workflow id)') });
  const run = {
    runId: z.string(),
    trigger: z.string().describe('schedule or manual'),
    status: z.enum(['running', 'succeeded', 'failed']),
    scanned: z.number().int(),
    drifted: z.number().int(),
    repaired: z.number().int(),
    flagged: z.number().int(),
    progress: z.object({ phase: z.string(), cursor: z.string() }).nullable(),
    error: z.string().nullable(),
    startedAt: isoTime,
    finishedAt: isoTime.nullable(),
    durationSeconds: z.number().nullable(),
  };
  const Run = k.registry.register('ReconciliationRun', z.object(run));
  const RunList = k.registry.register('ReconciliationRunList', z.object({ data: z.array(Run), nextCursor: z.string().nullable() }));
  const Drift = k.registry.register(
    'ReconciliationDrift',
    z.object({
      id: z.number().int(),
      subscriptionId: z.string().describe('the drifted object id, whatever its type (kept for compatibility; see objectId)'),
      objectType: z.string().describe('subscription, invoice or customer'),
      objectId: z.string(),
      customerId: z.string().nullable(),
      field: z.string().describe('existence, status, price, current_period_end, cancel_at_period_end, customer, invoice_without_cycle, cycle_invoice_closed, access_state or pause_collection'),
      kind: z.string(),
      localValue: z.string().nullable(),
      stripeValue: z.string().nullable(),
      detectedAt: isoTime,
      repairStatus: z.enum(['pending', 'repaired', 'flagged', 'failed']),
      repairedAt: isoTime.nullable(),
    }),
  );
  const RunReport = k.registry.register(
    'ReconciliationReport',
    z.object({
      ...run,
      workflowStatus: z.string().nullable().describe('Temporal status of the run, e.g. RUNNING, COMPLETED'),
      repairs: z.object({ pending: z.number().int(), repaired: z.number().int(), flagged: z.number().int(), failed: z.number().int() }),
      drift: z.array(Drift),
      nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page of drift rows'),
    }),
  );
  const Started = k.registry.register(
    'ReconciliationStarted',
    z.object({ runId: z.string(), status: z.literal('running'), href: z.string() }),
  );
  const base = { tags: ['admin: reconciliation'], security: k.adminSecurity };
  k.registry.registerPath({
    ...base,
    method: 'post',
    path: '/admin/reconciliations',
    summary: 'Start a reconciliation run now (the body is optional)',
    request: { body: { required: false, content: { 'application/json': { schema: StartBody } } } },
    responses: {
      202: json(Started, 'Started'),
      ...k.jsonBody,
      ...k.adminAuth,
      422: k.error('Temporal refused the request (temporal_rejected)'),
      503: k.error('Temporal unreachable (temporal_unavailable)'),
      ...k.common,
    },
  });
  k.registry.registerPath({
    ...base,
    method: 'get',
    path: '/admin/reconciliations',
    summary: 'Recent reconciliation runs, newest first',
    request: { query: ListRunsQuerySchema },
    responses: {
      200: json(RunList, 'One page'),
      400: k.error('Invalid query (validation_error) or cursor (invalid_cursor)'),
      ...k.adminAuth,
      ...k.common,
    },
  });
  k.registry.registerPath({
    ...base,
    method: 'get',
    path: '/admin/reconciliations/{runId}',
    summary: 'One run with its drift report',
    request: { params: RunIdParams, query: RunDriftQuerySchema },
    responses: {
      200: json(RunReport, 'The run and one page of drift rows'),
      400: k.error('Invalid query (validation_error)'),
      ...k.adminAuth,
      ...k.common,
    },
  });
}

/** POST /checkout (app-facing) and GET /admin/checkout/success-rate (api/routes/checkout.ts). */
function registerCheckoutPaths(k: OpenApiKit): void {
  const CheckoutBody = named(k, 'CheckoutRequest', CheckoutBodySchema);
  const session = {
    sessionId: z.string().describe('cs_…'),
    url: z.string().nullable().describe('The hosted Checkout page to redirect the customer to'),
    requestId: z.string(),
    customerId: z.string(),
    planId: z.string(),
    status: z.string().describe('open, complete or expired'),
  };
  const CheckoutSession = k.registry.register(
    'CheckoutSession',
    z.object({ ...session, expiresAt: isoTime.nullable().optional().describe('Present when the session was created by this call') }),
  );
  const SuccessRate = k.registry.register(
    'CheckoutSuccessRate',
    z.object({
      windowHours: z.number().int(),
      completed: z.number().int(),
      expired: z.number().int(),
      open: z.number().int(),
      successRate: z.number().nullable().describe('completed / (completed + expired); null when none ended in the window'),
      target: z.number(),
      meetsTarget: z.boolean().nullable(),
    }),
  );
  k.registry.registerPath({
    method: 'post',
    path: '/checkout',
    tags: ['checkout'],
    summary: 'Create a Stripe Checkout Session (subscription mode) for a catalog plan',
    description: 'Idempotent by requestId: the same requestId returns the same session (200).',
    security: k.apiSecurity,
    request: { body: { required: true, content: { 'application/json': { schema: CheckoutBody } } } },
    responses: {
      201: json(CheckoutSession, 'Session created'),
      200: json(CheckoutSession, 'The session already created for this requestId'),
      ...k.jsonBody,
      ...k.apiAuth,
      404: k.error('customerId is not a known customer (customer_not_found)'),
      409: k.error('The customer already has a live subscription (already_subscribed), or requestId was used for another checkout (request_id_reused)'),
      422: k.error('Stripe refused the request (stripe_rejected)'),
      503: k.error('Stripe unreachable (stripe_unavailable)'),
      ...k.common,
    },
  });
  const CheckoutSessionStatus = k.registry.register(
    'CheckoutSessionStatus',
    z.object({
      sessionId: z.string(),
      status: z.enum(['open', 'complete', 'expired']).describe('complete once checkout.session.completed has been applied'),
      customerId: z.string(),
      planId: z.string(),
      subscriptionId: z.string().nullable(),
      subscriptionStatus: z.string().nullable().describe('The subscription as the local state has it (null until its event is applied)'),
      accessState: z.string().nullable(),
      createdAt: isoTime,
      completedAt: isoTime.nullable(),
      expiredAt: isoTime.nullable(),
    }),
  );
  k.registry.registerPath({
    method: 'get',
    path: '/checkout/sessions/{sessionId}',
    tags: ['checkout'],
    summary: "A checkout session's local status, for the app's success page",
    description: 'Local state only: poll it after the redirect until status is complete (or use the app webhooks).',
    security: k.apiSecurity,
    request: { params: z.object({ sessionId: z.string().describe('cs_…') }) },
    responses: {
      200: json(CheckoutSessionStatus, 'The session'),
      400: k.error('sessionId does not look like cs_… (invalid_session_id)'),
      ...k.apiAuth,
      404: k.error('No checkout session of that id was created here (checkout_session_not_found)'),
      ...k.common,
    },
  });
  k.registry.registerPath({
    method: 'get',
    path: '/admin/checkout/success-rate',
    tags: ['admin: checkout'],
    summary: 'Checkout success rate over a window',
    security: k.adminSecurity,
    request: { query: SuccessRateQuerySchema },
    responses: {
      200: json(SuccessRate, 'The rate and its counts'),
      400: k.error('Invalid query (validation_error)'),
      ...k.adminAuth,
      ...k.common,
    },
  });
}

/** GET /plans (api/routes/checkout.ts). */
function registerPlanPaths(k: OpenApiKit): void {
  const Plan = k.registry.register(
    'Plan',
    z.object({
      id: z.string(),
      name: z.string(),
      amount: z.number().int().describe('Minor units per interval'),
      currency: z.string(),
      interval: z.string(),
      rank: z.number().int().describe('Higher is an upgrade'),
      stripePriceId: z.string(),
    }),
  );
  k.registry.registerPath({
    method: 'get',
    path: '/plans',
    tags: ['checkout'],
    summary: 'The active plan catalog',
    responses: { 200: json(z.object({ data: z.array(Plan) }), 'Active plans'), ...k.common },
  });
}

/** Plan change preview and commit, cancel and resume (api/routes/subscription.ts). */
function registerSubscriptionPaths(k: OpenApiKit): void {
  const PreviewBody = named(k, 'PreviewPlanChangeRequest', PreviewPlanChangeBodySchema);
  const ChangeBody = named(k, 'ChangePlanRequest', ChangePlanBodySchema);
  const CancelBody = named(k, 'CancelSubscriptionRequest', CancelSubscriptionBodySchema);
  const RequestIdBody = named(k, 'RequestIdRequest', RequestIdBodySchema);
  const unix = z.number().int().describe('Unix seconds');
  const Preview = k.registry.register(
    'PlanChangePreview',
    z.object({
      customerId: z.string(),
      subscriptionId: z.string(),
      kind: z.enum(['upgrade', 'downgrade']),
      fromPlanId: z.string(),
      toPlanId: z.string(),
      currency: z.string(),
      amountDueNext: z.number().int(),
      prorationDate: unix.nullable().describe('Pass to PUT …/subscription/plan so the charge equals this preview'),
      amountDueNow: z.number().int().describe('Minor units invoiced at once (0 for a downgrade)'),
      effectiveAt: unix.nullable(),
      nextBillingAt: unix.nullable(),
      lines: z.array(z.object({ description: z.string().nullable(), amount: z.number().int(), proration: z.boolean() })),
      estimate: z
        .object({ credit: z.number().int(), charge: z.number().int(), net: z.number().int(), secondsRemaining: z.number().int(), periodSeconds: z.number().int() })
        .nullable()
        .describe('Local cross-check of Stripe’s proration (same interval only)'),
    }),
  );
  const ChangeResult = k.registry.register(
    'PlanChangeResult',
    z.object({
      requestId: z.string(),
      kind: z.enum(['upgrade', 'downgrade']),
      fromPlanId: z.string().nullable(),
      toPlanId: z.string(),
      status: z.enum(['confirmed', 'pending', 'scheduled', 'failed', 'canceled']),
      effectiveAt: unix.nullable(),
      invoiceId: z.string().nullable(),
      message: z.string(),
    }),
  );
  const ActionResult = k.registry.register(
    'SubscriptionActionResult',
    z.object({ requestId: z.string(), status: z.string(), cancelAtPeriodEnd: z.boolean(), message: z.string() }),
  );
  const base = { tags: ['subscriptions'], security: k.apiSecurity };
  const body = (schema: z.ZodType) => ({ params: CustomerIdParamsSchema, body: { required: true, content: { 'application/json': { schema } } } });
  const updateErrors = {
    ...k.jsonBody,
    ...k.apiAuth,
    404: k.error('No such customer or workflow (customer_not_found), or no subscription (no_subscription)'),
    409: k.error('Rejected by the workflow’s validator: same_plan, subscription_canceled, change_in_flight, request_id_reused, …'),
    422: k.error('unknown_plan, currency_mismatch, invalid_proration_date, or Stripe refused (stripe_rejected)'),
    503: k.error('Temporal or Stripe unreachable, or still processing: retry with the same requestId'),
    ...k.common,
  };
  k.registry.registerPath({
    ...base,
    method: 'post',
    path: '/customers/{customerId}/subscription/plan/preview',
    summary: 'Preview a plan change: the prorated amount due now, from Stripe',
    request: body(PreviewBody),
    responses: { 200: json(Preview, 'The preview'), ...updateErrors },
  });
  k.registry.registerPath({
    ...base,
    method: 'put',
    path: '/customers/{customerId}/subscription/plan',
    summary: 'Change plan: upgrades now with proration, downgrades at period end (a Workflow Update)',
    request: body(ChangeBody),
    responses: {
      200: json(ChangeResult, 'Applied (confirmed)'),
      202: json(ChangeResult, 'Accepted: awaiting payment (pending) or at period end (scheduled)'),
      402: json(ChangeResult, 'The payment for the upgrade failed (failed)'),
      ...updateErrors,
    },
  });
  k.registry.registerPath({
    ...base,
    method: 'post',
    path: '/customers/{customerId}/subscription/plan/cancel-pending',
    summary: 'Withdraw a scheduled plan change',
    request: body(RequestIdBody),
    responses: {
      200: json(ChangeResult, 'Withdrawn (canceled)'),
      ...updateErrors,
      404: k.error('No such customer (customer_not_found) or no scheduled change (no_pending_plan_change)'),
    },
  });
  k.registry.registerPath({
    ...base,
    method: 'post',
    path: '/customers/{customerId}/subscription/cancel',
    summary: 'Cancel now or at period end',
    request: body(CancelBody),
    responses: { 200: json(ActionResult, 'Done'), ...updateErrors },
  });
  k.registry.registerPath({
    ...base,
    method: 'post',
    path: '/customers/{customerId}/subscription/resume',
    summary: 'Undo a cancel-at-period-end',
    request: body(RequestIdBody),
    responses: { 200: json(ActionResult, 'Done'), ...updateErrors },
  });
}

/** Builds the document (pure; cache the result). */
export function buildOpenApiDocument(opts: { version?: string; serverUrl?: string } = {}): OpenAPIObject {
  const kit = createKit();
  registerOperationalPaths(kit);
  registerWebhookPaths(kit);
  registerCustomerPaths(kit);
  registerPlanPaths(kit);
  registerCheckoutPaths(kit);
  registerSubscriptionPaths(kit);
  registerAdminWebhookPaths(kit);
  registerAdminReconciliationPaths(kit);
  registerAdminAppWebhookPaths(kit);
  return new OpenApiGeneratorV31(kit.registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: {
      title: 'Billing engine API',
      version: opts.version ?? '0.1.0',
      description:
        'Stripe billing orchestrated by Temporal. Every error is `{ error, message, details? }` and every response carries X-Request-Id. JSON bodies are limited to 64 KiB (the webhook to WEBHOOK_MAX_BODY_BYTES).',
    },
    ...(opts.serverUrl ? { servers: [{ url: opts.serverUrl }] } : {}),
  });
}
