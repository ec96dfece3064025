import { z } from 'zod';
import type { PaymentIntentData } from '../billing-event';
import { defineHandler, IdRefSchema, idOf, lenient, orNull, type EventHandler } from './shared';

/** Stripe's `last_payment_error` (an API error object): the decline data dunning classifies. */
const PaymentErrorSchema = z.looseObject({
  code: z.string().nullish(),
  decline_code: z.string().nullish(),
  advice_code: z.string().nullish(),
  network_decline_code: z.string().nullish(),
});

/** `data.object` of payment_intent.payment_failed and payment_intent.succeeded. */
export const PaymentIntentObjectSchema = z.looseObject({
  id: z.string().min(1),
  customer: IdRefSchema.nullish(),
  status: z.string().nullish(),
  // Present up to 2025-02-24.acacia; basil moved the link to the invoice's payments.
  invoice: IdRefSchema.nullish(),
  last_payment_error: PaymentErrorSchema.nullish(),
  // Read for payment_intent.succeeded only: a malformed value loses the charge, not the event.
  latest_charge: lenient(IdRefSchema),
  amount_received: lenient(z.number().int()),
  currency: lenient(z.string()),
});
type PaymentIntentObject = z.infer<typeof PaymentIntentObjectSchema>;

function intentData(pi: PaymentIntentObject): PaymentIntentData {
  return {
    kind: 'payment_intent',
    paymentIntentId: pi.id,
    status: orNull(pi.status),
    invoiceId: idOf(pi.invoice),
    declineCode: orNull(pi.last_payment_error?.decline_code),
    adviceCode: orNull(pi.last_payment_error?.advice_code),
    networkDeclineCode: orNull(pi.last_payment_error?.network_decline_code),
    failureCode: orNull(pi.last_payment_error?.code),
  };
}

/** payment_intent.payment_failed: decline, advice and network codes from the source. */
export const paymentIntentPaymentFailed: EventHandler = defineHandler(PaymentIntentObjectSchema, (pi) => ({
  customerId: idOf(pi.customer),
  objectId: pi.id,
  data: intentData(pi),
}));

/**
 * payment_intent.succeeded: Stripe clears `last_payment_error` once the intent succeeds, so the decline
 * recorded on its invoice goes too; the charge it settled with (`latest_charge`) is recorded.
 */
export const paymentIntentSucceeded: EventHandler = defineHandler(PaymentIntentObjectSchema, (pi) => ({
  customerId: idOf(pi.customer),
  objectId: pi.id,
  data: {
    ...intentData(pi),
    latestChargeId: idOf(pi.latest_charge),
    amountReceived: orNull(pi.amount_received),
    currency: orNull(pi.currency),
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
