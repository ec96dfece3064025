/**
 * Pure rules of reconciliation: a local subscription row against Stripe's object, Stripe invoices
 * against local dunning cycles (and the synthetic invoice events that repair them), the access state
 * the local rows imply, the retired 'mark_unpaid' emulation; and the reconciliation workflow's I/O.
 */
import { BillingEventSchema, primaryQuantity, type BillingEvent, type SubscriptionStatus } from './billing-event';
import { isEndedSubscriptionStatus } from './billing/current-subscription';
import { UPGRADE_BILLING_REASON } from './billing/reducer';
import { DUNNING_FINAL_ACTION_METADATA_KEY } from './dunning-cycle';
import { invoicePaymentFailed } from './events/invoice';
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
  /** Seats: the primary item's quantity (undefined: not compared). */
  quantity?: number;
}

/**
 * `existence`: one side does not have the subscription at all. The last four are not subscription
 * fields: `invoice_without_cycle` and `cycle_invoice_closed` are rows about an invoice (object_type
 * 'invoice'), `access_state` about a customer, `pause_collection` a subscription paused by the retired
 * 'mark_unpaid' final action.
 */
export type DriftField =
  | 'existence'
  | 'status'
  | 'price'
  | 'current_period_end'
  | 'cancel_at_period_end'
  | 'quantity'
  | 'customer'
  | 'invoice_without_cycle'
  | 'cycle_invoice_closed'
  | 'access_state'
  | 'pause_collection';

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
  | 'quantity'
  | 'customer'
  | 'invoice_without_cycle'
  | 'cycle_invoice_closed'
  | 'access_state'
  | 'pause_collection';

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
  const stripeQuantity = primaryQuantity(stripe);
  if (local.quantity !== undefined && stripeQuantity !== null) check('quantity', String(local.quantity), String(stripeQuantity));
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
    case 'quantity':
      return 'quantity';
    case 'customer':
    case 'invoice_without_cycle':
    case 'cycle_invoice_closed':
    case 'access_state':
    case 'pause_collection':
      return d.field;
  }
}

// ---- invoices and dunning cycles ---------------------------------------------------------------

/** The fields of a Stripe invoice (basil+ shape, older ones tolerated) that reconciliation reads. */
export interface StripeInvoiceView {
  id: string;
  customer?: string | { id: string } | null;
  status?: string | null;
  attempt_count?: number | null;
  billing_reason?: string | null;
  created?: number | null;
  livemode?: boolean | null;
  status_transitions?: {
    finalized_at?: number | null;
    paid_at?: number | null;
    voided_at?: number | null;
    marked_uncollectible_at?: number | null;
  } | null;
  /** `subscription` is an object when the list call expanded it (then its status is known). */
  parent?: { subscription_details?: { subscription?: string | { id: string; status?: string | null } | null } | null } | null;
  /** Where API versions before basil put it (emulators still do). */
  subscription?: string | { id: string; status?: string | null } | null;
}

/** The synthetic invoice events reconciliation hands to the customer workflow. */
export type InvoiceRepairType = 'invoice.payment_failed' | 'invoice.paid' | 'invoice.voided' | 'invoice.marked_uncollectible';


/**
 * The subscription of an invoice that should be in dunning: open, attempted at least once, not a plan
 * change's proration invoice, of a subscription that has not ended (judged by Stripe's status when the
 * list expanded it). Null when the invoice is not one.
 */
export function pastDueInvoiceSubscription(invoice: StripeInvoiceView): string | null {
  if (invoice.status !== 'open' || (invoice.attempt_count ?? 0) < 1) return null;
  if (invoice.billing_reason === UPGRADE_BILLING_REASON) return null;
  const sub = invoice.parent?.subscription_details?.subscription ?? invoice.subscription;
  if (!sub) return null;
  if (typeof sub === 'string') return sub;
  return isEndedSubscriptionStatus(sub.status) ? null : sub.id;
}

/** The event that ends a cycle whose invoice Stripe has closed; null while the invoice is still collectible. */
export function closedInvoiceEventType(status: string | null | undefined): Exclude<InvoiceRepairType, 'invoice.payment_failed'> | null {
  switch (status) {
    case 'paid':
      return 'invoice.paid';
    case 'void':
      return 'invoice.voided';
    case 'uncollectible':
      return 'invoice.marked_uncollectible';
    default:
      return null;
  }
}

/**
 * Stripe time of the transition a synthetic event stands for (its `created`, the invoice watermark):
 * paid_at / voided_at / marked_uncollectible_at for a closed invoice (the fetch time if Stripe omits
 * it), and for a failure the finalization (the first attempt follows it; the invoice carries no
 * attempt time), never before the invoice was created.
 */
export function invoiceTransitionTime(invoice: StripeInvoiceView, type: InvoiceRepairType, fetchedAt: number): number {
  const t = invoice.status_transitions;
  switch (type) {
    case 'invoice.payment_failed':
      return Math.max(invoice.created ?? 0, t?.finalized_at ?? 0) || fetchedAt;
    case 'invoice.paid':
      return t?.paid_at ?? fetchedAt;
    case 'invoice.voided':
      return t?.voided_at ?? fetchedAt;
    case 'invoice.marked_uncollectible':
      return t?.marked_uncollectible_at ?? fetchedAt;
  }
}

