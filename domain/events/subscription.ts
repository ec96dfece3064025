import { z } from 'zod';
import { SubscriptionStatusSchema, TrialMissingPaymentMethodSchema } from '../billing-event';
import { defineHandler, IdRefSchema, idOf, orNull, TimestampSchema, type EventHandler } from './shared';

const SubscriptionItemSchema = z.looseObject({
  id: z.string().nullish(),
  price: IdRefSchema.nullish(),
  quantity: z.number().int().min(0).nullish(),
  plan: IdRefSchema.nullish(),
  // 2025+ API versions carry the billing period on each item instead of the subscription.
  current_period_start: TimestampSchema,
  current_period_end: TimestampSchema,
});

/** `data.object` of customer.subscription.* events, in 2017-era through 2025+ shapes. */
export const SubscriptionObjectSchema = z.looseObject({
  id: z.string().min(1),
  customer: IdRefSchema.nullish(),
  status: SubscriptionStatusSchema,
  items: z.looseObject({ data: z.array(SubscriptionItemSchema) }).nullish(),
  plan: IdRefSchema.nullish(),
  current_period_start: TimestampSchema,
  current_period_end: TimestampSchema,
  cancel_at_period_end: z.boolean().nullish(),
  canceled_at: TimestampSchema,
  trial_end: TimestampSchema,
  /** 2017-era: the quantity of the subscription's single plan. */
  quantity: z.number().int().min(0).nullish(),
  trial_settings: z
    .looseObject({ end_behavior: z.looseObject({ missing_payment_method: TrialMissingPaymentMethodSchema.nullish() }).nullish() })
    .nullish(),
});
export type SubscriptionObject = z.infer<typeof SubscriptionObjectSchema>;

function subscriptionHandler(deleted: boolean): EventHandler {
  return defineHandler(SubscriptionObjectSchema, (sub) => {
    const item = sub.items?.data[0];
    const priceId = idOf(item?.price) ?? idOf(item?.plan) ?? idOf(sub.plan);
    const items = (sub.items?.data ?? []).map((i) => ({ id: i.id ?? null, priceId: idOf(i.price) ?? idOf(i.plan), quantity: i.quantity ?? 1 }));
    return {
      customerId: idOf(sub.customer),
      objectId: sub.id,
      data: {
        kind: 'subscription',
        subscriptionId: sub.id,
        // A past_due subscription that dunning marked unpaid reads as unpaid (see domain/dunning-cycle.ts).
        status: sub.status,
        priceId,
        currentPeriodStart: sub.current_period_start ?? orNull(item?.current_period_start),
        currentPeriodEnd: sub.current_period_end ?? orNull(item?.current_period_end),
        cancelAtPeriodEnd: sub.cancel_at_period_end ?? false,
        canceledAt: orNull(sub.canceled_at),
        trialEnd: orNull(sub.trial_end),
        // 2017-era subscriptions without items: one item from the subscription's plan and quantity.
        items: items.length > 0 ? items : priceId ? [{ id: null, priceId, quantity: sub.quantity ?? 1 }] : [],
        trialMissingPaymentMethod: sub.trial_settings?.end_behavior?.missing_payment_method ?? null,
        deleted,
      },
    };
  });
}

/** customer.subscription.created */
export const customerSubscriptionCreated = subscriptionHandler(false);
/** customer.subscription.updated */
export const customerSubscriptionUpdated = subscriptionHandler(false);
/** customer.subscription.deleted: the subscription has ended; `deleted` is true. */
export const customerSubscriptionDeleted = subscriptionHandler(true);
/** customer.subscription.trial_will_end: sent three days before `trial_end`. */
export const customerSubscriptionTrialWillEnd = subscriptionHandler(false);
/** customer.subscription.paused: status is 'paused'. */
export const customerSubscriptionPaused = subscriptionHandler(false);
/** customer.subscription.resumed */
export const customerSubscriptionResumed = subscriptionHandler(false);
/** customer.subscription.pending_update_applied: a `pending_if_incomplete` change was paid and applied. */
export const customerSubscriptionPendingUpdateApplied = subscriptionHandler(false);
/** customer.subscription.pending_update_expired: the change's payment window closed unpaid; the old plan stays. */
export const customerSubscriptionPendingUpdateExpired = subscriptionHandler(false);
