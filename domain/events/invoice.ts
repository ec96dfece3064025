import { z } from 'zod';
import type { InvoiceData } from '../billing-event';
import { defineHandler, IdRefSchema, idOf, lenient, orNull, TimestampSchema, type EventHandler } from './shared';

const StripeErrorSchema = z.looseObject({
  code: z.string().nullish(),
  decline_code: z.string().nullish(),
});
type StripeError = z.infer<typeof StripeErrorSchema>;

const PaymentIntentRefSchema = z.union([
  z.string(),
  z.looseObject({ id: z.string(), last_payment_error: StripeErrorSchema.nullish() }),
]);
type PaymentIntentRef = z.infer<typeof PaymentIntentRefSchema>;

const ChargeRefSchema = z.union([
  z.string(),
  z.looseObject({
    id: z.string(),
    failure_code: z.string().nullish(),
    outcome: z.looseObject({ type: z.string().nullish(), reason: z.string().nullish() }).nullish(),
  }),
]);
type ChargeRef = z.infer<typeof ChargeRefSchema>;

/** `data.object` of invoice.* events, in 2017-era through 2025+ shapes. */
export const InvoiceObjectSchema = z.looseObject({
  id: z.string().min(1),
  customer: IdRefSchema.nullish(),
  // Up to 2025-02-24.acacia; basil and later moved it under parent.subscription_details.
  subscription: IdRefSchema.nullish(),
  parent: z
    .looseObject({
      subscription_details: z.looseObject({ subscription: IdRefSchema.nullish() }).nullish(),
    })
    .nullish(),
  status: z.string().nullish(),
  amount_due: z.number().int(),
  amount_paid: z.number().int().nullish(),
  paid: z.boolean().nullish(),
  currency: z.string(),
  attempt_count: z.number().int().nullish(),
  next_payment_attempt: TimestampSchema,
  billing_reason: z.string().nullish(),
  hosted_invoice_url: z.string().nullish(),
  period_end: TimestampSchema,
  // Payment and failure details are read opportunistically, for older API versions and API reads with
  // `expand`: a basil+ webhook invoice names no PaymentIntent and carries no decline. Dunning reads the
  // decline from the invoice's payments (activities/dunning.ts fetchInvoiceDecline) and from
  // payment_intent.payment_failed, joined to the invoice locally.
  payment_intent: lenient(PaymentIntentRefSchema),
  payments: lenient(
    z.looseObject({
      data: z.array(z.looseObject({ payment: z.looseObject({ payment_intent: PaymentIntentRefSchema.nullish() }).nullish() })),
    }),
  ),
  charge: lenient(ChargeRefSchema),
  last_finalization_error: lenient(StripeErrorSchema),
  last_payment_error: lenient(StripeErrorSchema),
});
export type InvoiceObject = z.infer<typeof InvoiceObjectSchema>;

/** invoice.upcoming previews an invoice that does not exist yet, so it carries no id. */
const UpcomingInvoiceObjectSchema = InvoiceObjectSchema.extend({ id: z.string().nullish() });
type InvoiceFields = z.infer<typeof UpcomingInvoiceObjectSchema>;

/** Key of an upcoming invoice (it has no Stripe id): `upcoming:<customer>:<subscription or none>`. */
export function upcomingInvoiceKey(customerId: string | null, subscriptionId: string | null): string {
  return `upcoming:${customerId ?? 'unknown'}:${subscriptionId ?? 'none'}`;
}

/** The invoice's subscription id, wherever the payload's API version put it. */
export function invoiceSubscriptionId(invoice: Pick<InvoiceObject, 'subscription' | 'parent'>): string | null {
  return idOf(invoice.parent?.subscription_details?.subscription) ?? idOf(invoice.subscription);
}

function paymentIntents(invoice: InvoiceFields): PaymentIntentRef[] {
  const refs: PaymentIntentRef[] = [];
  if (invoice.payment_intent) refs.push(invoice.payment_intent);
  for (const entry of invoice.payments?.data ?? []) {
    if (entry.payment?.payment_intent) refs.push(entry.payment.payment_intent);
  }
  return refs;
}

function chargeError(charge: ChargeRef | null | undefined): StripeError | null {
  if (!charge || typeof charge === 'string') return null;
  // Radar also fills outcome.reason for charges that went through (e.g. elevated_risk_level).
  const declined = charge.outcome?.type === 'issuer_declined' || charge.outcome?.type === 'blocked';
  return { code: charge.failure_code, decline_code: declined ? charge.outcome?.reason : null };
}

function failureDetails(invoice: InvoiceFields): { declineCode: string | null; failureCode: string | null } {
  const sources: Array<StripeError | null | undefined> = [
    invoice.last_finalization_error,
    invoice.last_payment_error,
    ...paymentIntents(invoice).map((pi) => (typeof pi === 'string' ? null : pi.last_payment_error)),
    chargeError(invoice.charge),
  ];
  const source = sources.find((s) => s?.decline_code || s?.code);
  return { declineCode: source?.decline_code || null, failureCode: source?.code || null };
}

function invoiceData(invoiceId: string, invoice: InvoiceFields): InvoiceData {
  const amountDue = invoice.amount_due;
  return {
    kind: 'invoice',
    invoiceId,
    subscriptionId: invoiceSubscriptionId(invoice),
    status: orNull(invoice.status),
    amountDue,
    // 2017-era invoices predate amount_paid and only say `paid`.
    amountPaid: invoice.amount_paid ?? (invoice.paid === true ? amountDue : 0),
    currency: invoice.currency,
    attemptCount: invoice.attempt_count ?? 0,
    nextPaymentAttempt: orNull(invoice.next_payment_attempt),
    billingReason: orNull(invoice.billing_reason),
    hostedInvoiceUrl: orNull(invoice.hosted_invoice_url),
    paymentIntentId: paymentIntents(invoice).map(idOf).find((id) => id !== null) ?? null,
    ...failureDetails(invoice),
    periodEnd: orNull(invoice.period_end),
  };
}

const invoiceHandler: EventHandler = defineHandler(InvoiceObjectSchema, (invoice) => ({
  customerId: idOf(invoice.customer),
  objectId: invoice.id,
  data: invoiceData(invoice.id, invoice),
}));

/** invoice.created: usually a draft, finalized about an hour later; a late one never moves an invoice back (reducer). */
export const invoiceCreated = invoiceHandler;
/** invoice.finalized */
export const invoiceFinalized = invoiceHandler;
/** invoice.paid: also sent for invoices marked paid out of band. */
export const invoicePaid = invoiceHandler;
/** invoice.payment_succeeded */
export const invoicePaymentSucceeded = invoiceHandler;
/** invoice.payment_failed: decline/failure codes when the payload carries them. */
export const invoicePaymentFailed = invoiceHandler;
/** invoice.payment_action_required: the customer must authenticate (3DS). */
export const invoicePaymentActionRequired = invoiceHandler;
/** invoice.voided: the invoice will never be paid; its cycle ends. */
export const invoiceVoided = invoiceHandler;
/** invoice.marked_uncollectible: written off; its cycle ends (access follows the uncollectible invoice). */
export const invoiceMarkedUncollectible = invoiceHandler;
/** invoice.upcoming: keyed by `upcomingInvoiceKey`, used as both objectId and invoiceId. */
export const invoiceUpcoming: EventHandler = defineHandler(UpcomingInvoiceObjectSchema, (invoice) => {
  const customerId = idOf(invoice.customer);
  const key = upcomingInvoiceKey(customerId, invoiceSubscriptionId(invoice));
  return { customerId, objectId: key, data: invoiceData(key, invoice) };
});
