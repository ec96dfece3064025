/** The `subscriptions` rows: the reducer's facts, the guarded upsert, and the current subscription. */
import { primaryQuantity, type SubscriptionItem, type SubscriptionStatus, type TrialMissingPaymentMethod } from '../../domain/billing-event';
import type { SubscriptionFact } from '../../domain/billing/state';
import type { TxSql } from '../../lib/db';
import { toTs, toUnix } from './shared';

/** The fields of a subscription that an event or a Stripe read carries. */
export interface SubscriptionWrite {
  subscriptionId: string;
  status: SubscriptionStatus;
  priceId: string | null;
  currentPeriodStart: number | null;
  currentPeriodEnd: number | null;
  cancelAtPeriodEnd: boolean;
  canceledAt: number | null;
  trialEnd: number | null;
  /** Undefined (an older worker's event): the stored items, quantity and trial setting stay. */
  items?: SubscriptionItem[];
  trialMissingPaymentMethod?: TrialMissingPaymentMethod | null;
}

/** The stored subscription's status and watermark, locked for the transaction. */
export async function loadSubscriptionFact(tx: TxSql, subscriptionId: string): Promise<SubscriptionFact | null> {
  const [row] = await tx<{ status: SubscriptionStatus; stripe_updated_at: Date; watermark_event_id: string | null }[]>`
    SELECT status, stripe_updated_at, watermark_event_id FROM subscriptions WHERE id = ${subscriptionId} FOR UPDATE`;
  if (!row) return null;
  return { id: subscriptionId, status: row.status, watermark: { created: toUnix(row.stripe_updated_at) ?? 0, eventId: row.watermark_event_id } };
}

/**
 * Upserts a subscription at a watermark. plan_id follows the price; a scheduled downgrade is cleared once
 * Stripe shows the new plan, a scheduled seat decrease once it shows the new quantity. The WHERE keeps a
 * snapshot read before a newer event from rolling it back.
 */
export async function writeSubscription(tx: TxSql, customerId: string, s: SubscriptionWrite, watermark: { created: number; eventId: string | null }): Promise<void> {
  const items = s.items === undefined ? null : s.items;
  // The primary item is the one whose price is the subscription's (the first): its quantity is the seats.
  const quantity = items === null ? null : (primaryQuantity({ priceId: s.priceId, items }) ?? 1);
  const trialBehavior = s.trialMissingPaymentMethod === undefined ? null : s.trialMissingPaymentMethod;
  await tx`
    INSERT INTO subscriptions (
      id, customer_id, status, plan_id, price_id, current_period_start, current_period_end,
      cancel_at_period_end, canceled_at, trial_end, items, quantity, trial_missing_payment_method,
      stripe_updated_at, watermark_event_id)
    VALUES (
      ${s.subscriptionId}, ${customerId}, ${s.status},
      (SELECT id FROM plans WHERE stripe_price_id = ${s.priceId}), ${s.priceId},
      ${toTs(s.currentPeriodStart)}, ${toTs(s.currentPeriodEnd)}, ${s.cancelAtPeriodEnd},
      ${toTs(s.canceledAt)}, ${toTs(s.trialEnd)},
      ${tx.json((items ?? []) as never)}, COALESCE(${quantity}::int, 1), ${trialBehavior},
      ${toTs(watermark.created)}, ${watermark.eventId})
    ON CONFLICT (id) DO UPDATE SET
      status = excluded.status,
      plan_id = excluded.plan_id,
      price_id = excluded.price_id,
      current_period_start = excluded.current_period_start,
      current_period_end = excluded.current_period_end,
      cancel_at_period_end = excluded.cancel_at_period_end,
      canceled_at = excluded.canceled_at,
      trial_end = excluded.trial_end,
      items = CASE WHEN ${items === null} THEN subscriptions.items ELSE excluded.items END,
      quantity = CASE WHEN ${items === null} THEN subscriptions.quantity ELSE excluded.quantity END,
      trial_missing_payment_method = CASE WHEN ${s.trialMissingPaymentMethod === undefined} THEN subscriptions.trial_missing_payment_method
        ELSE excluded.trial_missing_payment_method END,
      pending_plan_id = CASE
        WHEN subscriptions.pending_plan_id IS NOT DISTINCT FROM excluded.plan_id THEN NULL
        WHEN excluded.status IN ('canceled', 'incomplete_expired') THEN NULL
        ELSE subscriptions.pending_plan_id END,
      pending_plan_effective_at = CASE
        WHEN subscriptions.pending_plan_id IS NOT DISTINCT FROM excluded.plan_id THEN NULL
        WHEN excluded.status IN ('canceled', 'incomplete_expired') THEN NULL
        ELSE subscriptions.pending_plan_effective_at END,
      -- A scheduled seat decrease ends when Stripe shows the new quantity (the renewal) or the subscription ends.
      pending_quantity = CASE
        WHEN ${items !== null} AND subscriptions.pending_quantity = excluded.quantity THEN NULL
        WHEN excluded.status IN ('canceled', 'incomplete_expired') THEN NULL
        ELSE subscriptions.pending_quantity END,
      pending_quantity_effective_at = CASE
        WHEN ${items !== null} AND subscriptions.pending_quantity = excluded.quantity THEN NULL
        WHEN excluded.status IN ('canceled', 'incomplete_expired') THEN NULL
        ELSE subscriptions.pending_quantity_effective_at END,
      needs_review = false,
      review_reason = NULL,
      stripe_updated_at = GREATEST(subscriptions.stripe_updated_at, excluded.stripe_updated_at),
      watermark_event_id = excluded.watermark_event_id,
      updated_at = now()
    -- Never move a subscription to another customer: the row stays with the customer that owns it.
    WHERE subscriptions.stripe_updated_at <= excluded.stripe_updated_at
      AND subscriptions.customer_id = excluded.customer_id`;
}

export { loadCurrentSubscription } from '../../lib/subscriptions';

/**
 * The customer's subscriptions Stripe paused because a trial ended without a payment method (not those
 * paused after a payment failure, which have an invoice to settle: dunning's business), by id.
 */
export async function loadPausedTrialIds(tx: TxSql, customerId: string): Promise<string[]> {
  const rows = await tx<{ id: string }[]>`
    SELECT id FROM subscriptions
    WHERE customer_id = ${customerId} AND status = 'paused' AND trial_missing_payment_method = 'pause' AND trial_end IS NOT NULL
    ORDER BY id`;
  return rows.map((r) => r.id);
}

/** A payment method the customer has locally: its default, else the newest attached one; null when none. */
export async function loadUsablePaymentMethodId(tx: TxSql, customerId: string): Promise<string | null> {
  const [row] = await tx<{ id: string | null }[]>`
    SELECT COALESCE(c.default_payment_method_id,
      (SELECT pm.id FROM payment_methods pm WHERE pm.customer_id = c.id AND pm.attached ORDER BY pm.updated_at DESC, pm.id LIMIT 1)) AS id
    FROM customers c WHERE c.id = ${customerId}`;
  return row?.id ?? null;
}
