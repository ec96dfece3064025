/** Test doubles and builders for dunning tests: a scripted fake of the Stripe calls dunning makes, and slim events. */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { temporal } from '@temporalio/proto';
import Stripe from 'stripe';
import type { BillingEvent } from '../../domain/billing-event';
import { CUSTOM_SEARCH_ATTRIBUTES } from '../../workflows/contracts';
import { uniqueId } from './services';

/**
 * Registers the project's custom search attributes on the time-skipping test server, which rejects
 * upserts of unknown ones (it implements AddSearchAttributes but not ListSearchAttributes).
 */
export async function registerSearchAttributes(env: TestWorkflowEnvironment): Promise<void> {
  const keyword = temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;
  await env.connection.operatorService.addSearchAttributes({
    namespace: 'default',
    searchAttributes: Object.fromEntries(Object.keys(CUSTOM_SEARCH_ATTRIBUTES).map((name) => [name, keyword])),
  });
}

/** What one `invoices.pay` call does. */
export type PayOutcome = 'succeed' | { decline: string } | { authenticationRequired: true } | 'network_error';

export interface PayCall {
  invoiceId: string;
  params: unknown;
  idempotencyKey: string | undefined;
}

export interface FakeStripe {
  stripe: Stripe;
  payCalls: PayCall[];
  subscriptionCalls: { method: 'cancel' | 'update' | 'retrieve'; params?: unknown; idempotencyKey?: string }[];
  subscription: Record<string, unknown>;
}

/**
 * A fake of exactly the Stripe calls dunning makes. `pay(attempt)` scripts each retry (the attempt
 * number comes from the idempotency key); the subscription follows: past_due until paid, canceled
 * when canceled, collection paused on update.
 */
export function createFakeStripe(opts: {
  customerId: string;
  subscriptionId: string;
  pay: (attempt: number) => PayOutcome;
}): FakeStripe {
  const payCalls: PayCall[] = [];
  const subscriptionCalls: FakeStripe['subscriptionCalls'] = [];
  const nowS = Math.floor(Date.now() / 1000);
  const subscription: Record<string, unknown> = {
    id: opts.subscriptionId,
    object: 'subscription',
    customer: opts.customerId,
    status: 'past_due',
    cancel_at_period_end: false,
    canceled_at: null,
    trial_end: null,
    metadata: {},
    pause_collection: null,
    items: { data: [{ price: { id: 'price_dunning_test' }, current_period_start: nowS, current_period_end: nowS + 30 * 86400 }] },
  };
  const invoices = new Map<string, string>();
  const copy = () => structuredClone(subscription);

  const stripe = {
    invoices: {
      async pay(invoiceId: string, params: unknown, options?: { idempotencyKey?: string }) {
        payCalls.push({ invoiceId, params, idempotencyKey: options?.idempotencyKey });
        const attempt = Number(options?.idempotencyKey?.split(':').pop());
        const outcome = opts.pay(attempt);
        if (outcome === 'succeed') {
          invoices.set(invoiceId, 'paid');
          subscription.status = 'active';
          return { id: invoiceId, object: 'invoice', status: 'paid' };
        }
        if (outcome === 'network_error') {
          throw new Stripe.errors.StripeConnectionError({ message: 'connection reset', type: 'api_error' } as never);
        }
        if ('authenticationRequired' in outcome) {
          throw new Stripe.errors.StripeCardError({
            type: 'card_error',
            code: 'authentication_required',
            decline_code: 'authentication_required',
            message: 'This payment requires authentication.',
          } as never);
        }
        throw new Stripe.errors.StripeCardError({
          type: 'card_error',
          code: 'card_declined',
          decline_code: outcome.decline,
          message: 'Your card was declined.',
        } as never);
      },
      async retrieve(invoiceId: string) {
        return { id: invoiceId, object: 'invoice', status: invoices.get(invoiceId) ?? 'open', hosted_invoice_url: `https://invoice.example.test/${invoiceId}` };
      },
    },
    subscriptions: {
      async retrieve() {
        subscriptionCalls.push({ method: 'retrieve' });
        return copy();
      },
      async cancel(_id: string, params: unknown, options?: { idempotencyKey?: string }) {
        subscriptionCalls.push({ method: 'cancel', params, idempotencyKey: options?.idempotencyKey });
        subscription.status = 'canceled';
        subscription.canceled_at = Math.floor(Date.now() / 1000);
        return copy();
      },
      async update(_id: string, params: { metadata?: Record<string, string>; pause_collection?: unknown }, options?: { idempotencyKey?: string }) {
        subscriptionCalls.push({ method: 'update', params, idempotencyKey: options?.idempotencyKey });
        if (params.metadata) subscription.metadata = { ...(subscription.metadata as object), ...params.metadata };
        if (params.pause_collection !== undefined) subscription.pause_collection = params.pause_collection;
        return copy();
      },
    },
  };
  return { stripe: stripe as unknown as Stripe, payCalls, subscriptionCalls, subscription };
}

/** Ids for one test's customer, subscription and invoice. */
export function dunningIds() {
  const id = uniqueId();
  return { customerId: `cus_${id}`, subscriptionId: `sub_${id}`, invoiceId: `in_${id}` };
}

/** A slim subscription event as the webhook normalizer would produce it. */
export function subscriptionEvent(input: {
  customerId: string;
  subscriptionId: string;
  status: 'active' | 'past_due' | 'canceled';
  created: number;
}): BillingEvent {
  return {
    eventId: `evt_${uniqueId()}`,
    type: 'customer.subscription.created',
    created: input.created,
    customerId: input.customerId,
    objectId: input.subscriptionId,
    livemode: false,
    data: {
      kind: 'subscription',
      subscriptionId: input.subscriptionId,
      status: input.status,
      priceId: 'price_dunning_test',
      currentPeriodStart: input.created,
      currentPeriodEnd: input.created + 30 * 86400,
      cancelAtPeriodEnd: false,
      canceledAt: null,
      trialEnd: null,
      deleted: false,
    },
  };
}

/** A slim invoice event (payment_failed or paid). */
export function invoiceEvent(input: {
  type: 'invoice.payment_failed' | 'invoice.paid';
  customerId: string;
  subscriptionId: string;
  invoiceId: string;
  declineCode?: string | null;
  created: number;
  eventId?: string;
}): BillingEvent {
  const failed = input.type === 'invoice.payment_failed';
  return {
    eventId: input.eventId ?? `evt_${uniqueId()}`,
    type: input.type,
    created: input.created,
    customerId: input.customerId,
    objectId: input.invoiceId,
    livemode: false,
    data: {
      kind: 'invoice',
      invoiceId: input.invoiceId,
      subscriptionId: input.subscriptionId,
      status: failed ? 'open' : 'paid',
      amountDue: 2000,
      amountPaid: failed ? 0 : 2000,
      currency: 'usd',
      attemptCount: 1,
      nextPaymentAttempt: null,
      billingReason: 'subscription_cycle',
      hostedInvoiceUrl: `https://invoice.example.test/${input.invoiceId}`,
      paymentIntentId: null,
      declineCode: failed ? (input.declineCode ?? null) : null,
      failureCode: failed ? 'card_declined' : null,
      periodEnd: input.created,
    },
  };
}
