/**
 * The entitlement rule: what a customer may do, from its plan's features, the subscription quantity,
 * its access state, Stripe's active entitlements and support's overrides. Pure: the API reads the
 * inputs (one query, cached) and calls `resolveEntitlements` on every request, so expiry needs no write.
 */
import { z } from 'zod';
import type { PlanFeatures } from './plan-catalog';
import type { AccessState } from './subscription-state';

/** A resolved feature: a flag, a limit, or `null` for unlimited. */
export type EntitlementValue = boolean | number | null;

/** An override's value: a flag, a non-negative limit, or `null` (unlimited). */
export const OverrideValueSchema = z.union([z.boolean(), z.number().int().min(0), z.null()]);

/** Access states that keep the plan's features: `grace` is dunning, still paying customers' time. */
export const ENTITLED_ACCESS_STATES: readonly AccessState[] = ['active', 'grace'];

/** One override as the rule reads it. */
export interface EntitlementOverrideInput {
  id: string;
  feature: string;
  value: EntitlementValue;
  /** Unix ms; null never expires. */
  expiresAt: number | null;
  /** Unix ms: of several live overrides of one feature, the newest wins. */
  createdAt: number;
}

/** Everything the rule needs about one customer. */
export interface EntitlementInputs<O extends EntitlementOverrideInput = EntitlementOverrideInput> {
  accessState: AccessState;
  /** The current subscription's plan features ({} without a subscription or with a plan not in the catalog). */
  planFeatures: PlanFeatures;
  /** Seats of the current subscription: its primary item's quantity. */
  quantity: number;
  /**
   * What else the customer pays for whose price is in the catalog: the current subscription's other items
   * and the items of its other live subscriptions, each with its quantity (absent: none).
   */
  addOns?: readonly { features: PlanFeatures; quantity: number }[];
  /** Lookup keys of the customer's active Stripe entitlements (entitlements.active_entitlement_summary.updated). */
  stripeLookupKeys: readonly string[];
  /** Overrides not revoked (expired ones included: the rule drops them at `now`). */
  overrides: readonly O[];
}

/** The answer: resolved features and the overrides that took part. */
export interface ResolvedEntitlements<O extends EntitlementOverrideInput = EntitlementOverrideInput> {
  entitled: boolean;
  features: Record<string, EntitlementValue>;
  /** Live (unexpired) overrides, newest first. */
  activeOverrides: O[];
}

/**
 * One feature granted twice (the plan and an add-on): unlimited (`null`) wins, limits add up, flags are
 * or-ed; a limit and a flag keep the limit (the flag says only that the feature is on).
 */
function combined(a: EntitlementValue, b: EntitlementValue): EntitlementValue {
  if (a === null || b === null) return null;
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (typeof a === 'boolean' && typeof b === 'boolean') return a || b;
  return typeof a === 'number' ? a : b;
}

/**
 * Resolves features, each layer winning over the one before: the plan (a `perSeat` limit × quantity) with
 * the add-ons combined into it (`combined`),
 * then Stripe's active entitlements (`true` for each lookup key), then live overrides (newest per
 * feature). Only `active` and `grace` are entitled: `restricted`, `suspended` and `none` get no
 * features at all; an override does not lift a suspension.
 */
export function resolveEntitlements<O extends EntitlementOverrideInput>(inputs: EntitlementInputs<O>, now: number): ResolvedEntitlements<O> {
  const activeOverrides = inputs.overrides
    .filter((o) => o.expiresAt === null || o.expiresAt > now)
    .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
  const entitled = ENTITLED_ACCESS_STATES.includes(inputs.accessState);
  if (!entitled) return { entitled, features: {}, activeOverrides };

  const features: Record<string, EntitlementValue> = {};
  const grant = (planFeatures: PlanFeatures, seats: number, combine: boolean) => {
    const quantity = Math.max(1, Math.floor(seats));
    for (const [key, value] of Object.entries(planFeatures)) {
      const v: EntitlementValue = value !== null && typeof value === 'object' ? value.perSeat * quantity : value;
      features[key] = combine && key in features ? combined(features[key]!, v) : v;
    }
  };
  grant(inputs.planFeatures, inputs.quantity, false);
  for (const addOn of inputs.addOns ?? []) grant(addOn.features, addOn.quantity, true);
  for (const key of inputs.stripeLookupKeys) features[key] = true;
  const overridden = new Set<string>();
  for (const o of activeOverrides) {
    if (overridden.has(o.feature)) continue; // newest first: an older override of the same feature loses
    overridden.add(o.feature);
    features[o.feature] = o.value;
  }
  return { entitled, features, activeOverrides };
}
