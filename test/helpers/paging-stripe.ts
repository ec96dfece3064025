/**
 * An in-memory stand-in for the Stripe endpoints reconciliation calls: subscriptions (list, retrieve,
 * update), invoices (list, retrieve) and the undelivered-events list (newest first, `starting_after` /
 * `has_more` paging). Stripe emulators cannot be seeded with arbitrary subscription and invoice states,
 * so this fake is where the pages come from.
 */
import Stripe from 'stripe';

/** A subscription as Stripe returns it (2025+ shape: price and period on the item). */
export interface FakeSubscription {
  id: string;
  object: 'subscription';
  customer: string;
  status: string;
  cancel_at_period_end: boolean;
  canceled_at: number | null;
  trial_end: number | null;
  metadata: Record<string, string>;
  pause_collection: { behavior: string; resumes_at: number | null } | null;
  items: { object: 'list'; data: { id: string; price: { id: string }; current_period_start: number; current_period_end: number }[] };
}

/** An invoice as Stripe returns it (basil+ shape: the subscription under parent.subscription_details). */
export interface FakeInvoice {
  id: string;
  object: 'invoice';
  customer: string;
  status: 'draft' | 'open' | 'paid' | 'void' | 'uncollectible';
  amount_due: number;
  amount_paid: number;
  amount_remaining: number;
  currency: string;
  attempt_count: number;
  attempted: boolean;
  billing_reason: string;
  collection_method: 'charge_automatically';
  created: number;
  hosted_invoice_url: string;
  livemode: false;
  next_payment_attempt: number | null;
  period_end: number;
  parent: { type: 'subscription_details'; subscription_details: { subscription: string | FakeSubscription; metadata: Record<string, string> } } | null;
  status_transitions: { finalized_at: number | null; paid_at: number | null; voided_at: number | null; marked_uncollectible_at: number | null };
}

export interface FakeCall {
  method: 'list' | 'retrieve' | 'update' | 'events.list' | 'invoices.list' | 'invoices.retrieve' | 'invoices.markUncollectible';
  /** `starting_after` for the lists, the id for retrieve and update. */
  arg: string | null;
  at: number;
  outcome: 'ok' | 'rate_limited' | 'not_found' | 'failed';
  /** update: its params and idempotency key. */
  params?: unknown;
  idempotencyKey?: string | undefined;
}

/** Builds a Stripe-shaped subscription. */
export function fakeSubscription(s: {
  id: string;
  customer: string;
  status?: string;
  priceId?: string;
  periodEnd?: number;
  cancelAtPeriodEnd?: boolean;
  /** What earlier dunning versions left on a subscription they "marked unpaid". */
  markedUnpaidFor?: string;
}): FakeSubscription {
  const end = s.periodEnd ?? 1_800_000_000;
  return {
    id: s.id,
    object: 'subscription',
    customer: s.customer,
    status: s.status ?? 'active',
    cancel_at_period_end: s.cancelAtPeriodEnd ?? false,
    canceled_at: s.status === 'canceled' ? end - 86_400 : null,
    trial_end: null,
    metadata: s.markedUnpaidFor ? { dunning_final_action: 'mark_unpaid', dunning_invoice_id: s.markedUnpaidFor } : {},
    pause_collection: s.markedUnpaidFor ? { behavior: 'keep_as_draft', resumes_at: null } : null,
    items: {
      object: 'list',
      data: [{ id: `si_${s.id}`, price: { id: s.priceId ?? 'price_basic' }, current_period_start: end - 30 * 86_400, current_period_end: end }],
    },
  };
}

