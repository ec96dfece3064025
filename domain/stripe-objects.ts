/** Pure mapping of Stripe API objects (old and new API shapes) to the slim types the workflows use. */
import { SubscriptionStatusSchema, TrialMissingPaymentMethodSchema, type TrialMissingPaymentMethod } from './billing-event';
import type { SubscriptionSnapshot } from './messages';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? Math.trunc(v) : null);
const idOf = (v: unknown): string | null => (typeof v === 'string' ? v : isObj(v) && typeof v.id === 'string' ? v.id : null);

/** The subscription's items, in Stripe's order. */
function itemsOf(sub: Obj): Obj[] {
  const items = sub.items;
  return isObj(items) && Array.isArray(items.data) ? items.data.filter(isObj) : [];
}

/** trial_settings.end_behavior.missing_payment_method, when the object says. */
function trialMissingPaymentMethodOf(sub: Obj): TrialMissingPaymentMethod | null {
  const settings = isObj(sub.trial_settings) ? sub.trial_settings : null;
  const behavior = settings && isObj(settings.end_behavior) ? settings.end_behavior.missing_payment_method : null;
  const parsed = TrialMissingPaymentMethodSchema.safeParse(behavior);
  return parsed.success ? parsed.data : null;
}

/** Maps a Stripe subscription object to a snapshot; null if it lacks an id, customer or valid status. */
export function subscriptionSnapshotFromStripe(sub: unknown, fetchedAt: number): SubscriptionSnapshot | null {
  if (!isObj(sub) || typeof sub.id !== 'string') return null;
  const customerId = idOf(sub.customer);
  const status = SubscriptionStatusSchema.safeParse(sub.status);
  if (!customerId || !status.success) return null;
  const all = itemsOf(sub);
  const item = all[0] ?? null;
  const priceId = idOf(item?.price) ?? idOf(item?.plan) ?? idOf(sub.plan);
  const items = all.map((i) => ({ id: typeof i.id === 'string' ? i.id : null, priceId: idOf(i.price) ?? idOf(i.plan), quantity: num(i.quantity) ?? 1 }));
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
    // 2017-era objects without items carry the plan and quantity on the subscription itself.
    items: items.length > 0 ? items : priceId ? [{ id: null, priceId, quantity: num(sub.quantity) ?? 1 }] : [],
    trialMissingPaymentMethod: trialMissingPaymentMethodOf(sub),
    fetchedAt,
  };
}
