/** Pure comparison of a local subscription row with Stripe's object, and the reconciliation workflow's I/O. */
import type { SubscriptionStatus } from './billing-event';
import type { SubscriptionSnapshot } from './messages';

/** The columns of a local subscription that reconciliation compares. */
export interface LocalSubscriptionRow {
  subscriptionId: string;
  customerId: string;
  status: SubscriptionStatus;
  priceId: string | null;
  /** Unix seconds. */
  currentPeriodEnd: number | null;
  cancelAtPeriodEnd: boolean;
}

/** `existence`: one side does not have the subscription at all. */
export type DriftField = 'existence' | 'status' | 'price' | 'current_period_end' | 'cancel_at_period_end' | 'customer';

/** One mismatching field, values rendered as text for the reconciliation_drift row. */
export interface FieldDrift {
  field: DriftField;
  localValue: string | null;
  stripeValue: string | null;
}

/** The kinds ops reason about; derived from a drift row. */
export type DriftKind =
  | 'missing_locally'
  | 'local_only'
  | 'canceled_in_stripe'
  | 'status'
  | 'plan'
  | 'period'
  | 'cancel_at_period_end'
  | 'customer';

/** Statuses that still grant access: a local one of these while Stripe says canceled is the costly drift. */
const LIVE_STATUSES: readonly string[] = ['trialing', 'active', 'past_due', 'unpaid', 'paused'];

const iso = (s: number | null): string | null => (s === null ? null : new Date(s * 1000).toISOString());

/** Every field on which local and Stripe disagree; empty when they agree (or neither side has it). */
export function diffSubscription(local: LocalSubscriptionRow | null, stripe: SubscriptionSnapshot | null): FieldDrift[] {
  if (!local && !stripe) return [];
  if (!local) return [{ field: 'existence', localValue: null, stripeValue: stripe!.status }];
  if (!stripe) return [{ field: 'existence', localValue: local.status, stripeValue: null }];
  const drift: FieldDrift[] = [];
  const check = (field: DriftField, localValue: string | null, stripeValue: string | null) => {
    if (localValue !== stripeValue) drift.push({ field, localValue, stripeValue });
  };
  check('customer', local.customerId, stripe.customerId);
  check('status', local.status, stripe.status);
  check('price', local.priceId, stripe.priceId);
  check('current_period_end', iso(local.currentPeriodEnd), iso(stripe.currentPeriodEnd));
  check('cancel_at_period_end', String(local.cancelAtPeriodEnd), String(stripe.cancelAtPeriodEnd));
  return drift;
}

/** The kind of one drift row. */
export function driftKind(d: FieldDrift): DriftKind {
  switch (d.field) {
    case 'existence':
      return d.localValue === null ? 'missing_locally' : 'local_only';
    case 'status':
      return d.stripeValue === 'canceled' && d.localValue !== null && LIVE_STATUSES.includes(d.localValue) ? 'canceled_in_stripe' : 'status';
    case 'price':
      return 'plan';
    case 'current_period_end':
      return 'period';
    case 'cancel_at_period_end':
      return 'cancel_at_period_end';
    case 'customer':
      return 'customer';
  }
}

/** A drifted subscription to hand to its customer workflow (snapshot null: Stripe does not know it). */
export interface ReconcileTarget {
  subscriptionId: string;
  /** The customer workflow that owns the repair: Stripe's customer, or the local one for a local-only row. */
  customerId: string;
  snapshot: SubscriptionSnapshot | null;
}

/** Result of scanning one page (of the Stripe list or of the local-only sweep). */
export interface ReconciliationPageResult {
  /** Cursor for the next page; null when this was the last one. */
  nextCursor: string | null;
  /** Subscriptions compared for the first time in this run (0 when a retried page is seen again). */
  newlyScanned: number;
  /** Subscriptions with drift recorded for the first time in this run. */
  newlyDrifted: number;
  /** Everything on this page that needs a repair signal (re-sent on a retried page: repairs are idempotent). */
  targets: ReconcileTarget[];
}

/** The run's counts as stored in reconciliation_runs; drifted/repaired/flagged count subscriptions, not fields. */
export interface ReconciliationCounts {
  scanned: number;
  drifted: number;
  repaired: number;
  flagged: number;
  /** Drifted subscriptions whose repair had not landed when the run finished. */
  pending: number;
}

/** Progress carried over continue-as-new. */
export interface ReconciliationCarry {
  phase: 'stripe_list' | 'local_sweep' | 'undelivered_events';
  cursor: string | null;
  pages: number;
  scanned: number;
  drifted: number;
  /** Unix seconds: the oldest event the undelivered-events phase asks Stripe for (fixed once per run). */
  eventsSince: number | null;
  eventsRecovered: number;
}

/** Input of `reconciliationWorkflow` (workflow id `reconciliation:<suffix>`, also the run id). */
export interface ReconciliationInput {
  trigger?: 'schedule' | 'manual';
  /** Continue-as-new after this many pages (default 50). */
  pagesPerRun?: number;
  /** Stripe list page size, 1..100 (default 100). */
  pageSize?: number;
  /** How long to wait at the end for customer workflows to apply the repairs (default 300). */
  repairWaitSeconds?: number;
  /** Also put events Stripe failed to deliver (last 30 days) into the delivery log (default true). */
  recoverUndeliveredEvents?: boolean;
  carried?: ReconciliationCarry;
}

/** What `reconciliationWorkflow` returns. */
export interface ReconciliationResult extends ReconciliationCounts {
  runId: string;
  status: 'succeeded';
  /** Undelivered events added to the delivery log for the sweeper to dispatch. */
  eventsRecovered: number;
}

/** Result of one page of the undelivered-events phase. */
export interface UndeliveredEventsPageResult {
  nextCursor: string | null;
  listed: number;
  /** Events that were missing from webhook_events and were inserted as 'received'. */
  recovered: number;
}
