/**
 * Webhook-to-applied lag, observed at scrape time.
 *
 * Events are applied by the worker, which stamps `webhook_events.applied_at` in the same transaction
 * as the state change. Each /metrics scrape reads the rows applied since the previous scrape and
 * observes `applied_at - stripe_created_at` and `applied_at - received_at` into two histograms, so the
 * series live in the API's registry next to the other webhook metrics and need no worker endpoint.
 *
 * - The first scrape of a process only sets the starting point (database clock): history before it
 *   is not observed, like any counter that starts at process start.
 * - `applied_at` is the apply transaction's start time, so a row can become visible slightly after
 *   a later scrape moved past it: each scrape re-reads the last `overlapSeconds` and skips event ids
 *   it already observed.
 * - Every API replica reads the same table, so each replica observes every applied event: quantiles
 *   (`histogram_quantile` over `rate`) are unaffected, but do not `sum` counts across replicas.
 */
import type { Sql } from '../../lib/db';
import type { Metrics } from './index';

export interface AppliedLagDeps {
  sql: Sql;
  metrics: Pick<Metrics, 'webhookCreatedToApplied' | 'webhookReceivedToApplied'>;
  /** How far back each scrape re-reads for late-committed rows (default 30 s). */
  overlapSeconds?: number;
  /** Upper bound of rows read by one scrape (default 20,000); a backlog continues on the next scrape. */
  maxRowsPerScrape?: number;
}

/** Creates the per-process collector; call `collect()` from the /metrics handler. */
export function createAppliedLagCollector(deps: AppliedLagDeps) {
  const overlapMs = (deps.overlapSeconds ?? 30) * 1000;
  const maxRows = deps.maxRowsPerScrape ?? 20_000;
  /** Rows with applied_at >= lowerBound are read by the next scrape; null before the first scrape. */
  let lowerBound: Date | null = null;
  /** Event ids already observed whose applied_at is still inside the re-read window. */
  const seen = new Map<string, number>();

  return {
    /** Observes events applied since the previous call; returns how many were observed. */
    async collect(): Promise<number> {
      if (lowerBound === null) {
        const [row] = await deps.sql<{ now: Date }[]>`SELECT now() AS now`;
        lowerBound = row!.now;
        return 0;
      }
      const rows = await deps.sql<
        { event_id: string; type: string; applied_at: Date; from_created: number; from_received: number; now: Date }[]
      >`
        SELECT event_id, type, applied_at,
               EXTRACT(EPOCH FROM applied_at - stripe_created_at)::float8 AS from_created,
               EXTRACT(EPOCH FROM applied_at - received_at)::float8 AS from_received,
               now() AS now
        FROM webhook_events
        WHERE applied_at >= ${lowerBound}
        ORDER BY applied_at
        LIMIT ${maxRows}`;
      let observed = 0;
      for (const r of rows) {
        if (seen.has(r.event_id)) continue;
        seen.set(r.event_id, r.applied_at.getTime());
        // Stripe's `created` has 1 s resolution: a sub-second apply can read as slightly negative.
        deps.metrics.webhookCreatedToApplied.observe({ type: r.type }, Math.max(0, r.from_created));
        deps.metrics.webhookReceivedToApplied.observe({ type: r.type }, Math.max(0, r.from_received));
        observed++;
      }
      const last = rows[rows.length - 1];
      if (rows.length >= maxRows && last) {
        // Backlog: continue from the last row read (late commits behind it are not re-read); always
        // move forward, even if a whole batch shares one millisecond.
        lowerBound = new Date(Math.max(last.applied_at.getTime(), lowerBound.getTime() + 1));
      } else {
        const now = last?.now ?? (await deps.sql<{ now: Date }[]>`SELECT now() AS now`)[0]!.now;
        lowerBound = new Date(Math.max(lowerBound.getTime(), now.getTime() - overlapMs));
      }
      const keepFrom = lowerBound.getTime();
      for (const [id, at] of seen) if (at < keepFrom) seen.delete(id);
      return observed;
    },
  };
}

export type AppliedLagCollector = ReturnType<typeof createAppliedLagCollector>;
