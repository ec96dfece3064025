/**
 * The one "current subscription" rule, shared by the API read model and the customer workflow:
 * a live subscription before an ended one, then the newest by Stripe time, then by local write time,
 * then by id (so two readers never disagree on a tie).
 */
import type { SubscriptionStatus } from '../billing-event';

/** Statuses after which a subscription no longer bills or grants access. */
export const ENDED_SUBSCRIPTION_STATUSES: readonly SubscriptionStatus[] = ['canceled', 'incomplete_expired'];

/** True for canceled and incomplete_expired. */
export const isEndedSubscriptionStatus = (s: SubscriptionStatus | string | null | undefined): boolean =>
  s === 'canceled' || s === 'incomplete_expired';

/** What the rule needs of a subscription row. */
export interface CurrentSubscriptionCandidate {
  id: string;
  status: SubscriptionStatus;
  /** Stripe-side time of the newest applied state (ms or s; only compared with its own kind). */
  stripeUpdatedAt: number | null;
  /** Local write time of the row. */
  updatedAt: number | null;
}

/** Negative when `a` is more current than `b`. */
export function compareCurrentSubscription(a: CurrentSubscriptionCandidate, b: CurrentSubscriptionCandidate): number {
  const liveA = isEndedSubscriptionStatus(a.status) ? 1 : 0;
  const liveB = isEndedSubscriptionStatus(b.status) ? 1 : 0;
  if (liveA !== liveB) return liveA - liveB;
  const byStripe = (b.stripeUpdatedAt ?? -Infinity) - (a.stripeUpdatedAt ?? -Infinity);
  if (byStripe !== 0 && !Number.isNaN(byStripe)) return byStripe;
  const byLocal = (b.updatedAt ?? -Infinity) - (a.updatedAt ?? -Infinity);
  if (byLocal !== 0 && !Number.isNaN(byLocal)) return byLocal;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The customer's current subscription among its rows, or null when it has none. */
export function pickCurrentSubscription<T extends CurrentSubscriptionCandidate>(rows: readonly T[]): T | null {
  let best: T | null = null;
  for (const row of rows) if (best === null || compareCurrentSubscription(row, best) < 0) best = row;
  return best;
}
