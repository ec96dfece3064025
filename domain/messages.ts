/**
 * The payloads of the signals, queries and updates that the API and the workflows exchange (types
 * only: the Temporal definitions live in workflows/contracts.ts, so domain/ imports nothing from Temporal).
 */
import type { SubscriptionItem, SubscriptionStatus, TrialMissingPaymentMethod } from './billing-event';
import type { LocalSubscription } from './billing/state';

/** A fresh subscription object read from the Stripe API (reconciliation or a same-second tie). */
export interface SubscriptionSnapshot {
  subscriptionId: string;
  customerId: string;
  status: SubscriptionStatus;
  priceId: string | null;
  currentPeriodStart: number | null;
  currentPeriodEnd: number | null;
  cancelAtPeriodEnd: boolean;
  canceledAt: number | null;
  trialEnd: number | null;
  items?: SubscriptionItem[];
  trialMissingPaymentMethod?: TrialMissingPaymentMethod | null;
  /** Unix seconds when it was read from Stripe. */
  fetchedAt: number;
}

/** Reconciliation asks the customer workflow (the single writer) to converge on Stripe's object. */
export interface ReconcileRequest {
  runId: string;
  /** Null means Stripe no longer knows the local subscription: flag it for a human, never delete. */
  subscription: SubscriptionSnapshot | null;
  subscriptionId: string;
}

export interface DunningView {
  invoiceId: string;
  /** A DunningCycleState (domain/dunning-cycle.ts). */
  state: string;
  /** Retries made so far. */
  attempt: number;
  maxAttempts: number;
  /** Unix seconds of the next scheduled retry; null while waiting on the customer or when ended. */
  nextAttemptAt: number | null;
  lastDeclineCode: string | null;
}

export interface PlanChangeView {
  requestId: string;
  fromPlanId: string | null;
  toPlanId: string;
  kind: 'upgrade' | 'downgrade';
  status: 'in_flight' | 'confirmed' | 'pending' | 'scheduled' | 'failed' | 'canceled';
  /** Unix seconds: when a scheduled downgrade takes effect (or an upgrade was prorated). */
  effectiveAt?: number | null;
  /** Unix seconds: a pending upgrade's payment window (Stripe's pending_update.expires_at). */
  expiresAt?: number | null;
  /** The Stripe Subscription Schedule that carries a scheduled downgrade. */
  scheduleId?: string | null;
  invoiceId?: string | null;
  /**
   * A seat change (changeQuantity): the seats before and after; the plan stays (fromPlanId = toPlanId) and
   * kind reads upgrade for an increase, downgrade for a decrease. Absent for plan changes.
   */
  fromQuantity?: number;
  toQuantity?: number;
}

/** What the `state` query returns. */
export interface CustomerWorkflowState {
  customerId: string;
  subscription: LocalSubscription | null;
  dunning: DunningView[];
  planChange: PlanChangeView | null;
  queued: number;
  /** Events set aside by a data error in this workflow's lifetime (listed at /admin/webhook-events?status=quarantined). */
  quarantined?: number;
  applied: number;
  duplicatesDropped: number;
  staleDropped: number;
  lastEventId: string | null;
  recentEventIds: number;
}

export interface ChangePlanRequest {
  planId: string;
  requestId: string;
  /** Unix seconds; the preview's proration date, so the amount charged matches the preview (required for upgrades). */
  prorationDate?: number;
  /** The preview's subscriptionVersion: the change is refused (SubscriptionChanged) if the subscription changed since (required for upgrades). */
  subscriptionVersion?: string;
}

export interface ChangePlanResult {
  requestId: string;
  kind: 'upgrade' | 'downgrade';
  fromPlanId: string | null;
  toPlanId: string;
  /** confirmed: Stripe applied it; pending: awaiting payment; scheduled: at period end; canceled: a scheduled change withdrawn. */
  status: 'confirmed' | 'pending' | 'scheduled' | 'failed' | 'canceled';
  effectiveAt: number | null;
  invoiceId: string | null;
  message: string;
}

