/**
 * Events for the app: what the billing engine tells the app by signed outgoing webhook (issue 16).
 * Pure: the apply path compares the customer's view before and after a transaction and adds the
 * events its effects imply; the rows are written in that same transaction (app_webhooks) and
 * delivered later, each idempotent by its id, which derives from what produced it (`sourceKey`).
 */
import type { AccessState } from './subscription-state';

export const APP_EVENT_TYPES = [
  'access.changed',
  'subscription.changed',
  'plan_change.completed',
  'plan_change.failed',
  'dunning.started',
  'dunning.recovered',
  'dunning.exhausted',
  'checkout.completed',
] as const;
export type AppEventType = (typeof APP_EVENT_TYPES)[number];

/** One event for the app, before it has an id: `sourceKey` is unique per fact (the id derives from it). */
export interface AppEventDraft {
  sourceKey: string;
  type: AppEventType;
  customerId: string;
  data: Record<string, unknown>;
}

/** The app-visible subscription fields whose change is a `subscription.changed`. */
export interface SubscriptionView {
  id: string;
  status: string;
  planId: string | null;
  cancelAtPeriodEnd: boolean;
  currentPeriodEnd: number | null;
  pendingPlanId: string | null;
  /** Seats: the primary item's quantity. */
  quantity: number;
}

/** What the app sees of a customer: its access state and its current subscription. */
export interface CustomerView {
  accessState: AccessState;
  subscription: SubscriptionView | null;
}

const SUBSCRIPTION_FIELDS = ['status', 'planId', 'cancelAtPeriodEnd', 'currentPeriodEnd', 'pendingPlanId', 'quantity'] as const;

/**
 * The events a change of the customer's view implies: `access.changed` when the access state moved,
 * `subscription.changed` when the current subscription or one of its app-visible fields did.
 * `cause` (an event id, or a unique label) makes the source keys unique per transition.
 */
export function viewTransitions(customerId: string, before: CustomerView, after: CustomerView, cause: string): AppEventDraft[] {
  const out: AppEventDraft[] = [];
  if (before.accessState !== after.accessState) {
    out.push({
      sourceKey: `access.changed:${customerId}:${cause}`,
      type: 'access.changed',
      customerId,
      data: { customerId, accessState: after.accessState, previousAccessState: before.accessState },
    });
  }
  const b = before.subscription;
  const a = after.subscription;
  if (a && (!b || b.id !== a.id || SUBSCRIPTION_FIELDS.some((f) => b[f] !== a[f]))) {
    const previous: Record<string, unknown> = {};
    if (b && b.id === a.id) for (const f of SUBSCRIPTION_FIELDS) if (b[f] !== a[f]) previous[f] = b[f];
    out.push({
      sourceKey: `subscription.changed:${a.id}:${cause}`,
      type: 'subscription.changed',
      customerId,
      data: { customerId, subscription: a, previousAttributes: b && b.id === a.id ? previous : null },
    });
  }
  return out;
}
