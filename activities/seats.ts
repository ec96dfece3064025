/**
 * Stripe write activities of seat (quantity) changes, on the plan-change building blocks: an increase is
 * updated and invoiced now exactly like an upgrade (the same item, `always_invoice`, `pending_if_incomplete`,
 * the preview's `proration_date`); a decrease is either an immediate update with a credit proration
 * (`create_prorations`) or a Subscription Schedule whose next phase has fewer seats. Idempotency keys are
 * `seat-change:<customer>:<requestId>[:step]`, so a retried activity or request never changes seats twice.
 */
import { ApplicationFailure } from '@temporalio/common';
import type Stripe from 'stripe';
import { SubscriptionStatusSchema } from '../domain/billing-event';
import { seatChangeIdempotencyKey } from '../domain/seats';
import { mapStripeError } from './errors';
import { planItem, scheduleNextPhase, updateAndCollect, type UpdateSubscriptionPlanOutcome } from './plan-change';

export interface SeatStripeDeps {
  stripe: Pick<Stripe, 'subscriptions' | 'subscriptionSchedules' | 'invoicePayments'>;
}

/** Input of updateSubscriptionQuantity (a seat change applied now). */
export interface UpdateSubscriptionQuantityInput {
  customerId: string;
  subscriptionId: string;
  requestId: string;
  /** The plan item is the one on this price (the subscription's); else the first. */
  priceId: string | null;
  quantity: number;
  /** Unix seconds, pinned by the workflow (the preview's) so retries send identical parameters. */
  prorationDate: number;
  /** invoice: charge the prorated difference now (an increase); credit: credit it on the next invoice (a decrease). */
  proration: 'invoice' | 'credit';
}

/** Input of scheduleSubscriptionQuantity (a decrease at the renewal). */
export interface ScheduleQuantityInput {
  customerId: string;
  subscriptionId: string;
  requestId: string;
  priceId: string | null;
  quantity: number;
}

/** Creates the seat-change Stripe activities. */
export function createSeatStripeActivities({ stripe }: SeatStripeDeps) {
  return {
    /**
     * Changes the plan item's quantity now. `invoice`: prorated, invoiced at once and applied only if paid
     * (confirmed / pending / failed, as an upgrade). `credit`: applied at once; the unused seats become a
     * proration credit on the next invoice (confirmed).
     */
    async updateSubscriptionQuantity(input: UpdateSubscriptionQuantityInput): Promise<UpdateSubscriptionPlanOutcome> {
      const idempotencyKey = seatChangeIdempotencyKey(input.customerId, input.requestId);
      try {
        const current = await stripe.subscriptions.retrieve(input.subscriptionId);
        const item = planItem(current, input.priceId);
        // The quantity on the existing item id: naming the item keeps its price (no new item is added).
        const items = [{ id: item.id, quantity: input.quantity }];
        if (input.proration === 'invoice') {
          return await updateAndCollect(
            stripe,
            input.subscriptionId,
            { items, proration_behavior: 'always_invoice', payment_behavior: 'pending_if_incomplete', proration_date: input.prorationDate, expand: ['latest_invoice'] },
            idempotencyKey,
          );
        }
        const sub = await stripe.subscriptions.update(
          input.subscriptionId,
          { items, proration_behavior: 'create_prorations', proration_date: input.prorationDate },
          { idempotencyKey },
        );
        const status = SubscriptionStatusSchema.safeParse(sub.status);
        return { outcome: 'confirmed', subscriptionStatus: status.success ? status.data : null, invoiceId: null, expiresAt: null, paymentStatus: null, declineCode: null };
      } catch (err) {
        if (err instanceof ApplicationFailure) throw err;
        return mapStripeError(err, `change seats of ${input.subscriptionId}`);
      }
    },

    /**
     * A decrease at the renewal: a Subscription Schedule whose next phase has the lower quantity and
     * repeats the current phase's discounts, tax rates, metadata and other items (activities/plan-change.ts).
     */
    async scheduleSubscriptionQuantity(input: ScheduleQuantityInput): Promise<{ scheduleId: string; effectiveAt: number | null }> {
      try {
        return await scheduleNextPhase(stripe, {
          subscriptionId: input.subscriptionId,
          fromPriceId: input.priceId,
          key: (step) => seatChangeIdempotencyKey(input.customerId, input.requestId, step),
          quantity: input.quantity,
          metadata: { seat_change_request_id: input.requestId, seat_change_to_quantity: String(input.quantity) },
        });
      } catch (err) {
        if (err instanceof ApplicationFailure) throw err;
        return mapStripeError(err, `schedule seat decrease of ${input.subscriptionId}`);
      }
    },
  };
}

export type SeatStripeActivities = ReturnType<typeof createSeatStripeActivities>;
