/**
 * Trials that ended without a payment method. With `trial_settings.end_behavior.missing_payment_method:
 * pause` Stripe pauses the subscription at trial end; once the customer adds a card (the reducer's
 * `resume_subscription` effect) this resumes it, so the first invoice is charged and the subscription
 * becomes active (or past_due, then dunning, if that payment fails). The local rows follow from the
 * webhooks (customer.subscription.resumed / updated), never from here.
 */
import Stripe from 'stripe';
import { isStripeNotFound, mapStripeError } from './errors';

export interface TrialDeps {
  stripe: Pick<Stripe, 'subscriptions'>;
}

export interface ResumeResult {
  /** resumed: the call was made (or replayed by its idempotency key); not_paused: nothing to do; unknown: Stripe does not know the subscription. */
  outcome: 'resumed' | 'not_paused' | 'unknown';
  status: string | null;
}

/** Once per (subscription, card): a redelivered or repeated effect replays the same Stripe request. */
export const resumeKey = (subscriptionId: string, paymentMethodId: string | null) => `resume-paused:${subscriptionId}:${paymentMethodId ?? 'customer-default'}`;

/** Creates the trial activities. */
export function createTrialActivities({ stripe }: TrialDeps) {
  return {
    /**
     * Resumes a paused subscription now (a new period starts and its invoice is charged). The payment method becomes the subscription's default first when it has none, so the
     * invoice is charged to the card the customer just added. A subscription that is not paused (resumed
     * already, canceled) is left alone.
     */
    async resumePausedSubscription(input: { subscriptionId: string; paymentMethodId: string | null }): Promise<ResumeResult> {
      const { subscriptionId, paymentMethodId } = input;
      const key = resumeKey(subscriptionId, paymentMethodId);
      try {
        const sub = await stripe.subscriptions.retrieve(subscriptionId);
        if (sub.status !== 'paused') return { outcome: 'not_paused', status: sub.status };
        if (paymentMethodId && !sub.default_payment_method) {
          await stripe.subscriptions.update(subscriptionId, { default_payment_method: paymentMethodId }, { idempotencyKey: `${key}:default-payment-method` });
        }
        // No parameters: Stripe's defaults are what this wants, and they hold across API versions (the
        // anchor is a string up to 2025-09-30.clover, an object `{ type }` on the pinned dahlia): the
        // anchor resets to now (no proration), and the subscription goes active if the resumption
        // invoice is paid, past_due (then dunning) if it is declined.
        const resumed = await stripe.subscriptions.resume(subscriptionId, {}, { idempotencyKey: key });
        return { outcome: 'resumed', status: resumed.status };
      } catch (err) {
        if (isStripeNotFound(err)) return { outcome: 'unknown', status: null };
        if (err instanceof Stripe.errors.StripeInvalidRequestError) {
          // Resumed or canceled meanwhile (by another card's effect, the Dashboard): nothing left to do.
          const now = await stripe.subscriptions.retrieve(subscriptionId).catch(() => null);
          if (now && now.status !== 'paused') return { outcome: 'not_paused', status: now.status };
        }
        return mapStripeError(err, `resume paused subscription ${subscriptionId}`);
      }
    },
  };
}

export type TrialActivities = ReturnType<typeof createTrialActivities>;