/** Builds a Stripe-shaped subscription invoice; `created` defaults to now (its first attempt an hour later). */
export function fakeInvoice(i: {
  id: string;
  customer: string;
  subscription: string | null;
  status?: FakeInvoice['status'];
  attemptCount?: number;
  billingReason?: string;
  created?: number;
}): FakeInvoice {
  const created = i.created ?? Math.floor(Date.now() / 1000);
  const status = i.status ?? 'open';
  const closedAt = created + 7200;
  return {
    id: i.id,
    object: 'invoice',
    customer: i.customer,
    status,
    amount_due: 1000,
    amount_paid: status === 'paid' ? 1000 : 0,
    amount_remaining: status === 'paid' ? 0 : 1000,
    currency: 'usd',
    attempt_count: i.attemptCount ?? 1,
    attempted: (i.attemptCount ?? 1) > 0,
    billing_reason: i.billingReason ?? 'subscription_cycle',
    collection_method: 'charge_automatically',
    created,
    hosted_invoice_url: `https://invoice.example.test/${i.id}`,
    livemode: false,
    next_payment_attempt: status === 'open' ? created + 3 * 86_400 : null,
    period_end: created,
    parent: i.subscription ? { type: 'subscription_details', subscription_details: { subscription: i.subscription, metadata: {} } } : null,
    status_transitions: {
      finalized_at: created,
      paid_at: status === 'paid' ? closedAt : null,
      voided_at: status === 'void' ? closedAt : null,
      marked_uncollectible_at: status === 'uncollectible' ? closedAt : null,
    },
  };
}

export interface PagingStripe {
  /** What Stripe holds, newest first (the list order). Mutable between runs. */
  subscriptions: FakeSubscription[];
  /** Invoices, newest first. Mutable between runs. */
  invoices: FakeInvoice[];
  /** Event envelopes Stripe could not deliver to every endpoint, newest first. */
  undeliveredEvents: { id: string; created: number; [k: string]: unknown }[];
  calls: FakeCall[];
  /** Delay of every call (a slow Stripe). */
  delayMs: number;
  /** Decides, per call number (1-based), whether Stripe answers 429. */
  rateLimit: (callNumber: number, call: Omit<FakeCall, 'at' | 'outcome'>) => boolean;
  /** Any other error Stripe should answer a call with (null: answer normally). */
  failure: (call: Omit<FakeCall, 'at' | 'outcome'>) => Error | null;
  /** The client to inject where `Pick<Stripe, 'subscriptions' | 'events' | 'invoices'>` is expected. */
  stripe: Pick<Stripe, 'subscriptions' | 'events' | 'invoices'>;
}

