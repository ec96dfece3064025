/** Pure rules about subscription state: access levels, invoice status order, watermark comparison. */
import type { SubscriptionStatus } from './billing-event';

export type AccessState = 'none' | 'active' | 'grace' | 'restricted' | 'suspended';

/** What the app should grant for a subscription status (dunning puts past_due customers in grace). */
export function accessStateFor(status: SubscriptionStatus | null): AccessState {
  switch (status) {
    case null:
      return 'none';
    case 'active':
    case 'trialing':
      return 'active';
    case 'past_due':
      return 'grace';
    case 'unpaid':
    case 'paused':
    case 'incomplete':
      return 'restricted';
    case 'canceled':
    case 'incomplete_expired':
      return 'suspended';
  }
}

/** Invoice statuses only move forward; used to break same-second ties between invoice events. */
export function invoiceStatusRank(status: string | null): number {
  switch (status) {
    case 'draft':
      return 0;
    case 'open':
      return 1;
    case 'uncollectible':
      return 2;
    case 'void':
    case 'paid':
      return 3;
    default:
      return 0;
  }
}

/**
 * Subscription statuses for a deterministic last-resort tie-break when two events share a second and
 * Stripe cannot be asked: terminal states win, then states that need payment over healthy ones.
 */
export function subscriptionStatusPrecedence(status: SubscriptionStatus): number {
  switch (status) {
    case 'incomplete':
      return 0;
    case 'trialing':
      return 1;
    case 'active':
      return 2;
    case 'paused':
      return 3;
    case 'past_due':
      return 4;
    case 'unpaid':
      return 5;
    case 'incomplete_expired':
      return 6;
    case 'canceled':
      return 7;
  }
}

export type WatermarkVerdict = 'newer' | 'stale' | 'tie' | 'same_event';

/** Compares an incoming event (created second, id) with the stored watermark. */
export function compareWatermark(
  incoming: { created: number; eventId: string },
  stored: { created: number | null; eventId: string | null },
): WatermarkVerdict {
  if (stored.created === null) return 'newer';
  if (incoming.created > stored.created) return 'newer';
  if (incoming.created < stored.created) return 'stale';
  return incoming.eventId === stored.eventId ? 'same_event' : 'tie';
}
