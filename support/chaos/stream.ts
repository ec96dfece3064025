/** The chaos run's event stream: each customer's events, duplicates, poisons, and the state they must lead to. */
import type { SubscriptionStatus } from '../../domain/billing-event';
import { isHandledEventType } from '../../domain/events';
import { accessStateFor } from '../../domain/subscription-state';
import { loadFixtureText } from '../fixtures';
import { prng } from '../prng';

// ---------------------------------------------------------------- the event stream

export interface Expected {
  customerId: string;
  subscription: { status: SubscriptionStatus; priceId: string; cancelAtPeriodEnd: boolean; currentPeriodEnd: number };
  email: string | null;
  name: string | null;
  invoice: { id: string; status: string; amountPaid: number } | null;
  accessState: string;
  /** Stripe's subscription id (served, in its final state, by the Stripe fake). */
  subscriptionId: string;
  /** A payment failed on a second invoice: one dunning cycle opens and sends exactly one notice. */
  dunning: boolean;
  /** That invoice (never paid): the key of the one dunning cycle. */
  failedInvoiceId: string | null;
}

/** What must become of an event: applied once, recorded as an ignored type, or set aside (a poison). */
export type EventFate = 'applied' | 'ignored' | 'quarantined';

/** A poison event and the events of its customer that come after it (all of which must be applied). */
export interface Poison {
  eventId: string;
  customerId: string;
  invoiceId: string;
  laterEventIds: string[];
}

export interface Stream {
  /** Every unique event, body text as Stripe would send it. */
  events: { id: string; body: string; fate: EventFate }[];
  /** Deliveries in send order: unique events plus duplicates, shuffled. */
  deliveries: string[];
  expected: Expected[];
  poisons: Poison[];
}

/** attempt_count 2^31: a valid integer for Stripe and the ingest, one past what the int4 column holds (SQLSTATE 22003). */
export const POISON_ATTEMPT_COUNT = 2 ** 31;
/** Event-id endings of payment failures and poisons (see `id(what)`): every apply holding one fails once after its commit. */
export const FAILED_ID_SUFFIX = '_failed';
export const POISON_ID_SUFFIX = '_poison';

const SUB_STATUSES: SubscriptionStatus[] = ['active', 'past_due', 'unpaid', 'active', 'trialing', 'canceled', 'active'];
const PRICES = ['price_ProMonthly', 'price_BasicMonthly', 'price_TeamMonthly'];
const IGNORED_TYPES = ['charge.updated', 'product.updated', 'payment_intent.created'];

function fixture(type: string, token: string): any {
  return JSON.parse(loadFixtureText(type).replace(/_Fixture/g, `_${token}`).replace(/Fixture/g, token));
}

/**
 * Builds each customer's events with strictly increasing `created` per customer (no same-second ties),
 * so the fault-free result is computable: the last subscription / customer event wins, the invoice ends
 * paid. A poisoned customer's poison sits in the middle of its stream, on an invoice of its own, so it
 * changes nothing of the fault-free result.
 */
