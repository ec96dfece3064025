/**
 * The Stripe activities as the workflows call them: one set of options per kind of call. Declines and
 * invalid requests come back non-retryable (activities/errors.ts); network errors, 5xx and 429 retry
 * with backoff. Every write carries an idempotency key from business ids, so each window stays under
 * the 24 h for which Stripe keeps the key.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';

/** Reads (a same-second tie, a cycle mirroring its subscription): a few minutes, then the caller falls back. */
export const stripeReadActivities = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '5 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 6 },
});

/** Writes a person waits for (plan changes through an Update): minutes, then the Update fails visibly. */
export const stripeInteractiveWriteActivities = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '10 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** Background writes (dunning retries, final actions): retried through an outage for most of a day. */
export const stripeBackgroundWriteActivities = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  scheduleToCloseTimeout: '23 hours',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '10 minutes' },
});
