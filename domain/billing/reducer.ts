/**
 * The billing reducer: (facts, event) → { verdict, cycle changes, effects }. Pure: no I/O, no clock.
 * Effects follow from transitions of state — an invoice of a live subscription that failed and is
 * unpaid, an invoice that got paid or closed, a subscription that ended — never from whether the
 * apply ran now or earlier. A stale event (older than the stored watermark) changes nothing and
 * yields no effect. The apply transaction writes the rows, the cycle changes and the effects together.
 */
import type { BillingEvent, SubscriptionStatus } from '../billing-event';
import type { SubscriptionSnapshot } from '../messages';
import { compareWatermark, invoiceStatusRank, subscriptionStatusPrecedence } from '../subscription-state';
import { isEndedSubscriptionStatus } from './current-subscription';
import type { Effect, ResumeSubscriptionEffect } from './effects';
import type { BillingSlice, CycleFact } from './state';

export type Verdict = 'applied' | 'stale' | 'tie' | 'noop';

/** A cycle row to open (state 'retrying') or to close (ended now). */
export type CycleChange =
  | { op: 'open'; invoiceId: string; subscriptionId: string; declineCode: string | null; at: number }
  | { op: 'close'; invoiceId: string; state: 'recovered' | 'canceled'; reason: string };

export interface Reduction {
  verdict: Verdict;
  cycles: CycleChange[];
  effects: Effect[];
}

export interface ReduceOptions {
  /** Settle a same-second subscription tie by status precedence (after the Stripe re-fetch failed). */
  tieBreak?: 'precedence';
}

const FAILURE_TYPES = new Set(['invoice.payment_failed', 'invoice.payment_action_required']);
/** The proration invoice of a plan change (`pending_if_incomplete`): its decline is not renewal dunning. */
export const UPGRADE_BILLING_REASON = 'subscription_update';
const CLOSED_INVOICE = new Set(['paid', 'void', 'uncollectible']);

const nothing = (verdict: Verdict): Reduction => ({ verdict, cycles: [], effects: [] });

/** Decides what one normalized event does to the customer's billing state. */
export function reduceBillingEvent(slice: BillingSlice, event: BillingEvent, opts: ReduceOptions = {}): Reduction {
  const d = event.data;
  switch (d.kind) {
    case 'subscription': {
      const verdict = subscriptionVerdict(slice, event.created, event.eventId, d.status, opts);
      if (verdict !== 'applied') return nothing(verdict);
      const ended = d.deleted || isEndedSubscriptionStatus(d.status);
      if (ended) return endCyclesOfSubscription(slice.cycles, d.subscriptionId, event);
      if (event.type === 'customer.subscription.pending_update_expired') return voidExpiredUpgrade(slice.openUpgradeInvoices ?? [], d.subscriptionId);
      if (event.type === 'customer.subscription.trial_will_end' && d.status === 'trialing') return trialEnding(d.subscriptionId, d.trialEnd);
      // A trial ended without a payment method and Stripe paused it, but the customer has one already
      // (its event arrived first): resume. A pause after a payment failure is not this (no trial setting).
      const pausedTrial = d.status === 'paused' && d.trialMissingPaymentMethod === 'pause' && d.trialEnd !== null;
      if (pausedTrial && slice.subscription?.status !== 'paused' && slice.usablePaymentMethodId) {
        return { verdict: 'applied', cycles: [], effects: [resumeSubscription(d.subscriptionId, slice.usablePaymentMethodId)] };
      }
      return nothing('applied');
    }
    case 'invoice': {
      if (event.type === 'invoice.upcoming') return nothing('noop'); // a forecast, not an invoice yet
      const verdict = invoiceVerdict(slice, event.created, d.status);
      if (verdict !== 'applied') return nothing(verdict);
      const cycle = slice.cycles.find((c) => c.invoiceId === d.invoiceId) ?? null;
      if (d.status !== null && CLOSED_INVOICE.has(d.status)) return closeInvoiceCycle(cycle, d.invoiceId, d.status, event);
      if (!FAILURE_TYPES.has(event.type)) return nothing('applied');
      if (d.billingReason === UPGRADE_BILLING_REASON) return upgradeDeclined(cycle, d.invoiceId);
      return invoiceFailed(slice, cycle, event, d.invoiceId, d.subscriptionId ?? slice.invoice?.subscriptionId ?? null, declineOf(event));
    }
    case 'customer': {
      if (slice.customerWatermark !== null && event.created < slice.customerWatermark) return nothing('stale');
      if (!d.defaultPaymentMethodChanged || !d.defaultPaymentMethodId || d.deleted) return nothing('applied');
      return paymentMethodUpdated(slice, d.defaultPaymentMethodId, event);
    }
    case 'payment_method':
      if (d.detached || event.type !== 'payment_method.attached') return nothing('applied');
      return paymentMethodUpdated(slice, d.paymentMethodId, event);
    case 'setup_intent':
      if (event.type !== 'setup_intent.succeeded' || !d.paymentMethodId) return nothing('applied');
      return paymentMethodUpdated(slice, d.paymentMethodId, event);
    case 'payment_intent': {
      // Joined to its invoice by the payload (old versions) or the local invoice row (slice.invoice).
      const invoiceId = d.invoiceId ?? slice.invoice?.id ?? null;
      const cycle = invoiceId ? slice.cycles.find((c) => c.invoiceId === invoiceId && c.open) : undefined;
      // A succeeded intent is a payment, not its invoice paid (invoices take partial payments): invoice.paid ends the cycle.
      if (!cycle || event.type !== 'payment_intent.payment_failed') return nothing('applied');
      return {
        verdict: 'applied',
        cycles: [],
        effects: [
          {
            kind: 'signal_dunning',
            target: cycle.invoiceId,
            invoiceId: cycle.invoiceId,
            event: { kind: 'payment_failed', eventId: event.eventId, declineCode: d.declineCode ?? d.failureCode, adviceCode: d.adviceCode, at: event.created },
          },
        ],
      };
    }
    case 'checkout_session':
    case 'dispute':
    case 'charge':
    case 'charge_refund':
    case 'fraud_warning':
    case 'entitlement_summary': // watermarked by its writer (writeStripeEntitlements)
      // Access follows from the stored disputes and warnings (refreshAccessState); no effect to run.
      return nothing('applied');
  }
}

