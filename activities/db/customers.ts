/** The `customers` rows: creation, updates from customer events, and the derived access state. */
import type { CustomerData } from '../../domain/billing-event';
import { deriveAccessState } from '../../domain/billing/access';
import type { SubscriptionStatus } from '../../domain/billing-event';
import type { AccessState } from '../../domain/subscription-state';
import type { Sql, TxSql } from '../../lib/db';
import { toTs, toUnix } from './shared';

/** Creates the customer row if it is new. */
export async function ensureCustomer(tx: TxSql, customerId: string): Promise<void> {
  await tx`INSERT INTO customers (id) VALUES (${customerId}) ON CONFLICT (id) DO NOTHING`;
}

/** The customer row's event watermark (unix seconds), null if no customer event was applied yet. */
export async function loadCustomerWatermark(tx: TxSql, customerId: string): Promise<number | null> {
  const [row] = await tx<{ stripe_updated_at: Date | null }[]>`SELECT stripe_updated_at FROM customers WHERE id = ${customerId}`;
  return toUnix(row?.stripe_updated_at ?? null);
}

/** Writes a customer event (the reducer has already ruled out a stale one). */
export async function writeCustomer(tx: TxSql, customerId: string, d: CustomerData, event: { created: number; eventId: string }): Promise<void> {
  await tx`
    UPDATE customers SET
      email = ${d.email}, name = ${d.name}, default_payment_method_id = ${d.defaultPaymentMethodId},
      deleted = ${d.deleted}, timezone = ${d.timezone ?? null}, stripe_updated_at = ${toTs(event.created)}, watermark_event_id = ${event.eventId},
      updated_at = now()
    WHERE id = ${customerId}
      AND (stripe_updated_at IS NULL OR stripe_updated_at <= ${toTs(event.created)})`;
}

/**
 * The facts the access rule reads (domain/billing/access.ts), as columns of a query over `customers c`:
 * `in_dunning`, `disputed`, `written_off` (subscription ids with an uncollectible invoice) and `subs`.
 * Shared with reconciliation, which checks the stored column against the same rule.
 */
export function accessFactColumns(sql: Sql | TxSql) {
  return sql`
    EXISTS (SELECT 1 FROM dunning_cycles dc WHERE dc.customer_id = c.id AND dc.ended_at IS NULL) AS in_dunning,
    (EXISTS (SELECT 1 FROM disputes dp WHERE dp.customer_id = c.id AND dp.status IS DISTINCT FROM 'won' AND dp.status IS DISTINCT FROM 'warning_closed')
     OR EXISTS (SELECT 1 FROM fraud_warnings w WHERE w.customer_id = c.id AND w.actionable
                AND NOT EXISTS (SELECT 1 FROM charges ch WHERE ch.id = w.charge_id AND ch.refunded)
                AND NOT EXISTS (SELECT 1 FROM disputes d2 WHERE d2.charge_id = w.charge_id AND d2.status IN ('won', 'warning_closed')))) AS disputed,
    COALESCE((SELECT array_agg(DISTINCT i.subscription_id) FROM invoices i
              WHERE i.customer_id = c.id AND i.status = 'uncollectible' AND i.subscription_id IS NOT NULL), '{}') AS written_off,
    COALESCE((SELECT json_agg(json_build_object(
                'id', s.id, 'status', s.status,
                'stripeUpdatedAt', floor(extract(epoch FROM s.stripe_updated_at) * 1000),
                'updatedAt', floor(extract(epoch FROM s.updated_at) * 1000)))
              FROM subscriptions s WHERE s.customer_id = c.id), '[]'::json) AS subs`;
}

/** A row of accessFactColumns. */
export interface AccessFactRow {
  in_dunning: boolean;
  disputed: boolean;
  written_off: string[];
  subs: { id: string; status: SubscriptionStatus; stripeUpdatedAt: number | null; updatedAt: number | null }[];
}

/** The access state a row of accessFactColumns implies. */
export function accessOf(row: AccessFactRow): AccessState {
  return deriveAccessState({ subscriptions: row.subs, inDunning: row.in_dunning, disputed: row.disputed, writtenOffSubscriptionIds: row.written_off });
}

/**
 * Sets customers.access_state by the one rule (domain/billing/access.ts). Callers hold the customer's
 * lock (lockCustomer), so the read and the write cannot interleave.
 */
export async function refreshAccessState(tx: TxSql, customerId: string): Promise<void> {
  const [row] = await tx<AccessFactRow[]>`SELECT ${accessFactColumns(tx)} FROM customers c WHERE c.id = ${customerId}`;
  if (!row) return;
  const access = accessOf(row);
  await tx`UPDATE customers SET access_state = ${access}, updated_at = now() WHERE id = ${customerId} AND access_state <> ${access}`;
}
