import { z } from 'zod';
import { defineHandler, IdRefSchema, idOf, orNull, type EventHandler } from './shared';

/** `data.object` of checkout.session.* events. */
export const CheckoutSessionObjectSchema = z.looseObject({
  id: z.string().min(1),
  customer: IdRefSchema.nullish(),
  status: z.string().nullish(),
  mode: z.string(),
  subscription: IdRefSchema.nullish(),
  client_reference_id: z.string().nullish(),
  metadata: z.looseObject({ plan_id: z.string().nullish() }).nullish(),
  payment_status: z.string().nullish(),
});
export type CheckoutSessionObject = z.infer<typeof CheckoutSessionObjectSchema>;

const checkoutSessionHandler: EventHandler = defineHandler(CheckoutSessionObjectSchema, (session) => ({
  customerId: idOf(session.customer),
  objectId: session.id,
  data: {
    kind: 'checkout_session',
    sessionId: session.id,
    status: orNull(session.status),
    mode: session.mode,
    subscriptionId: idOf(session.subscription),
    clientReferenceId: session.client_reference_id || null,
    planId: session.metadata?.plan_id || null,
    paymentStatus: orNull(session.payment_status),
  },
}));

/** checkout.session.completed: `planId` comes from `metadata.plan_id` set when we created the session. */
export const checkoutSessionCompleted = checkoutSessionHandler;
/** checkout.session.expired: sessions without a customer normalize as invalid ("no customer id"). */
export const checkoutSessionExpired = checkoutSessionHandler;
