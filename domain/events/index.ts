import { z } from 'zod';
import { BillingEventSchema, type BillingEvent } from '../billing-event';
import { checkoutSessionCompleted, checkoutSessionExpired } from './checkout-session';
import { chargeDisputeClosed, chargeDisputeCreated, chargeRefunded, chargeSucceeded, radarEarlyFraudWarningCreated } from './charge';
import { customerCreated, customerDeleted, customerUpdated } from './customer';
import { entitlementsActiveEntitlementSummaryUpdated } from './entitlements';
import {
  invoiceCreated,
  invoiceFinalized,
  invoiceMarkedUncollectible,
  invoicePaid,
  invoicePaymentActionRequired,
  invoicePaymentFailed,
  invoicePaymentSucceeded,
  invoiceUpcoming,
  invoiceVoided,
} from './invoice';
import { paymentIntentPaymentFailed, paymentIntentSucceeded, setupIntentSucceeded } from './intents';
import { paymentMethodAttached, paymentMethodDetached } from './payment-method';
import { formatIssues, isRecord, type EventHandler } from './shared';
import {
  customerSubscriptionCreated,
  customerSubscriptionDeleted,
  customerSubscriptionPaused,
  customerSubscriptionPendingUpdateApplied,
  customerSubscriptionPendingUpdateExpired,
  customerSubscriptionResumed,
  customerSubscriptionTrialWillEnd,
  customerSubscriptionUpdated,
} from './subscription';

export { invoiceSubscriptionId, upcomingInvoiceKey } from './invoice';
export type { EventHandler, HandlerContext, HandledObject, HandlerResult } from './shared';

const HANDLERS = {
  'checkout.session.completed': checkoutSessionCompleted,
  'checkout.session.expired': checkoutSessionExpired,
  'customer.created': customerCreated,
  'customer.updated': customerUpdated,
  'customer.deleted': customerDeleted,
  'customer.subscription.created': customerSubscriptionCreated,
  'customer.subscription.updated': customerSubscriptionUpdated,
  'customer.subscription.deleted': customerSubscriptionDeleted,
  'customer.subscription.trial_will_end': customerSubscriptionTrialWillEnd,
  'customer.subscription.paused': customerSubscriptionPaused,
  'customer.subscription.resumed': customerSubscriptionResumed,
  'customer.subscription.pending_update_applied': customerSubscriptionPendingUpdateApplied,
  'customer.subscription.pending_update_expired': customerSubscriptionPendingUpdateExpired,
  'invoice.created': invoiceCreated,
  'invoice.finalized': invoiceFinalized,
  'invoice.paid': invoicePaid,
  'invoice.payment_succeeded': invoicePaymentSucceeded,
  'invoice.payment_failed': invoicePaymentFailed,
  'invoice.payment_action_required': invoicePaymentActionRequired,
  'invoice.upcoming': invoiceUpcoming,
  'invoice.voided': invoiceVoided,
  'invoice.marked_uncollectible': invoiceMarkedUncollectible,
  'payment_intent.payment_failed': paymentIntentPaymentFailed,
  'payment_intent.succeeded': paymentIntentSucceeded,
  'setup_intent.succeeded': setupIntentSucceeded,
  'payment_method.attached': paymentMethodAttached,
  'payment_method.detached': paymentMethodDetached,
  'charge.succeeded': chargeSucceeded,
  'charge.dispute.created': chargeDisputeCreated,
  'charge.refunded': chargeRefunded,
  'charge.dispute.closed': chargeDisputeClosed,
  'radar.early_fraud_warning.created': radarEarlyFraudWarningCreated,
  'entitlements.active_entitlement_summary.updated': entitlementsActiveEntitlementSummaryUpdated,
} as const satisfies Record<string, EventHandler>;

/** A Stripe event type this engine acts on. */
export type HandledEventType = keyof typeof HANDLERS;

/** The Stripe event types `normalizeStripeEvent` handles; every other type is 'ignored'. */
export const HANDLED_EVENT_TYPES: readonly HandledEventType[] = Object.freeze(
  Object.keys(HANDLERS) as HandledEventType[],
);

const handledTypes: ReadonlySet<string> = new Set(HANDLED_EVENT_TYPES);

/** True when `type` is one of `HANDLED_EVENT_TYPES`. */
export function isHandledEventType(type: string): type is HandledEventType {
  // A Set, not `type in HANDLERS`: 'constructor' or '__proto__' must not resolve to Object.prototype members.
  return handledTypes.has(type);
}

/** The `error` of an 'invalid' result whose payload names no customer (e.g. a dispute on an unexpanded charge). */
export const NO_CUSTOMER_ERROR = 'no customer id';

/** Result of normalizing one webhook envelope. */
export type NormalizeResult =
  | { outcome: 'handled'; event: BillingEvent }
  | { outcome: 'ignored'; reason: string; eventId: string; type: string }
  | { outcome: 'invalid'; error: string; eventId: string | null; type: string | null };

/** Options for `normalizeStripeEvent`. */
export interface NormalizeOptions {
  /** Used only when the payload names no customer, e.g. after the caller looked up a disputed charge. */
  fallbackCustomerId?: string | null;
}

const EnvelopeSchema = z.looseObject({
  id: z.string().min(1),
  type: z.string().min(1),
  created: z.number().int(),
  livemode: z.boolean().nullish(),
  data: z.looseObject({
    object: z.looseObject({}),
    previous_attributes: z.looseObject({}).nullish(),
  }),
});

/** Turns a parsed Stripe webhook envelope (any API version) into the slim `BillingEvent`, or says why not. */
export function normalizeStripeEvent(envelope: unknown, options: NormalizeOptions = {}): NormalizeResult {
  const parsed = EnvelopeSchema.safeParse(envelope);
  if (!parsed.success) {
    return {
      outcome: 'invalid',
      error: `malformed event envelope: ${formatIssues(parsed.error)}`,
      eventId: stringField(envelope, 'id'),
      type: stringField(envelope, 'type'),
    };
  }
  const { id: eventId, type, created, livemode, data } = parsed.data;
  if (!isHandledEventType(type)) {
    return { outcome: 'ignored', reason: `unhandled event type ${type}`, eventId, type };
  }

  const handled = HANDLERS[type](data.object, { type, previousAttributes: data.previous_attributes ?? null });
  if (!handled.ok) return { outcome: 'invalid', error: handled.error, eventId, type };

  const customerId = handled.value.customerId ?? (options.fallbackCustomerId || null);
  if (customerId === null) return { outcome: 'invalid', error: NO_CUSTOMER_ERROR, eventId, type };

  const event = BillingEventSchema.safeParse({
    eventId,
    type,
    created,
    customerId,
    objectId: handled.value.objectId,
    livemode: livemode ?? false,
    data: handled.value.data,
  });
  if (!event.success) {
    return { outcome: 'invalid', error: `normalized event rejected: ${formatIssues(event.error)}`, eventId, type };
  }
  return { outcome: 'handled', event: event.data };
}

function stringField(value: unknown, key: string): string | null {
  if (!isRecord(value)) return null;
  const field = value[key];
  return typeof field === 'string' && field !== '' ? field : null;
}
