/** The API's gauges read from Postgres on each /metrics scrape: the work they count happens in the worker (or in Stripe), not in this process. */
import type { Sql } from '../../lib/db';
import { dunningStats } from '../../lib/dunning-stats';
import type { Ingest } from '../ingest';
import { checkoutSuccessRate } from '../routes/checkout';
import type { Metrics } from './index';

/** Sets the inbox gauges (depth, oldest undispatched, quarantined, stuck); each read fails alone. */
export async function updateInboxGauges(
  ingest: Pick<Ingest, 'inboxDepth' | 'inboxHealth'>,
  metrics: Metrics,
  stuckThresholdMs: number,
): Promise<void> {
  const depth = await ingest.inboxDepth().catch(() => null);
  if (depth) {
    metrics.inboxDepth.set(depth.depth);
    metrics.oldestUndispatchedAge.set(depth.oldestAgeSeconds);
  }
  const inbox = await ingest.inboxHealth(stuckThresholdMs).catch(() => null);
  if (inbox) {
    metrics.webhookEventsQuarantined.set(inbox.quarantined);
    metrics.webhookEventsStuck.set(inbox.stuck);
    metrics.webhookEventsStuckOldestAge.set(inbox.stuckOldestAgeSeconds);
  }
}

/** Reconciliation health of the latest successful run. */
export interface ReconciliationStats {
  /** Drifted objects found by the latest successful run (0 when none ran). */
  driftFound: number;
  /** Of those, repaired by the customer workflows so far (counted live, so late repairs show up). */
  driftRepaired: number;
  /** Of those, local-only subscriptions flagged for a human. */
  driftFlagged: number;
  /** Unix seconds when the latest successful run finished; null when none has. */
  lastSuccessAt: number | null;
  /** Wall-clock duration of the latest successful run in seconds; null when none has. */
  lastDurationSeconds: number | null;
}

/** Reads the latest successful run's figures. */
export async function readReconciliationStats(sql: Sql): Promise<ReconciliationStats> {
  const rows = await sql<
    { drifted: number; repaired: number; flagged: number; finished: number; duration: number }[]
  >`
    WITH last AS (
      SELECT id, drifted, started_at, finished_at FROM reconciliation_runs
      WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1)
    SELECT last.drifted,
           EXTRACT(EPOCH FROM last.finished_at)::float8 AS finished,
           EXTRACT(EPOCH FROM last.finished_at - last.started_at)::float8 AS duration,
           (SELECT count(DISTINCT object_id)::int FROM reconciliation_drift d
             WHERE d.run_id = last.id AND d.repair_status = 'repaired') AS repaired,
           (SELECT count(DISTINCT object_id)::int FROM reconciliation_drift d
             WHERE d.run_id = last.id AND d.repair_status = 'flagged') AS flagged
    FROM last`;
  const r = rows[0];
  if (!r) return { driftFound: 0, driftRepaired: 0, driftFlagged: 0, lastSuccessAt: null, lastDurationSeconds: null };
  return {
    driftFound: r.drifted,
    driftRepaired: r.repaired,
    driftFlagged: r.flagged,
    lastSuccessAt: r.finished,
    lastDurationSeconds: r.duration,
  };
}

/** Sets the reconciliation gauges from Postgres (called on each /metrics scrape). */
export async function updateReconciliationGauges(sql: Sql, metrics: Metrics): Promise<void> {
  const s = await readReconciliationStats(sql);
  metrics.reconciliationDriftFound.set(s.driftFound);
  metrics.reconciliationDriftRepaired.set(s.driftRepaired);
  metrics.reconciliationDriftFlagged.set(s.driftFlagged);
  // 0 means "never succeeded": alert on time() - this > 26 h either way.
  metrics.reconciliationLastSuccess.set(s.lastSuccessAt ?? 0);
  metrics.reconciliationLastDuration.set(s.lastDurationSeconds ?? 0);
}

/** Recomputes every dunning gauge; label sets are reset so vanished labels do not linger. */
export async function updateDunningGauges(sql: Sql, metrics: Metrics): Promise<void> {
  const stats = await dunningStats(sql);
  metrics.dunningCycles.reset();
  for (const state of ['started', 'open', 'recovered', 'exhausted', 'canceled'] as const) {
    metrics.dunningCycles.set({ state }, stats[state]);
  }
  metrics.dunningRecoveryRate.reset();
  if (stats.recoveryRate !== null) metrics.dunningRecoveryRate.set(stats.recoveryRate);
  metrics.dunningRecoveredByAttempt.reset();
  for (const [attempt, n] of Object.entries(stats.recoveredByAttempt)) metrics.dunningRecoveredByAttempt.set({ attempt }, n);
  metrics.dunningCyclesByDeclineCode.reset();
  for (const [code, counts] of Object.entries(stats.byDeclineCode)) {
    for (const outcome of ['started', 'recovered', 'exhausted'] as const) {
      metrics.dunningCyclesByDeclineCode.set({ decline_code: code, outcome }, counts[outcome]);
    }
  }
}

/** Recomputes the outbox gauges; label sets are reset so vanished labels do not linger. */
export async function updateOutboxGauges(sql: Sql, metrics: Metrics): Promise<void> {
  const [notices, noticeAge, hooks, hookAge] = await Promise.all([
    sql<{ kind: string; status: string; n: number }[]>`SELECT kind, status, count(*)::int AS n FROM notifications GROUP BY kind, status`,
    sql<{ age: number | null }[]>`
      SELECT extract(epoch FROM now() - min(COALESCE(due_at, created_at)))::float8 AS age
      FROM notifications WHERE status IN ('queued', 'failed') AND COALESCE(due_at, created_at) < now()`,
    sql<{ status: string; n: number }[]>`SELECT status, count(*)::int AS n FROM app_webhooks GROUP BY status`,
    sql<{ age: number | null }[]>`
      SELECT extract(epoch FROM now() - min(created_at))::float8 AS age FROM app_webhooks WHERE status IN ('pending', 'failed')`,
  ]);
  metrics.notices.reset();
  for (const r of notices) metrics.notices.set({ kind: r.kind, status: r.status }, r.n);
  metrics.noticesOverdueAge.set(Math.max(0, noticeAge[0]?.age ?? 0));
  metrics.appWebhooks.reset();
  for (const r of hooks) metrics.appWebhooks.set({ status: r.status }, r.n);
  metrics.appWebhooksOldestUndeliveredAge.set(Math.max(0, hookAge[0]?.age ?? 0));
}

/** Sets the checkout gauges over the last `windowHours` (NaN success rate while no session has ended). */
export async function updateCheckoutGauges(sql: Sql, metrics: Pick<Metrics, 'checkoutSuccessRate' | 'checkoutSessions'>, windowHours: number): Promise<void> {
  const r = await checkoutSuccessRate(sql, windowHours);
  metrics.checkoutSuccessRate.set(r.successRate ?? Number.NaN);
  metrics.checkoutSessions.set({ outcome: 'completed' }, r.completed);
  metrics.checkoutSessions.set({ outcome: 'expired' }, r.expired);
  metrics.checkoutSessions.set({ outcome: 'open' }, r.open);
}
