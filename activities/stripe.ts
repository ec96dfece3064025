/** Stripe read activities used by the customer workflow (writes live with their features). */
import type Stripe from 'stripe';
import { subscriptionSnapshotFromStripe } from '../domain/stripe-objects';
import type { SubscriptionSnapshot } from '../domain/messages';
import { isStripeNotFound, mapStripeError } from './errors';

export interface StripeReadDeps {
  stripe: Pick<Stripe, 'subscriptions'>;
  now?: () => number;
}

/** Creates the Stripe read activities. */
export function createStripeReadActivities({ stripe, now = () => Date.now() }: StripeReadDeps) {
  return {
    /** Reads a subscription from Stripe; null when Stripe does not know it. */
    async fetchSubscription(input: { subscriptionId: string; customerId: string }): Promise<SubscriptionSnapshot | null> {
      try {
        const sub = await stripe.subscriptions.retrieve(input.subscriptionId);
        return subscriptionSnapshotFromStripe(sub, Math.floor(now() / 1000));
      } catch (err) {
        if (isStripeNotFound(err)) return null;
        return mapStripeError(err, `retrieve subscription ${input.subscriptionId}`);
      }
    },
  };
}

export type StripeReadActivities = ReturnType<typeof createStripeReadActivities>;
