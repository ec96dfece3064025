/** POST /webhooks/stripe: verify the raw body, store it, answer. The dispatcher hands it to Temporal. */
import { SpanKind, SpanStatusCode, type Span, type Tracer } from '@opentelemetry/api';
import { Hono, type Context } from 'hono';
import type { Logger } from '../../lib/logger';
import type { Ingest } from '../ingest';
import { verifyStripeSignature } from '../ingest';
import type { Metrics } from '../metrics';

export interface WebhookRouteDeps {
  ingest: Ingest;
  secrets: () => string[];
  maxBodyBytes: number;
  logger: Logger;
  metrics: Metrics;
}

/** The Stripe webhook endpoint. */
export function webhookRoutes(deps: WebhookRouteDeps): Hono {
  const app = new Hono();
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
