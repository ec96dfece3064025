/**
 * Prometheus metrics of the API process (prom-client; one registry per app instance): every series is
 * defined here, and `createMetricsScrape` sets the ones read from Postgres on each /metrics scrape
 * (index.ts: definitions and the scrape · gauges.ts: Postgres-read gauges · applied-lag.ts: lag histograms).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Config } from '../../lib/config';
import type { Sql } from '../../lib/db';
import type { Logger } from '../../lib/logger';
import { within } from '../../lib/wait-for';
import type { Ingest } from '../ingest';
import { createAppliedLagCollector } from './applied-lag';
import { updateCheckoutGauges, updateDunningGauges, updateInboxGauges, updateOutboxGauges, updateReconciliationGauges } from './gauges';

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
    help: 'Deliveries answered 503 because Postgres could not store them',
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
  const inboxDepth = new Gauge({
    name: 'billing_inbox_depth',
    help: 'Deliveries stored and not yet handed to Temporal (status received)',
    registers: [registry],
  });
  // The dispatcher (api/dispatcher.ts).
  const dispatchEvents = new Counter({
    name: 'billing_dispatch_events_total',
    help: 'Deliveries handed to their customer workflow by the dispatcher',
    registers: [registry],
  });
  const dispatchSignals = new Counter({
    name: 'billing_dispatch_signals_total',
    help: 'stripeEvents signals sent by the dispatcher (events / signals is the coalescing factor)',
    registers: [registry],
  });
  const dispatchBatchEvents = new Histogram({
    name: 'billing_dispatch_batch_events',
    help: 'Events per stripeEvents signal (the coalescing factor)',
    buckets: [1, 2, 3, 5, 8, 13, 21, 50, 100],
    registers: [registry],
  });
  const dispatchInFlight = new Gauge({
    name: 'billing_dispatch_in_flight',
    help: 'Signals the dispatcher has in flight to Temporal',
    registers: [registry],
  });
  const dispatchPendingWorkflows = new Gauge({
    name: 'billing_dispatch_pending_workflows',
    help: 'Customer workflows with deliveries dispatched but not yet applied (admission control reading)',
    registers: [registry],
  });
  const dispatchPendingOldestAge = new Gauge({
    name: 'billing_dispatch_pending_oldest_age_seconds',
    help: 'Age of the oldest delivery dispatched but not yet applied (admission control reading)',
    registers: [registry],
  });
  const dispatchWindow = new Gauge({
    name: 'billing_dispatch_window',
    help: 'Admission window: how many workflows may have deliveries pending in Temporal at once',
    registers: [registry],
  });
  const dispatchWindowShrinks = new Counter({
    name: 'billing_dispatch_window_shrinks_total',
    help: 'Times the admission window shrank because the oldest pending delivery exceeded DISPATCH_TARGET_LAG_MS',
    registers: [registry],
  });
  const dispatchAdmissionWaits = new Counter({
    name: 'billing_dispatch_admission_waits_total',
    help: 'Dispatcher passes deferred because the admission window was full',
    registers: [registry],
  });
  const dispatchIngestYields = new Counter({
    name: 'billing_dispatch_ingest_yields_total',
    help: 'Times the dispatcher held back because DISPATCH_YIELD_IN_FLIGHT webhook requests were in flight (ingest first)',
    registers: [registry],
  });
  const dispatchErrors = new Counter({
    name: 'billing_dispatch_errors_total',
    help: 'Dispatch failures by reason (temporal_unavailable, rejected, deferred, postgres)',
    labelNames: ['reason'],
    registers: [registry],
  });
  const dispatchTemporalUp = new Gauge({
    name: 'billing_dispatch_temporal_up',
    help: '1 while the dispatcher reaches Temporal, 0 while deliveries wait in the inbox for it',
    registers: [registry],
  });
  const sweeperStuckRedispatched = new Counter({
    name: 'billing_webhook_sweeper_stuck_redispatched_total',
    help: 'Deliveries stuck in dispatched (longer than STUCK_DISPATCH_THRESHOLD_MS) re-sent to their workflow by the sweeper',
    registers: [registry],
  });
  // Inbox gauges are set from Postgres on each scrape (gauges.ts, through Ingest.inboxHealth).
  const webhookEventsQuarantined = new Gauge({
    name: 'billing_webhook_events_quarantined',
    help: 'Deliveries set aside by the worker after a data error, waiting for a fix and a replay',
    registers: [registry],
  });
  const webhookEventsStuck = new Gauge({
    name: 'billing_webhook_events_stuck',
    help: 'Deliveries dispatched longer than STUCK_DISPATCH_THRESHOLD_MS ago and not applied',
    registers: [registry],
  });
  const webhookEventsStuckOldestAge = new Gauge({
    name: 'billing_webhook_events_stuck_oldest_age_seconds',
    help: 'Time since the oldest stuck delivery was first dispatched (0 when none is stuck)',
    registers: [registry],
  });
  // Reconciliation gauges are set from Postgres on each scrape (gauges.ts).
  const reconciliationDriftFound = new Gauge({
    name: 'billing_reconciliation_drift_found',
    help: 'Drifted objects (subscriptions, invoices, customers) found by the latest successful reconciliation run',
    registers: [registry],
  });
  const reconciliationDriftRepaired = new Gauge({
    name: 'billing_reconciliation_drift_repaired',
    help: 'Drifted objects of the latest successful run repaired through their customer workflow (or in Stripe)',
    registers: [registry],
  });
  const reconciliationDriftFlagged = new Gauge({
    name: 'billing_reconciliation_drift_flagged',
    help: 'Local-only subscriptions of the latest successful run flagged for review',
    registers: [registry],
  });
  const reconciliationLastSuccess = new Gauge({
    name: 'billing_reconciliation_last_success_timestamp_seconds',
    help: 'When the latest successful reconciliation run finished (unix seconds, 0 if never)',
    registers: [registry],
  });
  const reconciliationLastDuration = new Gauge({
    name: 'billing_reconciliation_last_run_duration_seconds',
    help: 'Duration of the latest successful reconciliation run',
    registers: [registry],
  });
  // Webhook-to-applied lag: observed at scrape time from webhook_events rows the worker stamped
  // applied_at (applied-lag.ts), since the apply happens in the worker, not in this process.
  const webhookCreatedToApplied = new Histogram({
    name: 'billing_webhook_created_to_applied_seconds',
    help: 'Lag from the Stripe event `created` time (1 s resolution) to the event being applied to Postgres',
    labelNames: ['type'],
    buckets: [1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600],
    registers: [registry],
  });
  const webhookReceivedToApplied = new Histogram({
    name: 'billing_webhook_received_to_applied_seconds',
    help: 'Lag from the first delivery being stored by the API to the event being applied to Postgres',
    labelNames: ['type'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    registers: [registry],
  });
  // Dunning gauges are set from Postgres on each scrape (gauges.ts).
  const dunningCycles = new Gauge({
    name: 'billing_dunning_cycles',
    help: 'Dunning cycles by state (started counts every cycle ever opened)',
    labelNames: ['state'],
    registers: [registry],
  });
  const dunningRecoveryRate = new Gauge({
    name: 'billing_dunning_recovery_rate',
    help: 'Recovered / (recovered + exhausted) dunning cycles',
    registers: [registry],
  });
  const dunningRecoveredByAttempt = new Gauge({
    name: 'billing_dunning_recovered_by_attempt',
    help: 'Recovered dunning cycles by the retry attempt that succeeded (none: paid without a retry)',
    labelNames: ['attempt'],
    registers: [registry],
  });
  const dunningCyclesByDeclineCode = new Gauge({
    name: 'billing_dunning_cycles_by_decline_code',
    help: 'Dunning cycles by first decline code and outcome (started, recovered, exhausted)',
    labelNames: ['decline_code', 'outcome'],
    registers: [registry],
  });
  // Checkout gauges are set from Postgres on each scrape (gauges.ts).
  const checkoutSuccessRate = new Gauge({
    name: 'billing_checkout_success_rate',
    help: 'Checkout sessions completed / (completed + expired) over CHECKOUT_SUCCESS_WINDOW_HOURS (NaN with none ended)',
    registers: [registry],
  });
  const checkoutSessions = new Gauge({
    name: 'billing_checkout_sessions',
    help: 'Checkout sessions over CHECKOUT_SUCCESS_WINDOW_HOURS by outcome (completed, expired, open)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  // Outbox gauges are set from Postgres on each scrape (gauges.ts).
  const notices = new Gauge({
    name: 'billing_notices',
    help: 'Customer notices in the ledger by kind and status (queued, sending, sent, failed, given_up, canceled, suppressed)',
    labelNames: ['kind', 'status'],
    registers: [registry],
  });
  const noticesOverdueAge = new Gauge({
    name: 'billing_notices_overdue_oldest_age_seconds',
    help: 'Age past its due time of the oldest notice not yet sent (queued or failed); 0 when none is overdue',
    registers: [registry],
  });
  const appWebhooks = new Gauge({
    name: 'billing_app_webhooks',
    help: 'Outgoing app events by status (pending, delivered, failed = retrying, given_up)',
    labelNames: ['status'],
    registers: [registry],
  });
  const appWebhooksOldestUndeliveredAge = new Gauge({
    name: 'billing_app_webhooks_oldest_undelivered_age_seconds',
    help: 'Age of the oldest app event not yet delivered (pending or failed); 0 when none',
    registers: [registry],
  });
  return {
    registry,
    notices,
    noticesOverdueAge,
    appWebhooks,
    appWebhooksOldestUndeliveredAge,
    webhooksReceived,
    webhooksRejected,
    webhooksDuplicate,
    webhooksIgnored,
    webhooksFailed,
    webhooksUnavailable,
    ackLatency,
    oldestUndispatchedAge,
    inboxDepth,
    dispatchEvents,
    dispatchSignals,
    dispatchBatchEvents,
    dispatchInFlight,
    dispatchPendingWorkflows,
    dispatchPendingOldestAge,
    dispatchWindow,
    dispatchWindowShrinks,
    dispatchAdmissionWaits,
    dispatchIngestYields,
    dispatchErrors,
    dispatchTemporalUp,
    sweeperStuckRedispatched,
    webhookEventsQuarantined,
    webhookEventsStuck,
    webhookEventsStuckOldestAge,
    dunningCycles,
    dunningRecoveryRate,
    dunningRecoveredByAttempt,
    dunningCyclesByDeclineCode,
    reconciliationDriftFound,
    reconciliationDriftRepaired,
    reconciliationDriftFlagged,
    reconciliationLastSuccess,
    reconciliationLastDuration,
    webhookCreatedToApplied,
    webhookReceivedToApplied,
    checkoutSuccessRate,
    checkoutSessions,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

export interface MetricsScrapeDeps {
  sql: Sql;
  metrics: Metrics;
  ingest: Pick<Ingest, 'inboxDepth' | 'inboxHealth'>;
  config: Pick<Config, 'STUCK_DISPATCH_THRESHOLD_MS' | 'CHECKOUT_SUCCESS_WINDOW_HOURS'>;
  logger: Pick<Logger, 'warn'>;
}

/**
 * Creates the per-process scrape (it keeps the applied-lag position); call it from the /metrics handler
 * before rendering the registry. A failed read leaves that group's previous values and never fails the scrape.
 */
