/** Test doubles and builders for dunning tests: a scripted fake of the Stripe calls dunning makes, and slim events. */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { temporal } from '@temporalio/proto';
import Stripe from 'stripe';
import type { BillingEvent } from '../../domain/billing-event';
import { CUSTOM_SEARCH_ATTRIBUTES } from '../../workflows/contracts';
import { slimSubscriptionEvent } from './customer-events';
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
export type PayOutcome = 'succeed' | { decline: string; advice?: string } | { authenticationRequired: true } | 'network_error';

/** The decline Stripe holds for the invoice's failed payment (its PaymentIntent's last_payment_error). */
export interface SourceDecline {
  declineCode: string | null;
  adviceCode?: string | null;
  networkDeclineCode?: string | null;
}

export interface PayCall {
  invoiceId: string;
  params: unknown;
  idempotencyKey: string | undefined;
}

export interface FakeStripe {
  stripe: Stripe;
  payCalls: PayCall[];
  subscriptionCalls: { method: 'cancel' | 'update' | 'retrieve' | 'resume'; params?: unknown; idempotencyKey?: string }[];
  /** invoices.markUncollectible / voidInvoice / invoicePayments.list calls. */
  invoiceCalls: { method: 'markUncollectible' | 'voidInvoice' | 'listPayments'; invoiceId: string; params?: unknown; idempotencyKey?: string }[];
  subscription: Record<string, unknown>;
  /** Changes the invoice's status at Stripe out of band (a void or payment no webhook has told about). */
  setInvoiceStatus(invoiceId: string, status: 'open' | 'paid' | 'void' | 'uncollectible'): void;
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
  /** What `invoicePayments.list` reveals about the failed payment; none by default. */
  sourceDecline?: SourceDecline;
}): FakeStripe {
  const payCalls: PayCall[] = [];
  const invoiceCalls: FakeStripe['invoiceCalls'] = [];
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
          ...(outcome.advice ? { advice_code: outcome.advice } : {}),
          message: 'Your card was declined.',
        } as never);
      },
      async markUncollectible(invoiceId: string, params: unknown, options?: { idempotencyKey?: string }) {
        invoiceCalls.push({ method: 'markUncollectible', invoiceId, params, idempotencyKey: options?.idempotencyKey });
        invoices.set(invoiceId, 'uncollectible');
        return { id: invoiceId, object: 'invoice', status: 'uncollectible' };
      },
      async voidInvoice(invoiceId: string, params: unknown, options?: { idempotencyKey?: string }) {
        invoiceCalls.push({ method: 'voidInvoice', invoiceId, params, idempotencyKey: options?.idempotencyKey });
        invoices.set(invoiceId, 'void');
        return { id: invoiceId, object: 'invoice', status: 'void' };
      },
      async retrieve(invoiceId: string) {
        return { id: invoiceId, object: 'invoice', status: invoices.get(invoiceId) ?? 'open', hosted_invoice_url: `https://invoice.example.test/${invoiceId}` };
      },
    },
    invoicePayments: {
      async list(params: { invoice: string; expand?: string[] }) {
        invoiceCalls.push({ method: 'listPayments', invoiceId: params.invoice, params });
        const d = opts.sourceDecline;
        if (!d) return { object: 'list', data: [], has_more: false };
        return {
          object: 'list',
          has_more: false,
          data: [
            {
              id: `inpay_${params.invoice}`,
              object: 'invoice_payment',
              created: Math.floor(Date.now() / 1000),
              invoice: params.invoice,
              status: 'open',
              payment: {
                type: 'payment_intent',
                payment_intent: {
                  id: `pi_${params.invoice}`,
                  object: 'payment_intent',
                  status: 'requires_payment_method',
                  last_payment_error: {
                    type: 'card_error',
                    code: 'card_declined',
                    decline_code: d.declineCode,
                    advice_code: d.adviceCode ?? null,
                    network_decline_code: d.networkDeclineCode ?? null,
                  },
                },
              },
            },
          ],
        };
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
      async update(_id: string, params: { metadata?: Record<string, string>; default_payment_method?: string }, options?: { idempotencyKey?: string }) {
        subscriptionCalls.push({ method: 'update', params, idempotencyKey: options?.idempotencyKey });
        if (params.metadata) subscription.metadata = { ...(subscription.metadata as object), ...params.metadata };
        if (params.default_payment_method !== undefined) subscription.default_payment_method = params.default_payment_method;
        return copy();
      },
      /** A paused subscription resumes; anything else is refused as Stripe does. */
      async resume(_id: string, params: unknown, options?: { idempotencyKey?: string }) {
        subscriptionCalls.push({ method: 'resume', params, idempotencyKey: options?.idempotencyKey });
        if (subscription.status !== 'paused') {
          throw new Stripe.errors.StripeInvalidRequestError({ type: 'invalid_request_error', message: 'Only paused subscriptions can be resumed.' } as never);
        }
        subscription.status = 'active';
        return copy();
      },
    },
  };
  return {
    stripe: stripe as unknown as Stripe,
    payCalls,
    subscriptionCalls,
    invoiceCalls,
    subscription,
    setInvoiceStatus: (invoiceId, status) => void invoices.set(invoiceId, status),
  };
}

/** Ids for one test's customer, subscription and invoice. */
export function dunningIds() {
  const id = uniqueId();
  return { customerId: `cus_${id}`, subscriptionId: `sub_${id}`, invoiceId: `in_${id}` };
}

/** A slim subscription event as the webhook normalizer would produce it (customer.subscription.created). */
export function subscriptionEvent(input: {
  customerId: string;
  subscriptionId: string;
  status: 'active' | 'past_due' | 'canceled';
  created: number;
}): BillingEvent {
  return slimSubscriptionEvent({
    customerId: input.customerId,
    subscriptionId: input.subscriptionId,
    created: input.created,
    type: 'customer.subscription.created',
    data: { status: input.status, priceId: 'price_dunning_test' },
  });
}

/** A slim invoice event (payment_failed, paid, marked_uncollectible). */
export function invoiceEvent(input: {
  type: 'invoice.payment_failed' | 'invoice.paid' | 'invoice.marked_uncollectible';
  billingReason?: string;
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
      status: failed ? 'open' : input.type === 'invoice.paid' ? 'paid' : 'uncollectible',
      amountDue: 2000,
      amountPaid: input.type === 'invoice.paid' ? 2000 : 0,
      currency: 'usd',
      attemptCount: 1,
      nextPaymentAttempt: null,
      billingReason: input.billingReason ?? 'subscription_cycle',
      hostedInvoiceUrl: `https://invoice.example.test/${input.invoiceId}`,
      paymentIntentId: null,
      declineCode: failed ? (input.declineCode ?? null) : null,
      failureCode: failed ? 'card_declined' : null,
      periodEnd: input.created,
    },
  };
}
