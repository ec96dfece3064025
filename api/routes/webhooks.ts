/** POST /webhooks/stripe: verify the raw body, store it, answer. The dispatcher hands it to Temporal. */
import { SpanKind, SpanStatusCode, type Span, type Tracer } from '@opentelemetry/api';
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { Logger } from '../../lib/logger';
import { commonErrors, errorResponse } from '../errors';
import type { Ingest } from '../ingest';
import { verifyStripeSignature } from '../ingest';
import type { Metrics } from '../metrics';
import { jsonResponse } from '../validate';
import { WEBHOOK_EVENT_STATUSES } from './admin-webhooks';

export interface WebhookRouteDeps {
  ingest: Ingest;
  secrets: () => string[];
  maxBodyBytes: number;
  logger: Logger;
  metrics: Metrics;
}

const StripeEventSchema = z
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
  .describe('A Stripe event exactly as Stripe sends it. The raw bytes are verified before anything parses them.')
  .openapi('StripeEvent');

const WebhookAckSchema = z
  .object({
    received: z.literal(true),
    eventId: z.string(),
    status: z
      .enum(WEBHOOK_EVENT_STATUSES)
      .describe('received on first delivery (stored; the dispatcher hands it to Temporal), ignored or failed when it will not be; the stored status for a redelivery'),
    duplicate: z.boolean().optional(),
    error: z.string().optional().describe('For status failed: why the verified event did not match the schema'),
  })
  .openapi('WebhookAck');

/**
 * Documented only: the handler below is a plain route, because a validator would parse the body before
 * the signature is checked over the raw bytes, and would cost the ack path a second parse.
 */
const stripeWebhook = createRoute({
  method: 'post',
  path: '/webhooks/stripe',
  tags: ['webhooks'],
  summary: 'Stripe webhook endpoint',
  description:
    "Verifies Stripe-Signature (HMAC over the raw body, 300 s tolerance, any of the configured secrets during rotation), stores the delivery and answers 200 once it is committed, whatever Temporal is doing; the API's dispatcher then hands it to the customer workflow. Unknown event types are stored as ignored and answered 200.",
  request: {
    headers: z.object({ 'stripe-signature': z.string().describe('t=<unix>,v1=<hex hmac>[,v1=…]') }),
    body: { required: true, content: { 'application/json': { schema: StripeEventSchema } } },
  },
  responses: {
    200: jsonResponse(WebhookAckSchema, 'Stored (or a redelivery, an ignored type, or a verified event that failed the schema)'),
    400: errorResponse('missing_signature, bad_signature, stale_timestamp, malformed_json or malformed_event: nothing was stored'),
    413: errorResponse('Body larger than WEBHOOK_MAX_BODY_BYTES (payload_too_large): nothing was stored'),
    503: errorResponse('Postgres could not store it (unavailable): nothing was stored, Stripe retries'),
    500: commonErrors[500],
  },
});

/** The Stripe webhook endpoint. */
export function webhookRoutes(deps: WebhookRouteDeps): OpenAPIHono {
  const app = new OpenAPIHono();
  app.openAPIRegistry.registerPath(stripeWebhook);
  app.post('/webhooks/stripe', async (c) => {
    deps.ingest.load.started();
    try {
      const tracer = deps.ingest.tracer;
      return await (tracer ? traced(tracer, c) : handle(c));
    } finally {
      deps.ingest.load.ended();
    }
  });

  /** Tracing on: one span per request, its context stored with the row (api/ingest.ts); never the payload or a secret. */
  function traced(tracer: Tracer, c: Context) {
    const attributes = { 'http.request.method': 'POST', 'http.route': '/webhooks/stripe' };
    return tracer.startActiveSpan('POST /webhooks/stripe', { kind: SpanKind.SERVER, attributes }, async (span) => {
      try {
        const res = await handle(c, span);
        span.setAttribute('http.response.status_code', res.status);
        if (res.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        return res;
      } finally {
        span.end();
      }
    });
  }

  async function handle(c: Context, span?: Span) {
    const started = performance.now();
    const done = (status: number, body: Record<string, unknown>, reason?: string) => {
      span?.setAttribute('billing.outcome', reason ?? (body.duplicate === true ? 'duplicate' : String(body.status ?? body.error)));
      if (reason) deps.metrics.webhooksRejected.inc({ reason });
      deps.metrics.ackLatency.observe({ status: String(status) }, (performance.now() - started) / 1000);
      return c.json(body, status as 200);
    };

    const declared = Number(c.req.header('content-length') ?? '0');
    if (declared > deps.maxBodyBytes) {
      return done(413, { error: 'payload_too_large', message: `body exceeds ${deps.maxBodyBytes} bytes` }, 'too_large');
    }
    const signature = c.req.header('stripe-signature');
    // Read the raw bytes exactly as sent: the signature covers them, not a re-serialization.
    const raw = await c.req.text();
    const rawBytes = Buffer.byteLength(raw, 'utf8');
    if (rawBytes > deps.maxBodyBytes) {
      return done(413, { error: 'payload_too_large', message: `body exceeds ${deps.maxBodyBytes} bytes` }, 'too_large');
    }
    if (!signature) {
      return done(400, { error: 'missing_signature', message: 'Stripe-Signature header is required' }, 'missing_signature');
    }
    const verified = await verifyStripeSignature(raw, signature, deps.secrets());
    if (!verified.ok) return done(400, { error: verified.reason, message: verified.message }, verified.reason);

    const envelope = verified.event as unknown as Record<string, unknown>;
    if (!envelope || typeof envelope !== 'object' || Array.isArray(envelope) || typeof envelope.id !== 'string' || !envelope.id) {
      return done(400, { error: 'malformed_event', message: 'event has no id' }, 'malformed_event');
    }
    if (typeof envelope.type !== 'string') {
      return done(400, { error: 'malformed_event', message: 'event has no type' }, 'malformed_event');
    }
    // The id is the delivery log's primary key and the type an indexed column: Postgres rejects NUL in
    // text and over-long btree keys, so such an event could never be stored (it is not from Stripe).
    if (envelope.id.length > 255 || envelope.id.includes('\u0000') || envelope.type.includes('\u0000')) {
      return done(400, { error: 'malformed_event', message: 'event id or type is not a Stripe id' }, 'malformed_event');
    }

    span?.setAttributes({ 'billing.event.id': envelope.id, 'billing.event.type': envelope.type });
    let outcome;
    try {
      outcome = await deps.ingest.ingestVerified(envelope, rawBytes, raw);
    } catch (err) {
      deps.metrics.webhooksUnavailable.inc();
      deps.logger.error(
        { eventId: envelope.id, customerId: null, workflowId: null, error: err instanceof Error ? err.message : String(err) },
        'could not store webhook',
      );
      return done(503, { error: 'unavailable', message: 'could not record the event; retry later' });
    }
    // Committed: 2xx whatever Temporal is doing.
    switch (outcome.status) {
      case 'received':
        return done(200, { received: true, eventId: outcome.eventId, status: 'received', duplicate: false });
      case 'duplicate':
        return done(200, { received: true, eventId: outcome.eventId, status: outcome.previous, duplicate: true });
      case 'ignored':
        return done(200, { received: true, eventId: outcome.eventId, status: 'ignored' });
      case 'failed':
        return done(200, { received: true, eventId: outcome.eventId, status: 'failed', error: outcome.error });
    }
  }
  return app;
}