/** Creates the fake; `subscriptions` is listed newest first, like Stripe. */
export function createPagingStripe(subscriptions: FakeSubscription[] = []): PagingStripe {
  const fake: PagingStripe = {
    subscriptions,
    invoices: [],
    undeliveredEvents: [],
    calls: [],
    delayMs: 0,
    rateLimit: () => false,
    failure: () => null,
    stripe: null as never,
  };

  async function enter(call: Omit<FakeCall, 'at' | 'outcome' | 'params' | 'idempotencyKey'> & Partial<FakeCall>): Promise<FakeCall> {
    if (fake.delayMs > 0) await new Promise((r) => setTimeout(r, fake.delayMs));
    const recorded: FakeCall = { ...call, at: Date.now(), outcome: 'ok' };
    fake.calls.push(recorded);
    if (fake.rateLimit(fake.calls.length, call)) {
      recorded.outcome = 'rate_limited';
      throw new Stripe.errors.StripeRateLimitError({ message: 'Too many requests', statusCode: 429, type: 'rate_limit_error' } as never);
    }
    const failure = fake.failure(call);
    if (failure) {
      recorded.outcome = 'failed';
      throw failure;
    }
    return recorded;
  }

  async function list(params: { status?: string; limit?: number; starting_after?: string } = {}) {
    await enter({ method: 'list', arg: params.starting_after ?? null });
    // Without status 'all' Stripe leaves canceled subscriptions out: reconciliation must ask for all.
    if (params.status !== 'all') throw new Error(`the fake expects status 'all', got ${String(params.status)}`);
    const limit = params.limit ?? 10;
    let start = 0;
    if (params.starting_after) {
      const i = fake.subscriptions.findIndex((s) => s.id === params.starting_after);
      if (i < 0) throw new Stripe.errors.StripeInvalidRequestError({ message: `No such subscription: '${params.starting_after}'`, statusCode: 400 } as never);
      start = i + 1;
    }
    const data = fake.subscriptions.slice(start, start + limit).map((s) => structuredClone(s));
    return { object: 'list', data, has_more: start + limit < fake.subscriptions.length, url: '/v1/subscriptions' };
  }

  async function retrieve(id: string) {
    const call = await enter({ method: 'retrieve', arg: id });
    const found = fake.subscriptions.find((s) => s.id === id);
    if (!found) {
      call.outcome = 'not_found';
      throw new Stripe.errors.StripeInvalidRequestError({
        message: `No such subscription: '${id}'`,
        code: 'resource_missing',
        statusCode: 404,
      } as never);
    }
    return structuredClone(found);
  }

  async function update(id: string, params: { pause_collection?: unknown; metadata?: Record<string, string> }, options?: { idempotencyKey?: string }) {
    const call = await enter({ method: 'update', arg: id, params, idempotencyKey: options?.idempotencyKey });
    const found = fake.subscriptions.find((s) => s.id === id);
    if (!found) {
      call.outcome = 'not_found';
      throw new Stripe.errors.StripeInvalidRequestError({ message: `No such subscription: '${id}'`, code: 'resource_missing', statusCode: 404 } as never);
    }
    // Stripe's unset: '' clears pause_collection, and a metadata key set to '' is removed.
    if (params.pause_collection !== undefined) found.pause_collection = params.pause_collection === '' ? null : (params.pause_collection as FakeSubscription['pause_collection']);
    for (const [k, v] of Object.entries(params.metadata ?? {})) {
      if (v === '') delete found.metadata[k];
      else found.metadata[k] = v;
    }
    return structuredClone(found);
  }

  async function listInvoices(params: { status?: string; limit?: number; starting_after?: string; expand?: string[] } = {}) {
    await enter({ method: 'invoices.list', arg: params.starting_after ?? null });
    const all = fake.invoices.filter((i) => params.status === undefined || i.status === params.status);
    const limit = params.limit ?? 10;
    const start = params.starting_after ? all.findIndex((i) => i.id === params.starting_after) + 1 : 0;
    const expandSubscription = params.expand?.includes('data.parent.subscription_details.subscription') ?? false;
    const data = all.slice(start, start + limit).map((i) => {
      const copy = structuredClone(i);
      const details = copy.parent?.subscription_details;
      if (expandSubscription && details && typeof details.subscription === 'string') {
        const sub = fake.subscriptions.find((s) => s.id === details.subscription);
        if (sub) details.subscription = structuredClone(sub);
      }
      return copy;
    });
    return { object: 'list', data, has_more: start + limit < all.length, url: '/v1/invoices' };
  }

  async function retrieveInvoice(id: string) {
    const call = await enter({ method: 'invoices.retrieve', arg: id });
    const found = fake.invoices.find((i) => i.id === id);
    if (!found) {
      call.outcome = 'not_found';
      throw new Stripe.errors.StripeInvalidRequestError({ message: `No such invoice: '${id}'`, code: 'resource_missing', statusCode: 404 } as never);
    }
    return structuredClone(found);
  }

  async function markUncollectible(id: string, _params: unknown, options?: { idempotencyKey?: string }) {
    const call = await enter({ method: 'invoices.markUncollectible', arg: id, idempotencyKey: options?.idempotencyKey });
    const found = fake.invoices.find((i) => i.id === id);
    if (!found) {
      call.outcome = 'not_found';
      throw new Stripe.errors.StripeInvalidRequestError({ message: `No such invoice: '${id}'`, code: 'resource_missing', statusCode: 404 } as never);
    }
    found.status = 'uncollectible';
    return structuredClone(found);
  }

  async function listEvents(params: { delivery_success?: boolean; created?: { gte?: number }; limit?: number; starting_after?: string } = {}) {
    await enter({ method: 'events.list', arg: params.starting_after ?? null });
    if (params.delivery_success !== false) throw new Error('the fake serves only delivery_success: false');
    const gte = params.created?.gte ?? 0;
    const all = fake.undeliveredEvents.filter((e) => e.created >= gte);
    const limit = params.limit ?? 10;
    const start = params.starting_after ? all.findIndex((e) => e.id === params.starting_after) + 1 : 0;
    const data = all.slice(start, start + limit).map((e) => structuredClone(e));
    return { object: 'list', data, has_more: start + limit < all.length, url: '/v1/events' };
  }

  fake.stripe = {
    subscriptions: { list, retrieve, update },
    invoices: { list: listInvoices, retrieve: retrieveInvoice, markUncollectible },
    events: { list: listEvents },
  } as unknown as Pick<Stripe, 'subscriptions' | 'events' | 'invoices'>;
  return fake;
}
