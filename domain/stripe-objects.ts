/** Pure mapping of Stripe API objects (old and new API shapes) to the slim types the workflows use. */
import { SubscriptionStatusSchema } from './billing-event';
import type { SubscriptionSnapshot } from './messages';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? Math.trunc(v) : null);
const idOf = (v: unknown): string | null => (typeof v === 'string' ? v : isObj(v) && typeof v.id === 'string' ? v.id : null);

/** First subscription item, if any. */
function firstItem(sub: Obj): Obj | null {
  const items = sub.items;
  if (isObj(items) && Array.isArray(items.data) && isObj(items.data[0])) return items.data[0];
  return null;
}

/** Maps a Stripe subscription object to a snapshot; null if it lacks an id, customer or valid status. */
export function subscriptionSnapshotFromStripe(sub: unknown, fetchedAt: number): SubscriptionSnapshot | null {
  if (!isObj(sub) || typeof sub.id !== 'string') return null;
  const customerId = idOf(sub.customer);
  const status = SubscriptionStatusSchema.safeParse(sub.status);
  if (!customerId || !status.success) return null;
  const item = firstItem(sub);
  const priceId = idOf(item?.price) ?? idOf(item?.plan) ?? idOf(sub.plan);
  return {
    subscriptionId: sub.id,
    customerId,
    status: status.data,
    priceId,
    // Before 2025 the period lived on the subscription; since then on each item.
    currentPeriodStart: num(sub.current_period_start) ?? num(item?.current_period_start),
    currentPeriodEnd: num(sub.current_period_end) ?? num(item?.current_period_end),
    cancelAtPeriodEnd: sub.cancel_at_period_end === true,
    canceledAt: num(sub.canceled_at),
    trialEnd: num(sub.trial_end),
    fetchedAt,
  };
}
