/** The customer's current local subscription, as the workflow and the API read it (one query, one rule). */
import type { SubscriptionStatus } from '../domain/billing-event';
import { pickCurrentSubscription } from '../domain/billing/current-subscription';
import type { LocalSubscription } from '../domain/billing/state';
import type { Sql, TxSql } from './db';

const toUnix = (d: Date | null): number | null => (d === null ? null : Math.floor(d.getTime() / 1000));

/** The customer's current local subscription (domain/billing/current-subscription.ts). */
export async function loadCurrentSubscription(tx: TxSql | Sql, customerId: string): Promise<LocalSubscription | null> {
  const rows = await tx<
    {
      id: string;
      status: SubscriptionStatus;
      plan_id: string | null;
      price_id: string | null;
      current_period_end: Date | null;
      cancel_at_period_end: boolean;
      pending_plan_id: string | null;
      quantity: number;
      stripe_updated_at: Date | null;
      updated_at: Date | null;
    }[]
  >`
    SELECT id, status, plan_id, price_id, current_period_end, cancel_at_period_end, pending_plan_id, quantity, stripe_updated_at, updated_at
    FROM subscriptions WHERE customer_id = ${customerId}`;
  const r = pickCurrentSubscription(rows.map((row) => ({ ...row, stripeUpdatedAt: row.stripe_updated_at?.getTime() ?? null, updatedAt: row.updated_at?.getTime() ?? null })));
  if (!r) return null;
  return {
    id: r.id,
    status: r.status,
    planId: r.plan_id,
    priceId: r.price_id,
    currentPeriodEnd: toUnix(r.current_period_end),
    cancelAtPeriodEnd: r.cancel_at_period_end,
    pendingPlanId: r.pending_plan_id,
    quantity: r.quantity,
  };
}
