/**
 * State contracts of one customer's billing: the local subscription as every reader sees it, and the
 * facts the reducer decides on (the rows an event touches, read under the customer's lock).
 */
import type { SubscriptionStatus } from '../billing-event';

/** The customer's subscription as the app, the API and the workflow see it (one contract). */
export interface LocalSubscription {
  id: string;
  status: SubscriptionStatus;
  planId: string | null;
  priceId: string | null;
  currentPeriodEnd: number | null;
  cancelAtPeriodEnd: boolean;
  pendingPlanId: string | null;
  /** Seats: the primary item's quantity (absent in results recorded before quantities: read as 1). */
  quantity?: number;
}

/** Stripe-time watermark of a stored object: the newest applied event's (created second, id). */
export interface Watermark {
  created: number;
  eventId: string | null;
}

export interface SubscriptionFact {
  id: string;
  status: SubscriptionStatus;
  watermark: Watermark;
}

export interface InvoiceFact {
  id: string;
  subscriptionId: string | null;
  status: string | null;
  statusRank: number;
  watermark: Watermark;
}

export interface CycleFact {
  invoiceId: string;
  subscriptionId: string | null;
  open: boolean;
}

/** What the reducer reads before an event: the touched objects (null when unknown locally) and the cycles. */
export interface BillingSlice {
  customerId: string;
  subscription: SubscriptionFact | null;
  invoice: InvoiceFact | null;
  /** The customer row's watermark (customer events), null when never written from an event. */
  customerWatermark: number | null;
  /** Open proration invoices (billing_reason subscription_update) of the event's subscription. */
  openUpgradeInvoices?: string[];
  /** Events that bring a payment method: the customer's subscriptions paused because a trial ended without one. */
  pausedTrialIds?: string[];
  /** A subscription event that pauses: a payment method the customer has locally (one added before the pause arrived). */
  usablePaymentMethodId?: string | null;
  cycles: CycleFact[];
}