export function createMetricsScrape(deps: MetricsScrapeDeps): () => Promise<void> {
  const appliedLag = createAppliedLagCollector({ sql: deps.sql, metrics: deps.metrics });
  const bounded = (p: Promise<unknown>) => within(SCRAPE_READ_TIMEOUT_MS, p).catch(() => {});
  return async () => {
    // Side by side, each bounded: with Postgres down or slow, the scrape still answers within the
    // bound (Prometheus's own timeout is 10 s), and the process's in-memory series are not lost with it.
    await Promise.all([
      bounded(updateInboxGauges(deps.ingest, deps.metrics, deps.config.STUCK_DISPATCH_THRESHOLD_MS)),
      bounded(appliedLag.collect().catch((err: unknown) => deps.logger.warn({ error: err instanceof Error ? err.message : String(err) }, 'applied-lag scrape failed'))),
      bounded(updateReconciliationGauges(deps.sql, deps.metrics)),
      bounded(updateDunningGauges(deps.sql, deps.metrics)),
      bounded(updateOutboxGauges(deps.sql, deps.metrics)),
      bounded(updateCheckoutGauges(deps.sql, deps.metrics, deps.config.CHECKOUT_SUCCESS_WINDOW_HOURS)),
    ]);
  };
}

/** How long a scrape waits for one group of database-backed gauges before leaving its previous values. */
export const SCRAPE_READ_TIMEOUT_MS = 2000;
