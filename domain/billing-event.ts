/**
 * The slim, normalized event that crosses from the webhook endpoint into the customer workflow.
 * It carries only what the handlers need, never the full Stripe payload (workflow history stays small).
 */
import { z } from 'zod';

export const SUBSCRIPTION_STATUSES = [
  'trialing',
  'active',
  'past_due',
  'canceled',
  'unpaid',
  'incomplete',
  'incomplete_expired',
  'paused',
] as const;
export const SubscriptionStatusSchema = z.enum(SUBSCRIPTION_STATUSES);
export type SubscriptionStatus = z.infer<typeof SubscriptionStatusSchema>;

/** Unix seconds or null. */
const ts = z.number().int().nullable();

/** One subscription item: its Stripe id, price (or 2017-era plan) id and quantity (seats). */
export const SubscriptionItemSchema = z.object({
  id: z.string().nullable(),
  priceId: z.string().nullable(),
  quantity: z.number().int().min(0),
});
export type SubscriptionItem = z.infer<typeof SubscriptionItemSchema>;

/** The seats of a subscription: its primary item's quantity (the item with the subscription's price, else the first); null without items. */
export function primaryQuantity(s: { priceId: string | null; items?: readonly SubscriptionItem[] }): number | null {
  const items = s.items ?? [];
  return (items.find((i) => i.priceId === s.priceId) ?? items[0])?.quantity ?? null;
}

/** trial_settings.end_behavior.missing_payment_method: what Stripe does when a trial ends without a card. */
export const TrialMissingPaymentMethodSchema = z.enum(['cancel', 'pause', 'create_invoice']);
export type TrialMissingPaymentMethod = z.infer<typeof TrialMissingPaymentMethodSchema>;

export const SubscriptionDataSchema = z.object({
  kind: z.literal('subscription'),
  subscriptionId: z.string().min(1),
  status: SubscriptionStatusSchema,
  /** Stripe price id (new API) or plan id (2017-era API); mapped to our plan id by the activity. */
  priceId: z.string().nullable(),
  currentPeriodStart: ts,
  currentPeriodEnd: ts,
  cancelAtPeriodEnd: z.boolean(),
  canceledAt: ts,
  trialEnd: ts,
  /** Every item in Stripe's order (the first is the primary: priceId is its price). Absent in events of older workers. */
  items: z.array(SubscriptionItemSchema).optional(),
  /** How a trial without a payment method ends; null when the payload does not say. Absent in older events. */
  trialMissingPaymentMethod: TrialMissingPaymentMethodSchema.nullable().optional(),
  /** True for customer.subscription.deleted. */
  deleted: z.boolean(),
});
export type SubscriptionData = z.infer<typeof SubscriptionDataSchema>;

export const InvoiceDataSchema = z.object({
  kind: z.literal('invoice'),
  invoiceId: z.string().min(1),
  /** Null for one-off invoices; found at invoice.subscription (old) or parent.subscription_details.subscription (new). */
  subscriptionId: z.string().nullable(),
  status: z.string().nullable(),
  amountDue: z.number().int(),
  amountPaid: z.number().int(),
  currency: z.string(),
  attemptCount: z.number().int(),
  nextPaymentAttempt: ts,
  billingReason: z.string().nullable(),
  hostedInvoiceUrl: z.string().nullable(),
  paymentIntentId: z.string().nullable(),
  /** From last_finalization_error / charge outcome when present; null when the payload does not say. */
  declineCode: z.string().nullable(),
  failureCode: z.string().nullable(),
  periodEnd: ts,
});
export type InvoiceData = z.infer<typeof InvoiceDataSchema>;

export const CustomerDataSchema = z.object({
  kind: z.literal('customer'),
  email: z.string().nullable(),
  name: z.string().nullable(),
  defaultPaymentMethodId: z.string().nullable(),
  deleted: z.boolean(),
  /** IANA timezone from the customer's metadata `timezone` (quiet hours of notices); absent in older events. */
  timezone: z.string().nullable().optional(),
  /** For customer.updated: the previous default payment method if it changed (from data.previous_attributes). */
  previousDefaultPaymentMethodId: z.string().nullable().optional(),
  defaultPaymentMethodChanged: z.boolean(),
});
export type CustomerData = z.infer<typeof CustomerDataSchema>;

export const CheckoutSessionDataSchema = z.object({
  kind: z.literal('checkout_session'),
  sessionId: z.string().min(1),
  status: z.string().nullable(),
  mode: z.string(),
  subscriptionId: z.string().nullable(),
  clientReferenceId: z.string().nullable(),
  /** Our plan id from session metadata (metadata.plan_id), when the session was created by us. */
  planId: z.string().nullable(),
  paymentStatus: z.string().nullable(),
});
export type CheckoutSessionData = z.infer<typeof CheckoutSessionDataSchema>;

