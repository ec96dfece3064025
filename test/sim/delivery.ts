/**
 * How a history reaches the engine: Stripe's order perturbed by a bounded shuffle, some events
 * delivered twice (same event id, later), and seeded crashes between an apply's commit and its
 * completion. All seeded, so a failing run is replayed from its seed.
 */
import fc from 'fast-check';
import { prng as mulberry32 } from '../../support/prng';

/** Deterministic PRNG (mulberry32): the one support/ uses for bench and chaos streams. */
export { mulberry32 };

/** A string hashed with a seed to [0, 1) (FNV-1a). */
export function seededUnit(seed: number, s: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return mulberry32(h)();
}

/** How one history is delivered. */
export interface DeliveryPlan {
  seed: number;
  /** Share of events posted a second time. */
  duplicateRate: number;
  /** An event's first delivery may overtake at most this many events sent before it. */
  window: number;
}

export const deliveryPlanArb: fc.Arbitrary<DeliveryPlan> = fc.record({
  seed: fc.nat(),
  duplicateRate: fc.constantFrom(0, 0.1, 0.25, 0.5),
  window: fc.constantFrom(0, 1, 2, 4, 8),
});

/** One POST: which event (index in Stripe's order), and whether its id was posted before. */
export interface Delivery {
  index: number;
  duplicate: boolean;
}

/**
 * The delivery sequence for `n` events: each event keyed at its index plus a jitter below `window + 1`
 * (so a first delivery overtakes at most `window` earlier events), a duplicate keyed 1–4 after its original.
 */
export function deliveryOrder(n: number, plan: DeliveryPlan): Delivery[] {
  const rand = mulberry32(plan.seed);
  const keyed: { key: number; index: number; copy: boolean }[] = [];
  for (let i = 0; i < n; i++) {
    const key = i + rand() * (plan.window + 1);
    keyed.push({ key, index: i, copy: false });
    if (rand() < plan.duplicateRate) keyed.push({ key: key + 1 + rand() * 3, index: i, copy: true });
  }
  keyed.sort((a, b) => a.key - b.key || Number(a.copy) - Number(b.copy));
  const seen = new Set<number>();
  return keyed.map(({ index }) => {
    const duplicate = seen.has(index);
    seen.add(index);
    return { index, duplicate };
  });
}

/** Indices in the order of their first delivery (what the engine applies; later copies are no-ops). */
export function firstDeliveries(order: readonly Delivery[]): number[] {
  return order.filter((d) => !d.duplicate).map((d) => d.index);
}

/** The crash decision for apply activities, with counters for the report. */
export interface CrashInjector {
  /** `faults.afterCommit` of createActivities: true → the activity fails after its commit. */
  afterCommit: (eventIds: readonly string[]) => boolean;
  /** Events whose applies crash more often (e.g. those that open or end a dunning cycle). */
  readonly focus: Set<string>;
  readonly stats: { calls: number; injected: number; injectedOnFocus: number };
}

/**
 * Fails the first attempt of about `rate` of the applies, and of `focusRate` of those holding a focus
 * event (decided by a hash of the batch and the seed, so a run is replayed from its seed).
 */
export function createCrashInjector(seed: number, rate: number, focusRate = 0.5): CrashInjector {
  const failedOnce = new Set<string>();
  const focus = new Set<string>();
  const stats = { calls: 0, injected: 0, injectedOnFocus: 0 };
  return {
    focus,
    stats,
    afterCommit(eventIds) {
      stats.calls++;
      const key = eventIds.join(',');
      const focused = eventIds.some((id) => focus.has(id));
      if (failedOnce.has(key) || seededUnit(seed, key) >= (focused ? focusRate : rate)) return false;
      failedOnce.add(key);
      stats.injected++;
      if (focused) stats.injectedOnFocus++;
      return true;
    },
  };
}
