/** Maps Stripe SDK errors raised inside API routes to the JSON error shape. */
import Stripe from 'stripe';
import { ApiError } from './errors';

/** 422 when Stripe refused the request, 503 when it could not be reached or is misconfigured; rethrows the rest. */
export function stripeApiError(err: unknown, what: string): never {
  if (err instanceof ApiError) throw err;
  if (
    err instanceof Stripe.errors.StripeInvalidRequestError ||
    err instanceof Stripe.errors.StripeIdempotencyError ||
    err instanceof Stripe.errors.StripeCardError
  ) {
    throw new ApiError(422, 'stripe_rejected', `${what}: ${err.message}`, { stripeCode: err.code ?? null, requestId: err.requestId ?? null });
  }
  if (err instanceof Stripe.errors.StripeError) {
    throw new ApiError(503, 'stripe_unavailable', `${what}: Stripe did not complete the request (${err.type}); retry with the same requestId`);
  }
  throw err;
}