/** A declined plan change is not renewal dunning: the customer is told; the old plan stays. */
function upgradeDeclined(cycle: CycleFact | null, invoiceId: string): Reduction {
  if (cycle) return nothing('applied'); // opened before this rule existed: it runs its course
  return { verdict: 'applied', cycles: [], effects: [{ kind: 'notify', target: `upgrade_declined:${invoiceId}`, notice: 'upgrade_declined', invoiceId }] };
}

/** Stripe says a trial ends in three days: the customer is told once per trial end (the ledger's dedup key). */
function trialEnding(subscriptionId: string, trialEnd: number | null): Reduction {
  return {
    verdict: 'applied',
    cycles: [],
    effects: [{ kind: 'notify', target: `trial_ending:${subscriptionId}:${trialEnd ?? 'unknown'}`, notice: 'trial_ending', invoiceId: subscriptionId }],
  };
}

/** The payment window of a pending plan change closed: its proration invoice will never be paid. */
function voidExpiredUpgrade(invoiceIds: string[], subscriptionId: string): Reduction {
  return {
    verdict: 'applied',
    cycles: [],
    effects: invoiceIds.map((invoiceId) => ({ kind: 'void_invoice' as const, target: invoiceId, invoiceId, reason: `pending update of ${subscriptionId} expired` })),
  };
}

/** Decides what a subscription object read from Stripe does (a same-second tie, reconciliation). */
export function reduceSubscriptionSnapshot(slice: BillingSlice, snapshot: SubscriptionSnapshot, watermark: number, eventId: string | null): Reduction {
  const stored = slice.subscription?.watermark.created ?? null;
  // The snapshot is the truth at fetch time; only an event applied after the fetch is newer.
  if (stored !== null && watermark < stored) return nothing('stale');
  if (!isEndedSubscriptionStatus(snapshot.status)) return nothing('applied');
  return endCyclesOfSubscription(slice.cycles, snapshot.subscriptionId, { eventId: eventId ?? `refetch:${snapshot.subscriptionId}:${snapshot.fetchedAt}`, created: watermark });
}

function subscriptionVerdict(slice: BillingSlice, created: number, eventId: string, status: SubscriptionStatus, opts: ReduceOptions): Verdict {
  const cur = slice.subscription;
  const verdict = compareWatermark({ created, eventId }, { created: cur?.watermark.created ?? null, eventId: cur?.watermark.eventId ?? null });
  if (verdict === 'stale') return 'stale';
  if (verdict === 'tie' && cur) {
    if (opts.tieBreak !== 'precedence') return 'tie';
    if (subscriptionStatusPrecedence(status) < subscriptionStatusPrecedence(cur.status)) return 'stale';
  }
  return 'applied';
}

/**
 * Invoices: newer wins; in the same second a status never moves backwards (paid beats open); and a
 * finalized invoice never returns to draft at Stripe, so a late invoice.created is stale whatever its second.
 */
