import { z } from 'zod';
import { defineHandler, IdRefSchema, idOf, orNull, type EventHandler } from './shared';

/** Stripe's `last_payment_error` (an API error object): the decline data dunning classifies. */
const PaymentErrorSchema = z.looseObject({
  code: z.string().nullish(),
  decline_code: z.string().nullish(),
  advice_code: z.string().nullish(),
  network_decline_code: z.string().nullish(),
});

/** `data.object` of payment_intent.payment_failed. */
export const PaymentIntentObjectSchema = z.looseObject({
  id: z.string().min(1),
  customer: IdRefSchema.nullish(),
  status: z.string().nullish(),
  // Present up to 2025-02-24.acacia; basil moved the link to the invoice's payments.
  invoice: IdRefSchema.nullish(),
  last_payment_error: PaymentErrorSchema.nullish(),
});

/** payment_intent.payment_failed: decline, advice and network codes from the source. */
export const paymentIntentPaymentFailed: EventHandler = defineHandler(PaymentIntentObjectSchema, (pi) => ({
  customerId: idOf(pi.customer),
  objectId: pi.id,
  data: {
    kind: 'payment_intent',
    paymentIntentId: pi.id,
    status: orNull(pi.status),
    invoiceId: idOf(pi.invoice),
    declineCode: orNull(pi.last_payment_error?.decline_code),
    adviceCode: orNull(pi.last_payment_error?.advice_code),
    networkDeclineCode: orNull(pi.last_payment_error?.network_decline_code),
    failureCode: orNull(pi.last_payment_error?.code),
  },
}));

/** `data.object` of setup_intent.succeeded. */
export const SetupIntentObjectSchema = z.looseObject({
  id: z.string().min(1),
  customer: IdRefSchema.nullish(),
  status: z.string().nullish(),
  payment_method: IdRefSchema.nullish(),
});

/** setup_intent.succeeded: the customer saved a new payment method (e.g. in the Billing Portal). */
export const setupIntentSucceeded: EventHandler = defineHandler(SetupIntentObjectSchema, (si) => ({
  customerId: idOf(si.customer),
  objectId: si.id,
  data: { kind: 'setup_intent', setupIntentId: si.id, status: orNull(si.status), paymentMethodId: idOf(si.payment_method) },
}));
