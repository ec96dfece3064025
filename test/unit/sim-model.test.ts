/**
 * The simulation's own parts, checked without services over thousands of generated lifecycles: the
 * rendered stream is what Stripe would send, delivery only reorders within its window, and the
 * reference model converges under reordering and keeps the dunning invariants it promises.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NO_CUSTOMER_ERROR, normalizeStripeEvent } from '../../domain/events';
import { checkCustomer, observedFromModel } from '../sim/check';
import { deliveryOrder, deliveryPlanArb, firstDeliveries } from '../sim/delivery';
import { interpretLifecycle, isEndedStatus, lifecycleArb, type History } from '../sim/lifecycle';
import { expectOutcome } from '../sim/model';
import { POISON_ATTEMPT_COUNT, renderEnvelope } from '../sim/render';

const START = 1_795_000_000;
const historyArb = lifecycleArb.map((lc) => interpretLifecycle(lc, 'Tsim', START));
const FAILURES = new Set(['invoice.payment_failed', 'invoice.payment_action_required']);
/** Stripe objects that webhooks carry as ids only (expandable): never embedded in a payload. */
const EXPANDABLE = new Set(['customer', 'subscription', 'invoice', 'charge', 'payment_intent', 'payment_method', 'invoice_payment']);

function embeddedExpandables(value: unknown, path: string, out: string[]): string[] {
  if (Array.isArray(value)) value.forEach((v, i) => embeddedExpandables(v, `${path}[${i}]`, out));
  else if (value && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    if (path !== 'data.object' && typeof obj.object === 'string' && EXPANDABLE.has(obj.object)) out.push(`${path} (${obj.object})`);
    for (const [k, v] of Object.entries(obj)) embeddedExpandables(v, `${path}.${k}`, out);
  }
  return out;
}

const sameObjectKey = (h: History, i: number) => {
  const e = h.events[i]!;
  return e.object.kind === 'subscription' ? e.object.id : e.type.startsWith('customer.') && e.object.kind === 'customer' ? 'customer' : null;
};

