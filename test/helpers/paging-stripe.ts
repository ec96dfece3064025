/**
 * An in-memory stand-in for Stripe's subscription list and retrieve endpoints and the undelivered-events
 * list (newest first, `starting_after` / `has_more` paging), for reconciliation tests. Stripe emulators cannot be seeded
 * with arbitrary subscription states, so this fake is where the pages come from.
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
  items: { object: 'list'; data: { id: string; price: { id: string }; current_period_start: number; current_period_end: number }[] };
}

export interface FakeCall {
  method: 'list' | 'retrieve' | 'events.list';
  /** `starting_after` for list, the id for retrieve. */
  arg: string | null;
  at: number;
  outcome: 'ok' | 'rate_limited' | 'not_found' | 'failed';
}

/** Builds a Stripe-shaped subscription. */
export function fakeSubscription(s: {
  id: string;
  customer: string;
  status?: string;
  priceId?: string;
  periodEnd?: number;
  cancelAtPeriodEnd?: boolean;
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
    items: {
      object: 'list',
      data: [{ id: `si_${s.id}`, price: { id: s.priceId ?? 'price_basic' }, current_period_start: end - 30 * 86_400, current_period_end: end }],
    },
  };
}

export interface PagingStripe {
  /** What Stripe holds, newest first (the list order). Mutable between runs. */
  subscriptions: FakeSubscription[];
  /** Event envelopes Stripe could not deliver to every endpoint, newest first. */
  undeliveredEvents: { id: string; created: number; [k: string]: unknown }[];
  calls: FakeCall[];
  /** Delay of every call (a slow Stripe). */
  delayMs: number;
  /** Decides, per call number (1-based), whether Stripe answers 429. */
  rateLimit: (callNumber: number, call: Omit<FakeCall, 'at' | 'outcome'>) => boolean;
  /** Any other error Stripe should answer a call with (null: answer normally). */
  failure: (call: Omit<FakeCall, 'at' | 'outcome'>) => Error | null;
  /** The client to inject where `Pick<Stripe, 'subscriptions' | 'events'>` is expected. */
  stripe: Pick<Stripe, 'subscriptions' | 'events'>;
}

/** Creates the fake; `subscriptions` is listed newest first, like Stripe. */
export function createPagingStripe(subscriptions: FakeSubscription[] = []): PagingStripe {
  const fake: PagingStripe = {
    subscriptions,
    undeliveredEvents: [],
    calls: [],
    delayMs: 0,
    rateLimit: () => false,
    failure: () => null,
    stripe: null as never,
  };

  async function enter(call: Omit<FakeCall, 'at' | 'outcome'>): Promise<FakeCall> {
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

  fake.stripe = { subscriptions: { list, retrieve }, events: { list: listEvents } } as unknown as Pick<Stripe, 'subscriptions' | 'events'>;
  return fake;
}
