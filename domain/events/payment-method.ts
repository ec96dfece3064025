import { z } from 'zod';
import { defineHandler, IdRefSchema, idOf, type EventHandler } from './shared';

/** `data.object` of payment_method.* events; only brand and last4 are ever read from `card`. */
export const PaymentMethodObjectSchema = z.looseObject({
  id: z.string().min(1),
  type: z.string(),
  customer: IdRefSchema.nullish(),
  card: z.looseObject({ brand: z.string().nullish(), last4: z.string().nullish() }).nullish(),
});
export type PaymentMethodObject = z.infer<typeof PaymentMethodObjectSchema>;

function paymentMethodHandler(detached: boolean): EventHandler {
  return defineHandler(PaymentMethodObjectSchema, (pm, context) => ({
    // A detached payment method no longer has a customer; Stripe reports the old one in previous_attributes.
    customerId: idOf(pm.customer) ?? (detached ? idOf(context.previousAttributes?.customer) : null),
    objectId: pm.id,
    data: {
      kind: 'payment_method',
      paymentMethodId: pm.id,
      type: pm.type,
      cardBrand: pm.card?.brand ?? null,
      cardLast4: pm.card?.last4 ?? null,
      detached,
    },
  }));
}

/** payment_method.attached */
export const paymentMethodAttached = paymentMethodHandler(false);
/** payment_method.detached: customer from `data.previous_attributes.customer`. */
export const paymentMethodDetached = paymentMethodHandler(true);
