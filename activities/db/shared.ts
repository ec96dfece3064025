/** Helpers shared by the billing-row modules: time conversion, the per-customer lock, activity metrics. */
import { Context } from '@temporalio/activity';
import type { TxSql } from '../../lib/db';

export const toTs = (s: number | null): Date | null => (s === null ? null : new Date(s * 1000));
export const toUnix = (d: Date | null): number | null => (d === null ? null : Math.floor(d.getTime() / 1000));

/**
 * Serializes every write of one customer's billing rows (the customer workflow's apply path, an admin
 * repair, a test): read-then-write rules such as the access state cannot interleave.
 */
export async function lockCustomer(tx: TxSql, customerId: string): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`customer:${customerId}`}, 0))`;
}

/** Adds to a counter of the worker's Temporal metrics (exported with the SDK's Prometheus endpoint); no-op outside an activity. */
export function countInActivity(name: string, description: string, value = 1, attrs: Record<string, string> = {}): void {
  try {
    Context.current().metricMeter.createCounter(name, '1', description).add(value, attrs);
  } catch {
    // Called outside an activity (a script or a direct test call): nothing to count into.
  }
}