function invoiceVerdict(slice: BillingSlice, created: number, status: string | null): Verdict {
  const cur = slice.invoice;
  if (!cur) return 'applied';
  if (status === 'draft' && cur.status !== null && cur.status !== 'draft') return 'stale';
  if (created > cur.watermark.created) return 'applied';
  if (created < cur.watermark.created) return 'stale';
  return invoiceStatusRank(status) >= cur.statusRank ? 'applied' : 'stale';
}

function declineOf(event: BillingEvent): string | null {
  if (event.data.kind !== 'invoice') return null;
  if (event.type === 'invoice.payment_action_required') return 'authentication_required';
  return event.data.declineCode ?? event.data.failureCode;
}

function invoiceFailed(
  slice: BillingSlice,
  cycle: CycleFact | null,
  event: BillingEvent,
  invoiceId: string,
  subscriptionId: string | null,
  declineCode: string | null,
): Reduction {
  // One-off invoices are not dunned; a subscription known to have ended has nothing to recover.
  if (!subscriptionId) return nothing('applied');
  const sub = slice.subscription?.id === subscriptionId ? slice.subscription : null;
  if (sub && isEndedSubscriptionStatus(sub.status)) return nothing('applied');
  const failure = { eventId: event.eventId, declineCode, at: event.created };
  if (cycle) {
    // One cycle per invoice: a later failure joins the open one; a closed cycle is never reopened.
    if (!cycle.open) return nothing('applied');
    return {
      verdict: 'applied',
      cycles: [],
      effects: [{ kind: 'signal_dunning', target: invoiceId, invoiceId, event: { kind: 'payment_failed', ...failure } }],
    };
  }
  return {
    verdict: 'applied',
    cycles: [{ op: 'open', invoiceId, subscriptionId, declineCode, at: event.created }],
    effects: [{ kind: 'start_dunning', target: invoiceId, invoiceId, subscriptionId, failure }],
  };
}

function closeInvoiceCycle(cycle: CycleFact | null, invoiceId: string, status: string, event: BillingEvent): Reduction {
  if (!cycle?.open) return nothing('applied');
  const closed = status === 'void' ? ('voided' as const) : ('uncollectible' as const);
  const reason = status === 'paid' ? ('paid' as const) : closed;
  return {
    verdict: 'applied',
    cycles: [{ op: 'close', invoiceId, state: status === 'paid' ? 'recovered' : 'canceled', reason: `invoice ${reason}` }],
    effects: [
      {
        kind: 'end_dunning',
        target: invoiceId,
        invoiceId,
        reason,
        event:
          status === 'paid'
            ? { kind: 'paid', eventId: event.eventId, at: event.created }
            : { kind: 'invoice_closed', eventId: event.eventId, at: event.created, status: closed },
      },
    ],
  };
}

function endCyclesOfSubscription(cycles: CycleFact[], subscriptionId: string, event: { eventId: string; created: number }): Reduction {
  const ending = cycles.filter((c) => c.open && c.subscriptionId === subscriptionId);
  return {
    verdict: 'applied',
    cycles: ending.map((c) => ({ op: 'close' as const, invoiceId: c.invoiceId, state: 'canceled' as const, reason: `subscription ${subscriptionId} ended` })),
    effects: ending.map((c) => ({
      kind: 'end_dunning' as const,
      target: c.invoiceId,
      invoiceId: c.invoiceId,
      reason: 'subscription_ended' as const,
      event: { kind: 'subscription_ended' as const, eventId: event.eventId, at: event.created },
    })),
  };
}

/** A payment method arrived: open cycles retry with it, subscriptions paused for want of one resume. */
function paymentMethodUpdated(slice: BillingSlice, paymentMethodId: string, event: BillingEvent): Reduction {
  const retries: Effect[] = slice.cycles
    .filter((c) => c.open)
    .map((c) => ({
      kind: 'signal_dunning' as const,
      target: c.invoiceId,
      invoiceId: c.invoiceId,
      event: { kind: 'payment_method_updated' as const, eventId: event.eventId, paymentMethodId, at: event.created },
    }));
  const resumes = (slice.pausedTrialIds ?? []).map((id) => resumeSubscription(id, paymentMethodId));
  return { verdict: 'applied', cycles: [], effects: [...retries, ...resumes] };
}

/** Resumes a paused subscription with a payment method (its Stripe idempotency key names both: once per card). */
function resumeSubscription(subscriptionId: string, paymentMethodId: string | null): ResumeSubscriptionEffect {
  return { kind: 'resume_subscription', target: subscriptionId, subscriptionId, paymentMethodId };
}
