/** Reconciliation health read from Postgres, for /metrics and the admin API. */
import type { Sql } from '../lib/db';
import type { Metrics } from './metrics';

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
