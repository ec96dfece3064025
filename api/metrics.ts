/** Prometheus metrics of the API process (prom-client; one registry per app instance). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Creates the registry and every series the API exposes. */
export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  const webhooksReceived = new Counter({
    name: 'billing_webhooks_received_total',
    help: 'Verified Stripe webhook deliveries, by event type (or ignored/invalid)',
    labelNames: ['type'],
    registers: [registry],
  });
  const webhooksRejected = new Counter({
    name: 'billing_webhooks_rejected_total',
    help: 'Webhook requests rejected before storage, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  const webhooksDuplicate = new Counter({
    name: 'billing_webhooks_duplicate_total',
    help: 'Redeliveries of an event id already in the delivery log',
    registers: [registry],
  });
  const webhooksIgnored = new Counter({
    name: 'billing_webhooks_ignored_total',
    help: 'Verified events of types this service does not handle',
    registers: [registry],
  });
  const webhooksFailed = new Counter({
    name: 'billing_webhooks_failed_total',
    help: 'Verified events stored as failed (payload did not match the schema)',
    registers: [registry],
  });
  const webhooksUnavailable = new Counter({
    name: 'billing_webhooks_unavailable_total',
    help: 'Deliveries answered 503 because Temporal or Postgres was unreachable',
    registers: [registry],
  });
  const ackLatency = new Histogram({
    name: 'billing_webhook_ack_seconds',
    help: 'Time to acknowledge a webhook delivery',
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    labelNames: ['status'],
    registers: [registry],
  });
  const oldestUndispatchedAge = new Gauge({
    name: 'billing_webhook_oldest_undispatched_age_seconds',
    help: 'Age of the oldest delivery stored but not yet handed to Temporal',
    registers: [registry],
  });
  const sweeperRedispatched = new Counter({
    name: 'billing_webhook_sweeper_redispatched_total',
    help: 'Deliveries re-dispatched by the sweeper',
    registers: [registry],
  });
  return {
    registry,
    webhooksReceived,
    webhooksRejected,
    webhooksDuplicate,
    webhooksIgnored,
    webhooksFailed,
    webhooksUnavailable,
    ackLatency,
    oldestUndispatchedAge,
    sweeperRedispatched,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