export function buildStream(opts: { events: number; customers: number; duplicateRate: number; seed: number; runTag: string; poisonCustomers: number }): Stream {
  const handledNow = IGNORED_TYPES.filter((t) => isHandledEventType(t));
  if (handledNow.length) throw new Error(`chaos: ${handledNow.join(', ')} is handled now; pick other types for IGNORED_TYPES`);
  const rand = prng(opts.seed);
  const events: Stream['events'] = [];
  const expected: Expected[] = [];
  const poisons: Poison[] = [];
  // Spread over the customers, deterministically.
  const poisoned = new Set(Array.from({ length: Math.min(opts.poisonCustomers, opts.customers) }, (_, i) => Math.floor(((i + 0.5) * opts.customers) / opts.poisonCustomers)));
  const per = Math.floor(opts.events / opts.customers);
  let extra = opts.events - per * opts.customers;
  for (let c = 0; c < opts.customers; c++) {
    const n = per + (extra-- > 0 ? 1 : 0);
    const token = `${opts.runTag}K${c}`;
    const customerId = `cus_${token}Customer01`;
    let created = 1_790_000_000 + c * 10_000;
    let k = 0;
    const id = (what: string) => `evt_${token}_${k++}_${what}`;
    // Composition: an invoice pair when there is room, an ignored type now and then, customer updates, the rest subscription updates.
    const plan: string[] = [];
    if (n >= 5) plan.push('invoice.finalized', 'invoice.paid');
    if (n >= 4 && rand() < 0.6) plan.push(IGNORED_TYPES[Math.floor(rand() * IGNORED_TYPES.length)]!);
    if (n >= 3) plan.push('customer.updated');
    // Every tenth customer with room: a payment fails on a second invoice, which opens a dunning cycle.
    if (n >= 6 && c % 10 === 5) plan.push('invoice.payment_failed');
    while (plan.length < n) plan.push(rand() < 0.2 ? 'customer.updated' : 'customer.subscription.updated');
    // Random order in time, except that the invoice is finalized before it is paid.
    for (let i = plan.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [plan[i], plan[j]] = [plan[j]!, plan[i]!];
    }
    const fin = plan.indexOf('invoice.finalized');
    const paid = plan.indexOf('invoice.paid');
    if (fin > paid && paid >= 0) [plan[fin], plan[paid]] = [plan[paid]!, plan[fin]!];
    if (poisoned.has(c) && plan.length >= 2) plan.splice(Math.floor(plan.length / 2), 0, 'poison');
    const firstOfCustomer = events.length;
    let poison: { eventId: string; invoiceId: string; created: number } | null = null;

    let sub: Expected['subscription'] | null = null;
    let email: string | null = null;
    let name: string | null = null;
    let invoice: Expected['invoice'] = null;
    let subscriptionId = '';
    let lastSubEvent = -1;
    const dunning = plan.includes('invoice.payment_failed');
    const failedInvoiceId = dunning ? `in_${token}Failed01` : null;
    for (const type of plan) {
      created += 1 + Math.floor(rand() * 3);
      if (type === 'customer.subscription.updated') {
        const env = fixture(type, token);
        env.id = id('sub');
        env.created = created;
        const o = env.data.object;
        // Canceled is terminal at Stripe: a customer whose payment fails keeps a live subscription (a
        // 'canceled' event would end its dunning cycle before the notice, whatever order it arrives in).
        const statuses = dunning ? SUB_STATUSES.filter((x) => x !== 'canceled') : SUB_STATUSES;
        o.status = statuses[Math.floor(rand() * statuses.length)];
        const item = o.items.data[0];
        item.price.id = PRICES[Math.floor(rand() * PRICES.length)];
        // Older API versions also carry the legacy `plan` on the item.
        if (item.plan) item.plan.id = item.price.id;
        o.cancel_at_period_end = rand() < 0.3;
        o.items.data[0].current_period_end = 1_800_000_000 + Math.floor(rand() * 1_000_000);
        sub = { status: o.status, priceId: o.items.data[0].price.id, cancelAtPeriodEnd: o.cancel_at_period_end, currentPeriodEnd: o.items.data[0].current_period_end };
        subscriptionId = o.id;
        lastSubEvent = events.length;
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
      } else if (type === 'customer.updated') {
        const env = fixture(type, token);
        env.id = id('cus');
        env.created = created;
        // A profile change only: the fixture's previous_attributes records a default payment method change,
        // which during an open dunning cycle would retry the invoice (not part of this fault-free history).
        env.data.previous_attributes = { email, name };
        env.data.object.email = `c${c}.${k}@example.test`;
        env.data.object.name = `Customer ${c} v${k}`;
        email = env.data.object.email;
        name = env.data.object.name;
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
      } else if (type === 'invoice.finalized' || type === 'invoice.paid') {
        const env = fixture(type, token);
        env.id = id(type === 'invoice.paid' ? 'paid' : 'fin');
        env.created = created;
        env.data.object.status = type === 'invoice.paid' ? 'paid' : 'open';
        if (type === 'invoice.paid') invoice = { id: env.data.object.id, status: 'paid', amountPaid: env.data.object.amount_paid };
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
      } else if (type === 'invoice.payment_failed') {
        const env = fixture(type, token);
        env.id = id('failed');
        // The failure happened now: the cycle's first retry is a day away, so within the run it only
        // opens the cycle, holds access at 'grace' and sends its one "payment failed" notice.
        env.created = Math.floor(Date.now() / 1000);
        env.data.object.id = failedInvoiceId;
        env.data.object.status = 'open';
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
      } else if (type === 'poison') {
        // Verified and well-formed, but no row can hold it. On an invoice of its own, so no newer event of
        // the same object can make it stale (a stale event writes nothing and would not fail).
        const env = fixture('invoice.finalized', token);
        env.id = id('poison');
        env.created = created;
        env.data.object.id = `in_${token}Poison01`;
        env.data.object.status = 'open';
        env.data.object.attempt_count = POISON_ATTEMPT_COUNT;
        poison = { eventId: env.id, invoiceId: env.data.object.id, created };
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'quarantined' });
      } else {
        // A type this engine does not act on: stored as 'ignored', acknowledged, never applied.
        const env = { id: id('ign'), object: 'event', api_version: '2025-03-31.basil', created, livemode: false, type, data: { object: { id: `obj_${token}_${k}`, object: type.split('.')[0], customer: customerId } } };
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'ignored' });
      }
    }
    if (!sub) {
      // The random plan drew no subscription event: add one, so every customer's final state is checkable.
      const env = fixture('customer.subscription.updated', token);
      created += 1;
      env.id = id('sub');
      env.created = created;
      const o = env.data.object;
      sub = { status: o.status, priceId: o.items.data[0].price.id, cancelAtPeriodEnd: o.cancel_at_period_end, currentPeriodEnd: o.items.data[0].current_period_end };
      subscriptionId = o.id;
      lastSubEvent = events.length;
      events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
    }
    if (dunning) {
      // A failed renewal leaves the subscription past_due (as Stripe does): its latest event says so.
      const last = JSON.parse(events[lastSubEvent]!.body);
      last.data.object.status = 'past_due';
      events[lastSubEvent]!.body = JSON.stringify(last);
      sub.status = 'past_due';
    }
    const access = accessStateFor(sub.status);
    // As refreshAccessState: an open dunning cycle holds an active customer at 'grace'.
    const accessState = dunning && (access === 'active' || access === 'grace') ? 'grace' : access;
    expected.push({ customerId, subscription: sub, email, name, invoice, accessState, subscriptionId, dunning, failedInvoiceId });
    if (poison) {
      const p = poison;
      const laterEventIds = events
        .slice(firstOfCustomer)
        .filter((e) => e.fate === 'applied' && (JSON.parse(e.body) as { created: number }).created > p.created)
        .map((e) => e.id);
      poisons.push({ eventId: p.eventId, customerId, invoiceId: p.invoiceId, laterEventIds });
    }
  }
  const ids = events.map((e) => e.id);
  const deliveries = [...ids, ...ids.filter(() => rand() < opts.duplicateRate)];
  for (let i = deliveries.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [deliveries[i], deliveries[j]] = [deliveries[j]!, deliveries[i]!];
  }
  return { events, deliveries, expected, poisons };
}

