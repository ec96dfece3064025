/** Sets the dunning gauges from Postgres at scrape time (the cycles run in the worker, not here). */
import type { Sql } from '../lib/db';
import { dunningStats } from '../lib/dunning-stats';
import type { Metrics } from './metrics';

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
