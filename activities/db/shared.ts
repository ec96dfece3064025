/** Helpers shared by the billing-row modules: time conversion, the per-customer lock. */
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