export const PaymentMethodDataSchema = z.object({
  kind: z.literal('payment_method'),
  paymentMethodId: z.string().min(1),
  type: z.string(),
  /** Only brand / last4 / expiry: never a full card number. */
  cardBrand: z.string().nullable(),
  cardLast4: z.string().nullable(),
  detached: z.boolean(),
});
export type PaymentMethodData = z.infer<typeof PaymentMethodDataSchema>;

export const DisputeDataSchema = z.object({
  kind: z.literal('dispute'),
  disputeId: z.string().min(1),
  chargeId: z.string().nullable(),
  amount: z.number().int(),
  currency: z.string(),
  reason: z.string().nullable(),
  status: z.string().nullable(),
});
export type DisputeData = z.infer<typeof DisputeDataSchema>;

export const ChargeRefundDataSchema = z.object({
  kind: z.literal('charge_refund'),
  chargeId: z.string().min(1),
  invoiceId: z.string().nullable(),
  amount: z.number().int(),
  amountRefunded: z.number().int(),
  currency: z.string(),
  refunded: z.boolean(),
});
export type ChargeRefundData = z.infer<typeof ChargeRefundDataSchema>;

/** A succeeded charge (charge.succeeded): who paid it, so a later dispute or fraud warning finds its customer locally. */
export const ChargeDataSchema = z.object({
  kind: z.literal('charge'),
  chargeId: z.string().min(1),
  /** Joins the charge to the invoice that recorded the same PaymentIntent. */
  paymentIntentId: z.string().nullable(),
  /** Only from payloads before 2025-03-31.basil, which removed Charge.invoice. */
  invoiceId: z.string().nullable(),
  amount: z.number().int(),
  currency: z.string(),
});
export type ChargeData = z.infer<typeof ChargeDataSchema>;

export const FraudWarningDataSchema = z.object({
  kind: z.literal('fraud_warning'),
  warningId: z.string().min(1),
  chargeId: z.string().nullable(),
  /** Stripe: true when the charge can still be refunded or disputed (worth acting on). */
  actionable: z.boolean(),
  fraudType: z.string().nullable(),
});
export type FraudWarningData = z.infer<typeof FraudWarningDataSchema>;

export const PaymentIntentDataSchema = z.object({
  kind: z.literal('payment_intent'),
  paymentIntentId: z.string().min(1),
  status: z.string().nullable(),
  /** The PaymentIntent's invoice when the payload names it (API versions before basil); else joined locally. */
  invoiceId: z.string().nullable(),
  /** From last_payment_error: the issuer's decline code, Stripe's advice code, the network's raw code. */
  declineCode: z.string().nullable(),
  adviceCode: z.string().nullable(),
  networkDeclineCode: z.string().nullable(),
  failureCode: z.string().nullable(),
  /**
   * payment_intent.succeeded only (optional: events of older workers lack them): the charge it settled
   * with (`latest_charge`) and what it collected.
   */
  latestChargeId: z.string().nullable().optional(),
  amountReceived: z.number().int().nullable().optional(),
  currency: z.string().nullable().optional(),
});
export type PaymentIntentData = z.infer<typeof PaymentIntentDataSchema>;

export const SetupIntentDataSchema = z.object({
  kind: z.literal('setup_intent'),
  setupIntentId: z.string().min(1),
  status: z.string().nullable(),
  /** The payment method the customer just set up (setup_intent.succeeded). */
  paymentMethodId: z.string().nullable(),
});
export type SetupIntentData = z.infer<typeof SetupIntentDataSchema>;

/** Stripe Entitlements (entitlements.active_entitlement_summary.updated): the customer's active lookup keys. */
export const EntitlementSummaryDataSchema = z.object({
  kind: z.literal('entitlement_summary'),
  /** Sorted, distinct. */
  lookupKeys: z.array(z.string().min(1)),
});
export type EntitlementSummaryData = z.infer<typeof EntitlementSummaryDataSchema>;

export const BillingEventDataSchema = z.discriminatedUnion('kind', [
  SubscriptionDataSchema,
  InvoiceDataSchema,
  CustomerDataSchema,
  CheckoutSessionDataSchema,
  PaymentMethodDataSchema,
  DisputeDataSchema,
  ChargeRefundDataSchema,
  ChargeDataSchema,
  PaymentIntentDataSchema,
  SetupIntentDataSchema,
  FraudWarningDataSchema,
  EntitlementSummaryDataSchema,
]);
export type BillingEventData = z.infer<typeof BillingEventDataSchema>;

export const BillingEventSchema = z.object({
  /** Stripe event id: the dedup key everywhere. */
  eventId: z.string().min(1),
  type: z.string().min(1),
  /** Stripe `created` (unix seconds) of the event. */
  created: z.number().int(),
  customerId: z.string().min(1),
  /** The id of the Stripe object the event is about (sub_, in_, cus_, cs_, pm_, dp_, ch_). */
  objectId: z.string().min(1),
  livemode: z.boolean(),
  data: BillingEventDataSchema,
});
export type BillingEvent = z.infer<typeof BillingEventSchema>;
