import { describe, expect, it } from 'vitest';
import { resolveEntitlements, type EntitlementInputs } from '../../domain/entitlements';
import { PlanCatalogSchema } from '../../domain/plan-catalog';
import { loadPlanConfig } from '../../lib/plan-catalog-sync';

const NOW = Date.UTC(2026, 10, 28);
const base: EntitlementInputs = {
  accessState: 'active',
  planFeatures: { api_calls: 10_000, sso: false, seats: { perSeat: 2 }, storage: null },
  quantity: 3,
  stripeLookupKeys: [],
  overrides: [],
};
const override = (feature: string, value: boolean | number | null, at: { createdAt: number; expiresAt?: number | null; id?: string }) => ({
  id: at.id ?? `eo_${feature}_${at.createdAt}`,
  feature,
  value,
  createdAt: at.createdAt,
  expiresAt: at.expiresAt ?? null,
});

describe('resolveEntitlements', () => {
  it('gives the plan features, a per-seat limit times the quantity, null as unlimited', () => {
    expect(resolveEntitlements(base, NOW).features).toEqual({ api_calls: 10_000, sso: false, seats: 6, storage: null });
  });

  it('keeps the features in grace and removes all of them when restricted, suspended or none', () => {
    expect(resolveEntitlements({ ...base, accessState: 'grace' }, NOW)).toMatchObject({ entitled: true, features: { api_calls: 10_000 } });
    for (const accessState of ['restricted', 'suspended', 'none'] as const) {
      const withEverything = { ...base, accessState, stripeLookupKeys: ['sso'], overrides: [override('sso', true, { createdAt: NOW - 1 })] };
      expect(resolveEntitlements(withEverything, NOW)).toMatchObject({ entitled: false, features: {} });
    }
  });

  it('lets Stripe lookup keys win over the plan, and a live override win over both', () => {
    const r = resolveEntitlements({ ...base, stripeLookupKeys: ['sso', 'audit_log'], overrides: [override('audit_log', false, { createdAt: NOW - 10 })] }, NOW);
    expect(r.features).toMatchObject({ sso: true, audit_log: false });
  });

  it('ignores an expired override and takes the newest of two live ones', () => {
    const r = resolveEntitlements(
      {
        ...base,
        overrides: [
          override('api_calls', 1, { createdAt: NOW - 30 }),
          override('api_calls', 50_000, { createdAt: NOW - 20, expiresAt: NOW + 1000 }),
          override('api_calls', 99, { createdAt: NOW - 10, expiresAt: NOW }),
        ],
      },
      NOW,
    );
    expect(r.features.api_calls).toBe(50_000);
    expect(r.activeOverrides.map((o) => o.value)).toEqual([50_000, 1]);
  });

  it('adds what add-on items and other live subscriptions grant: flags or-ed, limits summed (per seat by their quantity), unlimited wins', () => {
    const r = resolveEntitlements(
      {
        ...base,
        addOns: [
          { features: { sso: true, api_calls: 5_000 }, quantity: 1 },
          { features: { seats: { perSeat: 1 }, api_calls: 2_500, exports: true }, quantity: 4 },
          { features: { storage: 100 }, quantity: 1 },
        ],
      },
      NOW,
    );
    // base: api_calls 10,000, sso false, seats 2 × 3 = 6, storage null (unlimited).
    expect(r.features).toEqual({ api_calls: 17_500, sso: true, seats: 10, storage: null, exports: true });
    // Overrides still have the last word; a suspension still removes everything.
    expect(resolveEntitlements({ ...base, addOns: [{ features: { sso: true }, quantity: 1 }], overrides: [override('sso', false, { createdAt: NOW - 1 })] }, NOW).features.sso).toBe(false);
    expect(resolveEntitlements({ ...base, accessState: 'suspended', addOns: [{ features: { sso: true }, quantity: 1 }] }, NOW).features).toEqual({});
  });

  it('counts at least one seat', () => {
    expect(resolveEntitlements({ ...base, quantity: 0 }, NOW).features.seats).toBe(2);
  });
});

describe('plan features in the catalog', () => {
  it('accept flags, non-negative limits, null and per-seat limits, and reject anything else', () => {
    const plan = loadPlanConfig({})[0]!;
    expect(PlanCatalogSchema.safeParse([{ ...plan, features: { a: true, b: 0, c: null, d: { perSeat: 5 } } }]).success).toBe(true);
    for (const bad of [{ a: -1 }, { a: 1.5 }, { a: 'yes' }, { a: { perSeat: 1, extra: 1 } }, { 'Not A Key': true }]) {
      expect(PlanCatalogSchema.safeParse([{ ...plan, features: bad }]).success, JSON.stringify(bad)).toBe(false);
    }
  });

  it('ship in config/plans.json', () => {
    expect(loadPlanConfig({}).find((p) => p.id === 'pro-monthly')?.features).toMatchObject({ sso: true, api_calls: 100_000 });
  });
});
