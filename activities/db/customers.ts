/** The `customers` rows: creation, updates from customer events, and the derived access state. */
import type { CustomerData } from '../../domain/billing-event';
import { pickCurrentSubscription } from '../../domain/billing/current-subscription';
import type { SubscriptionStatus } from '../../domain/billing-event';
import { accessStateFor } from '../../domain/subscription-state';
import type { TxSql } from '../../lib/db';
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
      deleted = ${d.deleted}, stripe_updated_at = ${toTs(event.created)}, watermark_event_id = ${event.eventId},
      updated_at = now()
    WHERE id = ${customerId}
      AND (stripe_updated_at IS NULL OR stripe_updated_at <= ${toTs(event.created)})`;
}

/**
 * Sets customers.access_state from the current subscription, then the documented overrides, strongest last:
 * - 'grace' while a dunning cycle is open (an active or past_due subscription);
 * - 'restricted' while a dispute is open or lost, or an actionable early fraud warning's charge is neither
 *   refunded nor won in a dispute (a won dispute restores access);
 * - 'suspended' while an invoice of that subscription is written off (uncollectible: dunning's
 *   mark_uncollectible final action) until it is paid.
 * Callers hold the customer's lock (lockCustomer), so the read and the write cannot interleave.
 */
export async function refreshAccessState(tx: TxSql, customerId: string): Promise<void> {
  const subs = await tx<{ id: string; status: SubscriptionStatus; stripe_updated_at: Date | null; updated_at: Date | null }[]>`
    SELECT id, status, stripe_updated_at, updated_at FROM subscriptions WHERE customer_id = ${customerId}`;
  const current = pickCurrentSubscription(
    subs.map((s) => ({ ...s, stripeUpdatedAt: s.stripe_updated_at?.getTime() ?? null, updatedAt: s.updated_at?.getTime() ?? null })),
  );
  const [open] = await tx<{ in_dunning: boolean; written_off: boolean; disputed: boolean }[]>`
    SELECT
      EXISTS (SELECT 1 FROM dunning_cycles WHERE customer_id = ${customerId} AND ended_at IS NULL) AS in_dunning,
      (EXISTS (SELECT 1 FROM disputes WHERE customer_id = ${customerId} AND status IS DISTINCT FROM 'won' AND status IS DISTINCT FROM 'warning_closed')
       OR EXISTS (SELECT 1 FROM fraud_warnings w WHERE w.customer_id = ${customerId} AND w.actionable
                  AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.id = w.charge_id AND c.refunded)
                  AND NOT EXISTS (SELECT 1 FROM disputes d WHERE d.charge_id = w.charge_id AND d.status IN ('won', 'warning_closed')))) AS disputed,
      EXISTS (SELECT 1 FROM invoices WHERE customer_id = ${customerId} AND subscription_id = ${current?.id ?? null}
              AND status = 'uncollectible') AS written_off`;
  let access = accessStateFor(current?.status ?? null);
  if (open?.in_dunning && (access === 'active' || access === 'grace')) access = 'grace';
  if (open?.disputed && (access === 'active' || access === 'grace')) access = 'restricted';
  if (open?.written_off && (access === 'active' || access === 'grace' || access === 'restricted')) access = 'suspended';
  await tx`UPDATE customers SET access_state = ${access}, updated_at = now() WHERE id = ${customerId} AND access_state <> ${access}`;
}
