/** One simulated customer end to end: the drawn case, its history and envelopes, the delivery order and the model's verdict. */
import fc from 'fast-check';
import type { Violation } from './check';
import { deliveryOrder, deliveryPlanArb, firstDeliveries, type Delivery, type DeliveryPlan } from './delivery';
import { interpretLifecycle, lifecycleArb, type History, type Lifecycle } from './lifecycle';
import { describeEvent, expectOutcome, type Expected } from './model';
import { renderEnvelope, type Envelope } from './render';

/** What fast-check draws per customer. */
export interface SimCase {
  lifecycle: Lifecycle;
  delivery: DeliveryPlan;
}

export const simCaseArb: fc.Arbitrary<SimCase> = fc.record({ lifecycle: lifecycleArb, delivery: deliveryPlanArb });

export interface PreparedCase {
  index: number;
  sim: SimCase;
  history: History;
  envelopes: Envelope[];
  order: Delivery[];
  expected: Expected;
}

/** Renders case `index` of a run: ids from `runTag`, first event at `startAt`. */
export function prepareCase(sim: SimCase, index: number, runTag: string, startAt: number): PreparedCase {
  const history = interpretLifecycle(sim.lifecycle, `${runTag}n${index}`, startAt);
  const order = deliveryOrder(history.events.length, sim.delivery);
  return {
    index,
    sim,
    history,
    envelopes: history.events.map((e) => renderEnvelope(history, e)),
    order,
    expected: expectOutcome(history, firstDeliveries(order)),
  };
}

/** A failing customer as a reader needs it: the story, Stripe's order, the delivery order with the model's decisions, the violations. */
export function formatFailure(p: PreparedCase, violations: readonly Violation[]): string {
  const h = p.history;
  const lines = [
    `── history #${p.index} ${h.customerId}: ${h.events.length} events, ${p.order.length} deliveries (window ${p.sim.delivery.window}, duplicates ${p.sim.delivery.duplicateRate})`,
    '  steps:',
    ...h.steps.map((s, i) => `    ${i}. ${s}`),
    '  Stripe order:',
    ...h.events.map((e) => `    [${e.step}] ${describeEvent(e)}`),
    '  delivery order → model (first deliveries; duplicates at ' +
      (p.order
        .map((d, i) => (d.duplicate ? `${i}:${h.events[d.index]!.id.slice(-3)}` : null))
        .filter(Boolean)
        .join(' ') || 'none') +
      '):',
    ...p.expected.trail.map((t) => `    ${t}`),
    '  violations:',
    ...violations.map((v) => `    [${v.kind}] ${v.message}`),
    `  lifecycle: ${JSON.stringify(p.sim)}`,
  ];
  return lines.join('\n');
}
