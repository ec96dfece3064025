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
 * Resolves features, each layer winning over the one before: the plan (a `perSeat` limit × quantity),
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
  const quantity = Math.max(1, Math.floor(inputs.quantity));
  for (const [key, value] of Object.entries(inputs.planFeatures)) {
    features[key] = value !== null && typeof value === 'object' ? value.perSeat * quantity : value;
  }
  for (const key of inputs.stripeLookupKeys) features[key] = true;
  const overridden = new Set<string>();
  for (const o of activeOverrides) {
    if (overridden.has(o.feature)) continue; // newest first: an older override of the same feature loses
    overridden.add(o.feature);
    features[o.feature] = o.value;
  }
  return { entitled, features, activeOverrides };
}