/** A seat change (the customer workflow's changeQuantity Update). */
export interface ChangeQuantityRequest {
  /** The new number of seats: the primary item's quantity (1 … MAX_SEATS of domain/seats.ts). */
  quantity: number;
  requestId: string;
  /** Unix seconds; the preview's proration date (required for increases). */
  prorationDate?: number;
  /** The preview's subscriptionVersion (required for increases): refused with SubscriptionChanged if the subscription changed since. */
  subscriptionVersion?: string;
  /** When a decrease takes effect: the API sends its SEAT_DECREASE_AT; absent reads as period_end. */
  decreaseAt?: 'period_end' | 'now';
}

export interface ChangeQuantityResult {
  requestId: string;
  kind: 'increase' | 'decrease';
  subscriptionId: string;
  planId: string | null;
  fromQuantity: number;
  toQuantity: number;
  /** confirmed: Stripe applied it; pending: an increase awaiting payment; scheduled: a decrease at the renewal; failed: payment declined. */
  status: 'confirmed' | 'pending' | 'scheduled' | 'failed';
  /** Unix seconds: the proration date of a change made now, or the renewal of a scheduled decrease. */
  effectiveAt: number | null;
  invoiceId: string | null;
  message: string;
}

export interface CancelSubscriptionRequest {
  atPeriodEnd: boolean;
  requestId: string;
}

export interface SubscriptionActionResult {
  requestId: string;
  status: SubscriptionStatus;
  cancelAtPeriodEnd: boolean;
  message: string;
}

/** Events the customer workflow forwards to a dunning cycle. */
export type DunningEvent =
  | { kind: 'payment_failed'; eventId: string; declineCode: string | null; adviceCode?: string | null; at: number }
  | { kind: 'paid'; eventId: string; at: number }
  | { kind: 'payment_method_updated'; eventId: string; paymentMethodId: string | null; at: number }
  | { kind: 'subscription_ended'; eventId: string; at: number }
  | { kind: 'invoice_closed'; eventId: string; at: number; status: 'voided' | 'uncollectible' };

/**
 * Dunning child → customer workflow: what the cycle did, for the parent (the single writer of the
 * customer's billing rows) to record. Sent after every step; the parent writes it in order.
 */
export interface DunningReport {
  invoiceId: string;
  subscriptionId: string | null;
  /** The failure that opened the cycle (creates the row if the cycle was started outside an event, e.g. by ops). */
  firstDeclineCode: string | null;
  startedAtMs: number;
  state: string;
  attemptsMade: number;
  maxAttempts: number;
  nextAttemptAtMs: number | null;
  lastDeclineCode: string | null;
  /** Stripe's advice code and the network's decline code of the last decline (decline-from-source cycles). */
  lastAdviceCode?: string | null;
  lastNetworkDeclineCode?: string | null;
  /** The invoice's PaymentIntent, learned from its payments: later payment_intent.* events join by it. */
  paymentIntentId?: string | null;
  declineClass: string;
  finalAction: 'cancel' | 'mark_uncollectible' | 'leave_past_due' | null;
  /** Set once: the cycle ended at this time. */
  endedAtMs: number | null;
  /** The off-session retry this report is about, if any. */
  attempt: {
    attempt: number;
    trigger: 'schedule' | 'payment_method' | 'manual';
    outcome: 'succeeded' | 'failed' | 'requires_action' | 'invoice_closed' | 'error';
    declineCode: string | null;
    adviceCode?: string | null;
    atMs: number;
  } | null;
}

/** Input of `dunningWorkflow` (workflow id `dunning:<invoiceId>`). */
export interface DunningWorkflowInput {
  invoiceId: string;
  customerId: string;
  subscriptionId: string | null;
  /** The event that opened the cycle. */
  firstFailure: { eventId: string; declineCode: string | null; at: number };
  /** Overrides the configured policy (tests, demo); otherwise read from configuration by an activity. */
  policyOverride?: {
    retryDaysAfterFailure?: number[];
    finalAction?: 'cancel' | 'mark_uncollectible' | 'leave_past_due';
    noticeMinIntervalMs?: number;
    maxNoticesPerCycle?: number;
  };
  /** Carried over continue-as-new. */
  carried?: unknown;
  /** Tests: continue-as-new once the history reaches this many events instead of waiting for the server's hint. */
  continueAsNewAtHistoryLength?: number;
}

export interface DunningWorkflowResult {
  invoiceId: string;
  outcome: 'recovered' | 'exhausted' | 'canceled';
  attempts: number;
}