describe('simulation model', () => {
  it('emits Stripe-ordered streams: created never decreases, no same-second events of one subscription or of the customer, unique ids', () => {
    fc.assert(
      fc.property(historyArb, (h) => {
        const ids = new Set(h.events.map((e) => e.id));
        expect(ids.size).toBe(h.events.length);
        expect(h.events[0]!.type).toBe('customer.created');
        const lastOf = new Map<string, number>();
        h.events.forEach((e, i) => {
          if (i > 0) expect(e.created).toBeGreaterThanOrEqual(h.events[i - 1]!.created);
          const key = sameObjectKey(h, i);
          if (key) {
            expect(lastOf.get(key) ?? -1).toBeLessThan(e.created);
            lastOf.set(key, e.created);
          }
        });
        // Nothing happens to a subscription after it ended.
        const ended = new Set<string>();
        for (const e of h.events) {
          const subId = e.object.kind === 'subscription' ? e.object.id : null;
          if (subId && ended.has(subId)) throw new Error(`${e.id} after ${subId} ended`);
          if (e.object.kind === 'subscription' && isEndedStatus(e.object.status)) ended.add(e.object.id);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('renders envelopes the normalizer reads back as the simulated objects, in 2025+ shapes with nothing expanded', () => {
    fc.assert(
      fc.property(historyArb, (h) => {
        for (const e of h.events) {
          const env = renderEnvelope(h, e);
          expect(embeddedExpandables(env.data, 'data', [])).toEqual([]);
          expect(JSON.stringify(env).includes('Fixture')).toBe(false);
          let n = normalizeStripeEvent(env);
          if (e.type === 'charge.dispute.created') {
            // Disputes name only the charge: the ingest looks the customer up.
            expect(n).toMatchObject({ outcome: 'invalid', error: NO_CUSTOMER_ERROR });
            n = normalizeStripeEvent(env, { fallbackCustomerId: h.customerId });
          }
          if (n.outcome !== 'handled') throw new Error(`${e.type} ${e.id} did not normalize: ${JSON.stringify(n)}`);
          expect(n.event).toMatchObject({ eventId: e.id, type: e.type, created: e.created, customerId: h.customerId, objectId: e.object.id });
          const d = n.event.data;
          const o = e.object;
          if (o.kind === 'subscription') expect(d).toMatchObject({ kind: 'subscription', status: o.status, priceId: o.priceId, cancelAtPeriodEnd: o.cancelAtPeriodEnd });
          if (o.kind === 'invoice') {
            const attemptCount = e.poison === 'int_overflow' ? POISON_ATTEMPT_COUNT : o.attempts;
            expect(d).toMatchObject({ kind: 'invoice', status: o.status, subscriptionId: o.subId, amountDue: o.amount, attemptCount });
            expect(env.data.object.payments).toBeUndefined();
          }
          if (o.kind === 'customer') {
            expect(d).toMatchObject({ kind: 'customer', email: o.email, defaultPaymentMethodId: o.defaultPm });
            if (e.poison) expect(d).toMatchObject({ name: 'Ada\u0000Lovelace', defaultPaymentMethodChanged: false });
          }
          if (o.kind === 'charge') expect(d).toMatchObject({ kind: 'charge_refund', amountRefunded: o.amountRefunded, refunded: o.amountRefunded >= o.amount });
          if (o.kind === 'dispute') expect(d).toMatchObject({ kind: 'dispute', chargeId: o.chargeId });
        }
      }),
      { numRuns: 300 },
    );
  });

  it('delivers every event at least once, duplicates after their original, first deliveries within the window', () => {
    fc.assert(
      fc.property(fc.nat({ max: 60 }), deliveryPlanArb, (n, plan) => {
        const order = deliveryOrder(n, plan);
        const first = firstDeliveries(order);
        expect([...first].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
        if (plan.duplicateRate === 0) expect(order).toHaveLength(n);
        first.forEach((idx, pos) => {
          for (const later of first.slice(pos + 1)) if (later < idx) expect(idx - later).toBeLessThanOrEqual(plan.window);
        });
      }),
      { numRuns: 3000 },
    );
  });

  it('converges under reordering and duplicates: final objects equal those of the in-order delivery and of Stripe', () => {
    fc.assert(
      fc.property(historyArb, deliveryPlanArb, (h, plan) => {
        const inOrder = expectOutcome(h, h.events.map((_, i) => i));
        const shuffled = expectOutcome(h, firstDeliveries(deliveryOrder(h.events.length, plan)));
        expect(shuffled.subscriptions).toEqual(inOrder.subscriptions);
        const statuses = (x: typeof inOrder) => Object.fromEntries([...x.invoices].map(([id, i]) => [id, i.status]));
        expect(statuses(shuffled)).toEqual(statuses(inOrder));
        expect(shuffled.customer).toEqual(inOrder.customer);
        expect(shuffled.charges).toEqual(inOrder.charges);
        expect(shuffled.disputes).toEqual(inOrder.disputes);
        // Stripe's truth: each subscription ends as its last event says.
        for (const e of h.events) {
          if (e.object.kind !== 'subscription') continue;
          const last = h.events.filter((x) => x.object.kind === 'subscription' && x.object.id === e.object.id).at(-1)!;
          if (last.object.kind === 'subscription') expect(inOrder.subscriptions.get(e.object.id)?.status).toBe(last.object.status);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps the dunning contract: in order every failed invoice gets one cycle; under any order no paid invoice stays in dunning', () => {
    fc.assert(
      fc.property(historyArb, deliveryPlanArb, (h, plan) => {
        const inOrder = expectOutcome(h, h.events.map((_, i) => i));
        const failed = new Set(h.events.filter((e) => FAILURES.has(e.type)).map((e) => e.object.id));
        expect(new Set(inOrder.cycles.keys())).toEqual(failed);
        for (const c of inOrder.cycles.values()) {
          const invoiceOpen = inOrder.invoices.get(c.invoiceId)?.status === 'open';
          const subEnded = isEndedStatus(inOrder.subscriptions.get(c.subId)?.status ?? 'active');
          expect(c.open).toBe(invoiceOpen && !subEnded);
        }

        const x = expectOutcome(h, firstDeliveries(deliveryOrder(h.events.length, plan)));
        for (const c of x.cycles.values()) {
          expect(failed.has(c.invoiceId)).toBe(true);
          if (c.open) expect(['paid', 'void', 'uncollectible']).not.toContain(x.invoices.get(c.invoiceId)?.status);
          if (c.open) expect(isEndedStatus(x.subscriptions.get(c.subId)?.status ?? 'active')).toBe(false);
          expect(x.failedWithoutCycle.has(c.invoiceId)).toBe(false);
        }
        const open = [...x.cycles.values()].some((c) => c.open);
        if (open && x.accessState !== 'restricted' && x.accessState !== 'suspended') expect(x.accessState).toBe('grace');
      }),
      { numRuns: 2000 },
    );
  });

  it('sees a stale failure (delivered after the invoice was paid) as opening no cycle', () => {
    const h = interpretLifecycle(
      { cardAtSignup: false, start: 'paid', intents: [{ op: 'renew', variant: 3, gap: 2, ticks: 0xff }, { op: 'pay', variant: 0, gap: 2, ticks: 0 }], poisonAfter: null, poisonKind: 'nul_name' },
      'Tstale',
      START,
    );
    const failure = h.events.findIndex((e) => e.type === 'invoice.payment_failed');
    const paid = h.events.findIndex((e, i) => i > failure && e.type === 'invoice.paid');
    expect(failure).toBeGreaterThan(0);
    expect(paid).toBeGreaterThan(failure);
    const order = h.events.map((_, i) => i).filter((i) => i !== failure);
    order.splice(order.indexOf(paid) + 1, 0, failure);
    const x = expectOutcome(h, order);
    const invoiceId = h.events[failure]!.object.id;
    expect(x.cycles.has(invoiceId)).toBe(false);
    expect(x.failedWithoutCycle.has(invoiceId)).toBe(true);
    expect(expectOutcome(h, h.events.map((_, i) => i)).cycles.get(invoiceId)).toMatchObject({ open: false });
  });

  it('the checker finds nothing in the model itself and flags a changed cycle, subscription or stuck event', () => {
    fc.assert(
      fc.property(historyArb, deliveryPlanArb, (h, plan) => {
        const x = expectOutcome(h, firstDeliveries(deliveryOrder(h.events.length, plan)));
        const o = observedFromModel(h, x);
        expect(checkCustomer(h, x, o)).toEqual([]);

        const stuck = observedFromModel(h, x);
        stuck.events.set(h.events.at(-1)!.id, 'dispatched');
        expect(checkCustomer(h, x, stuck).map((v) => v.kind)).toContain('stuck');
        const [cycleId, cycle] = [...x.cycles][0] ?? [];
        if (cycleId && cycle) {
          const flipped = observedFromModel(h, x);
          flipped.cycles.set(cycleId, { subscriptionId: cycle.subId, ended: cycle.open, state: 'x' });
          expect(checkCustomer(h, x, flipped).map((v) => v.kind)).toContain('cycle');
        }
        const [subId, sub] = [...x.subscriptions][0] ?? [];
        if (subId && sub) {
          const changed = observedFromModel(h, x);
          changed.subscriptions.set(subId, { status: sub.status === 'active' ? 'past_due' : 'active', priceId: sub.priceId, cancelAtPeriodEnd: sub.cancelAtPeriodEnd });
          expect(checkCustomer(h, x, changed).map((v) => v.kind)).toContain('subscription');
        }
      }),
      { numRuns: 500 },
    );
  });
});
