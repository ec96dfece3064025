/** Maps Stripe SDK errors to Temporal retry semantics, keeping the cause. */
import { ApplicationFailure } from '@temporalio/common';
import Stripe from 'stripe';

/** Rethrows a Stripe error as non-retryable (card / invalid request) or retryable (network, 5xx, 429). */
export function mapStripeError(err: unknown, what: string): never {
  if (err instanceof Stripe.errors.StripeError) {
    const detail = `${what}: ${err.type}${err.code ? ` ${err.code}` : ''}${err.decline_code ? ` (${err.decline_code})` : ''}: ${err.message}`;
    const details = [{ code: err.code ?? null, declineCode: err.decline_code ?? null, statusCode: err.statusCode ?? null, requestId: err.requestId ?? null }];
    if (err instanceof Stripe.errors.StripeRateLimitError || err.statusCode === 429) {
      throw ApplicationFailure.create({ message: detail, type: 'StripeRateLimit', details, nextRetryDelay: '2 seconds', cause: err });
    }
    if (
      err instanceof Stripe.errors.StripeCardError ||
      err instanceof Stripe.errors.StripeInvalidRequestError ||
      err instanceof Stripe.errors.StripeAuthenticationError ||
      err instanceof Stripe.errors.StripePermissionError ||
      err instanceof Stripe.errors.StripeIdempotencyError
    ) {
      throw ApplicationFailure.create({ message: detail, type: err.type, nonRetryable: true, details, cause: err });
    }
    throw ApplicationFailure.create({ message: detail, type: err.type, details, cause: err });
  }
  throw err;
}

/** True when a Stripe error says the object does not exist. */
export function isStripeNotFound(err: unknown): boolean {
  return err instanceof Stripe.errors.StripeInvalidRequestError && (err.code === 'resource_missing' || err.statusCode === 404);
}