/** Event id of a reconciliation repair: one per run and invoice, so a re-sent repair is a duplicate. */
export const invoiceRepairEventId = (runId: string, invoiceId: string): string => `recon:${runId}:${invoiceId}`;

/**
 * A normalized invoice event built from the Stripe invoice, as the webhook would have carried it: the
 * customer workflow applies it on its normal path (the reducer opens or ends the invoice's one cycle).
 * Null when the invoice cannot be read as one (no customer, malformed).
 */
export function invoiceRepairEvent(input: { runId: string; invoice: StripeInvoiceView; type: InvoiceRepairType; fetchedAt: number }): BillingEvent | null {
  const { invoice, type } = input;
  // Every invoice.* event type shares one normalizer.
  const handled = invoicePaymentFailed(invoice, { type, previousAttributes: null });
  if (!handled.ok || !handled.value.customerId) return null;
  const event = BillingEventSchema.safeParse({
    eventId: invoiceRepairEventId(input.runId, invoice.id),
    type,
    created: invoiceTransitionTime(invoice, type, input.fetchedAt),
    customerId: handled.value.customerId,
    objectId: handled.value.objectId,
    livemode: invoice.livemode ?? false,
    data: handled.value.data,
  });
  return event.success ? event.data : null;
}

// ---- the retired 'mark_unpaid' final action ------------------------------------------------------

/**
 * True for a live subscription that an earlier dunning version "marked unpaid" by pausing collection
 * with `keep_as_draft` (which Stripe documents as offering the service for free) and tagging
 * `metadata.dunning_final_action`. Reconciliation unsets both.
 */
export function isMarkUnpaidEmulation(sub: { status?: string | null; metadata?: unknown; pause_collection?: unknown }): boolean {
  if (isEndedSubscriptionStatus(sub.status)) return false;
  const metadata = sub.metadata as Record<string, unknown> | null | undefined;
  const pause = sub.pause_collection as { behavior?: unknown } | null | undefined;
  return metadata?.[DUNNING_FINAL_ACTION_METADATA_KEY] === 'mark_unpaid' && pause?.behavior === 'keep_as_draft';
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
  /** Subscriptions still paused by the retired 'mark_unpaid' action (only when the scan was asked to look). */
  undoMarkUnpaid?: string[];
}

/** Result of one page of the open-invoices or open-cycles phase. */
export interface InvoicePageResult {
  nextCursor: string | null;
  /** Invoices (or cycles) looked at on this page. */
  checked: number;
  /** Invoices with drift recorded for the first time in this run. */
  newlyDrifted: number;
  /** Synthetic invoice events for the customer workflows (re-sent on a retried page: deduplicated by event id). */
  events: BillingEvent[];
}

/** Result of one page of the access-state phase. */
export interface AccessStatePageResult {
  nextCursor: string | null;
  /** Customers compared on this page. */
  checked: number;
  /** Customers with an access-state drift recorded (flagged) for the first time in this run. */
  newlyDrifted: number;
}

/**
 * The run's counts as stored in reconciliation_runs. `scanned` counts subscriptions; drifted/repaired/
 * flagged count drifted objects (subscriptions, invoices, customers), not fields.
 */
export interface ReconciliationCounts {
  scanned: number;
  drifted: number;
  repaired: number;
  flagged: number;
  /** Drifted objects whose repair had not landed when the run finished. */
  pending: number;
}

/**
 * Phases of a run, in order. Runs started before the `reconciliation-invoices` patch know only
 * stripe_list, local_sweep and undelivered_events.
 */
export type ReconciliationPhase =
  | 'stripe_list'
  | 'local_sweep'
  | 'open_invoices'
  | 'open_cycles'
  | 'undelivered_events'
  /** After the repairs of the earlier phases landed (or the wait ran out). */
  | 'access_state';

/** Progress carried over continue-as-new. */
export interface ReconciliationCarry {
  phase: ReconciliationPhase;
  cursor: string | null;
  pages: number;
  scanned: number;
  drifted: number;
  /** Unix seconds: the oldest event the undelivered-events phase asks Stripe for (fixed once per run). */
  eventsSince: number | null;
  eventsRecovered: number;
  /** Open Stripe invoices and open local cycles looked at (absent in runs carried from before the patch). */
  invoicesChecked?: number;
  /** Customers whose access state was compared. */
  customersChecked?: number;
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
  /** Open Stripe invoices and open local dunning cycles looked at. */
  invoicesChecked: number;
  /** Customers whose access state was compared with what their reconciled rows imply. */
  customersChecked: number;
}

/** Result of one page of the undelivered-events phase. */
export interface UndeliveredEventsPageResult {
  nextCursor: string | null;
  listed: number;
  /** Events that were missing from webhook_events and were inserted as 'received'. */
  recovered: number;
}
