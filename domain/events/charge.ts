import { z } from 'zod';
import { defineHandler, IdRefSchema, idOf, lenient, orNull, type EventHandler } from './shared';

/** `data.object` of charge.dispute.created. Disputes name only the charge, not the customer. */
export const DisputeObjectSchema = z.looseObject({
  id: z.string().min(1),
  charge: z.union([z.string(), z.looseObject({ id: z.string(), customer: IdRefSchema.nullish() })]).nullish(),
  amount: z.number().int(),
  currency: z.string(),
  reason: z.string().nullish(),
  status: z.string().nullish(),
});
export type DisputeObject = z.infer<typeof DisputeObjectSchema>;

/** `data.object` of charge.succeeded and charge.refunded. */
export const ChargeObjectSchema = z.looseObject({
  id: z.string().min(1),
  customer: IdRefSchema.nullish(),
  // Removed from Charge in 2025-03-31.basil; present in older payloads.
  invoice: IdRefSchema.nullish(),
  // Since basil the only link from a charge towards its invoice (through the invoice's payments).
  payment_intent: lenient(IdRefSchema),
  amount: z.number().int(),
  amount_refunded: z.number().int(),
  currency: z.string(),
  refunded: z.boolean(),
});
export type ChargeObject = z.infer<typeof ChargeObjectSchema>;

/** charge.dispute.created: the customer is known only if `charge` is expanded (else the caller supplies it). */
export const chargeDisputeCreated: EventHandler = defineHandler(DisputeObjectSchema, (dispute) => ({
  customerId: typeof dispute.charge === 'object' && dispute.charge !== null ? idOf(dispute.charge.customer) : null,
  objectId: dispute.id,
  data: {
    kind: 'dispute',
    disputeId: dispute.id,
    chargeId: idOf(dispute.charge),
    amount: dispute.amount,
    currency: dispute.currency,
    reason: orNull(dispute.reason),
    status: orNull(dispute.status),
  },
}));

/** charge.dispute.closed: won, lost or warning_closed; access follows (see activities/db/customers.ts). */
export const chargeDisputeClosed: EventHandler = chargeDisputeCreated;

/** `data.object` of radar.early_fraud_warning.created: names the charge, not the customer. */
export const EarlyFraudWarningObjectSchema = z.looseObject({
  id: z.string().min(1),
  charge: z.union([z.string(), z.looseObject({ id: z.string(), customer: IdRefSchema.nullish() })]),
  actionable: z.boolean(),
  fraud_type: z.string().nullish(),
});

/** radar.early_fraud_warning.created: an issuer reported the charge as fraudulent; a dispute often follows. */
export const radarEarlyFraudWarningCreated: EventHandler = defineHandler(EarlyFraudWarningObjectSchema, (w) => ({
  customerId: typeof w.charge === 'object' ? idOf(w.charge.customer) : null,
  objectId: w.id,
  data: { kind: 'fraud_warning', warningId: w.id, chargeId: idOf(w.charge), actionable: w.actionable, fraudType: orNull(w.fraud_type) },
}));

/** charge.succeeded: records who paid the charge, so its dispute or early fraud warning needs no Stripe lookup. */
export const chargeSucceeded: EventHandler = defineHandler(ChargeObjectSchema, (charge) => ({
  customerId: idOf(charge.customer),
  objectId: charge.id,
  data: {
    kind: 'charge',
    chargeId: charge.id,
    paymentIntentId: idOf(charge.payment_intent),
    invoiceId: idOf(charge.invoice),
    amount: charge.amount,
    currency: charge.currency,
  },
}));

/** charge.refunded: `invoiceId` only from pre-basil payloads that still carry `charge.invoice`. */
export const chargeRefunded: EventHandler = defineHandler(ChargeObjectSchema, (charge) => ({
  customerId: idOf(charge.customer),
  objectId: charge.id,
  data: {
    kind: 'charge_refund',
    chargeId: charge.id,
    invoiceId: idOf(charge.invoice),
    amount: charge.amount,
    amountRefunded: charge.amount_refunded,
    currency: charge.currency,
    refunded: charge.refunded,
  },
}));
