/**
 * Entitlements on real Postgres: plan features gated by access state, overrides (admin API, expiry),
 * Stripe Entitlements through normalize + apply, and the per-customer cache revalidated after the apply
 * transaction changes the plan or the access state.
 */
import { describe, expect, it } from 'vitest';
import { createBillingDbActivities } from '../../activities/billing-db';
import type { BillingEvent } from '../../domain/billing-event';
import { normalizeStripeEvent } from '../../domain/events';
import type { Plan } from '../../domain/plan-catalog';
import { loadPlanConfig, syncPlans } from '../../lib/plan-catalog-sync';
import { subscriptionEvent, dunningIds } from '../helpers/dunning';
import { uniqueFixture } from '../helpers/fixtures';
import { useTestStack } from '../helpers/harness';
import { TEST_ADMIN_TOKEN } from '../helpers/services';

const API_TOKEN = 'api-token-entitlements-0123456789';
const T0 = 1_790_000_000;

describe('entitlements', () => {
  const stack = useTestStack({
    activities: false,
    app: { dispatch: false },
    config: { API_TOKEN },
    seed: async (s) => {
      await syncPlans(s.sql, loadPlanConfig({}));
    },
  });
  const api = { Authorization: `Bearer ${API_TOKEN}` };
  const admin = { Authorization: `Bearer ${TEST_ADMIN_TOKEN}`, 'Content-Type': 'application/json' };

  const apply = (events: BillingEvent[]) => createBillingDbActivities({ sql: stack.sql }).applyBillingEvents(events);
  const onPlan = (ids: ReturnType<typeof dunningIds>, priceId: string, status: 'active' | 'past_due' | 'canceled', created: number): BillingEvent => {
    const e = subscriptionEvent({ customerId: ids.customerId, subscriptionId: ids.subscriptionId, status, created });
    return { ...e, type: 'customer.subscription.updated', data: { ...e.data, kind: 'subscription', priceId } } as BillingEvent;
  };
  const entitlements = async (customerId: string) => {
    const res = await stack.app.request(`/customers/${customerId}/entitlements`, { headers: api });
    return { status: res.status, body: (await res.json()) as any };
  };
  const subscribed = async (priceId = 'price_pro_monthly') => {
    const ids = dunningIds();
    await apply([onPlan(ids, priceId, 'active', T0)]);
    return ids;
  };

  it("answers the current plan's features for an active customer", async () => {
    const { customerId } = await subscribed('price_pro_monthly');
    const { status, body } = await entitlements(customerId);
    expect(status).toBe(200);
    expect(body).toMatchObject({
      customerId,
      accessState: 'active',
      entitled: true,
      planId: 'pro-monthly',
      quantity: 1,
      features: { api_calls: 100_000, sso: true, audit_log: false, seats: 1 },
      overrides: [],
      stripeLookupKeys: [],
    });
    expect(Date.parse(body.computedAt)).not.toBeNaN();
  });

  it('adds the features of add-on items and of other live subscriptions to the plan, per seat by their quantity', async () => {
    const addOns: Plan[] = [
      { id: 'sso-addon', stripePriceId: 'price_sso_addon', name: 'SSO add-on', amount: 500, currency: 'usd', interval: 'month', rank: 100, active: true, features: { sso: true, audit_log: true } },
      { id: 'calls-pack', stripePriceId: 'price_calls_pack', name: 'API calls pack', amount: 300, currency: 'usd', interval: 'month', rank: 101, active: true, features: { api_calls: { perSeat: 5_000 } } },
    ];
    await syncPlans(stack.sql, [...loadPlanConfig({}), ...addOns]);
    const ids = dunningIds();
    const withItems = (e: BillingEvent, items: { id: string; priceId: string; quantity: number }[]): BillingEvent =>
      ({ ...e, data: { ...e.data, items } }) as BillingEvent;
    // The base subscription: basic × 3 seats plus the SSO add-on; a second live subscription: 2 call packs;
    // a canceled third one grants nothing.
    await apply([withItems(onPlan(ids, 'price_basic_monthly', 'active', T0), [
      { id: 'si_base', priceId: 'price_basic_monthly', quantity: 3 },
      { id: 'si_sso', priceId: 'price_sso_addon', quantity: 1 },
    ])]);
    const second = { ...ids, subscriptionId: `${ids.subscriptionId}_calls` };
    const third = { ...ids, subscriptionId: `${ids.subscriptionId}_old` };
    await apply([
      withItems(onPlan(second, 'price_calls_pack', 'active', T0 - 10), [{ id: 'si_calls', priceId: 'price_calls_pack', quantity: 2 }]),
      withItems(onPlan(third, 'price_calls_pack', 'canceled', T0 - 20), [{ id: 'si_old', priceId: 'price_calls_pack', quantity: 7 }]),
    ]);
    const { body } = await entitlements(ids.customerId);
    expect(body).toMatchObject({ planId: 'basic-monthly', quantity: 3, entitled: true });
    // basic: api_calls 10,000, seats 1 × 3, sso false, audit_log false; + SSO add-on; + 2 packs × 5,000 calls.
    expect(body.features).toEqual({ api_calls: 20_000, seats: 3, sso: true, audit_log: true });
  });

  it('keeps the features in grace and removes them when suspended', async () => {
    const { customerId } = await subscribed('price_basic_monthly');
    await stack.sql`UPDATE customers SET access_state = 'grace' WHERE id = ${customerId}`;
    expect((await entitlements(customerId)).body).toMatchObject({ accessState: 'grace', entitled: true, features: { api_calls: 10_000 } });
    await stack.sql`UPDATE customers SET access_state = 'suspended' WHERE id = ${customerId}`;
    expect((await entitlements(customerId)).body).toMatchObject({ accessState: 'suspended', entitled: false, features: {} });
  });

  it('answers 404 for an unknown customer, 400 for a malformed id, 401 without the API token', async () => {
    expect((await entitlements('cus_NoSuchCustomer')).status).toBe(404);
    expect((await entitlements('cus_NoSuchCustomer')).body.error).toBe('customer_not_found');
    expect((await stack.app.request('/customers/not-a-customer/entitlements', { headers: api })).status).toBe(400);
    expect((await stack.app.request('/customers/cus_Whoever/entitlements')).status).toBe(401);
  });

  it('lets support grant, list and revoke overrides behind the admin token; a live override wins, an expired one is ignored', async () => {
    const { customerId } = await subscribed('price_basic_monthly');
    const path = `/admin/customers/${customerId}/entitlement-overrides`;
    const grant = (body: unknown, headers: Record<string, string> = admin) => stack.app.request(path, { method: 'POST', headers, body: JSON.stringify(body) });

    expect((await grant({ feature: 'sso', value: true, reason: 'pilot' }, { 'Content-Type': 'application/json' })).status).toBe(401);
    expect((await grant({ feature: 'sso', value: true, reason: 'pilot' }, { ...admin, Authorization: 'Bearer wrong-token-0123456789abc' })).status).toBe(403);
    const invalid = await grant({ feature: 'sso', value: 'yes', reason: 'pilot', extra: 1 });
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as any).error).toBe('validation_error');
    expect((await stack.app.request(`/admin/customers/cus_NoSuchCustomer/entitlement-overrides`, { method: 'POST', headers: admin, body: JSON.stringify({ feature: 'sso', value: true, reason: 'x' }) })).status).toBe(404);

    // Cached first: the grant must invalidate.
    expect((await entitlements(customerId)).body.features.sso).toBe(false);
    const created = await grant({ feature: 'sso', value: true, reason: 'pilot for ACME' });
    expect(created.status).toBe(201);
    const sso = (await created.json()) as any;
    expect(sso).toMatchObject({ customerId, feature: 'sso', value: true, reason: 'pilot for ACME', expiresAt: null, revokedAt: null, expired: false });
    const unlimited = (await (await grant({ feature: 'api_calls', value: null, reason: 'migration', expiresAt: new Date(Date.now() + 3_600_000).toISOString() })).json()) as any;

    let body = (await entitlements(customerId)).body;
    expect(body.features).toMatchObject({ sso: true, api_calls: null });
    expect(body.overrides.map((o: any) => o.id).sort()).toEqual([sso.id, unlimited.id].sort());

    // An override that has expired (in the past) is listed, flagged, and ignored by the answer.
    await stack.sql`UPDATE entitlement_overrides SET expires_at = now() - interval '1 second' WHERE id = ${unlimited.id}`;
    body = (await entitlements(customerId)).body;
    expect(body.features.api_calls).toBe(10_000);
    const list = (await (await stack.app.request(path, { headers: admin })).json()) as any;
    expect(list.data.map((o: any) => [o.id, o.expired])).toEqual(expect.arrayContaining([[sso.id, false], [unlimited.id, true]]));
    expect((await stack.app.request(path)).status).toBe(401);

    const revoked = await stack.app.request(`${path}/${sso.id}`, { method: 'DELETE', headers: admin });
    expect(revoked.status).toBe(200);
    expect(((await revoked.json()) as any).revokedAt).not.toBeNull();
    expect((await stack.app.request(`${path}/${sso.id}`, { method: 'DELETE', headers: admin })).status).toBe(404);
    expect((await entitlements(customerId)).body.features.sso).toBe(false);
    expect(((await (await stack.app.request(path, { headers: admin })).json()) as any).data.map((o: any) => o.id)).toEqual([unlimited.id]);
  });

  it('revalidates its cache after the apply transaction changes the plan or the access state', async () => {
    const ids = await subscribed('price_basic_monthly');
    expect((await entitlements(ids.customerId)).body).toMatchObject({ planId: 'basic-monthly', features: { sso: false } });
    expect((await entitlements(ids.customerId)).body.planId).toBe('basic-monthly'); // a cache hit

    await apply([onPlan(ids, 'price_enterprise_monthly', 'active', T0 + 10)]);
    expect((await entitlements(ids.customerId)).body).toMatchObject({ planId: 'enterprise-monthly', features: { sso: true, api_calls: null, audit_log: true } });

    await apply([onPlan(ids, 'price_enterprise_monthly', 'canceled', T0 + 20)]);
    const after = (await entitlements(ids.customerId)).body;
    expect(after.accessState).not.toMatch(/^(active|grace)$/);
    expect(after).toMatchObject({ entitled: false, features: {} });
  });

  it('normalizes, applies and honors entitlements.active_entitlement_summary.updated; an older summary changes nothing', async () => {
    const { envelope, customerId } = uniqueFixture('entitlements.active_entitlement_summary.updated');
    const ids = { ...dunningIds(), customerId };
    await apply([onPlan(ids, 'price_basic_monthly', 'active', T0)]);
    expect((await entitlements(customerId)).body.features).toMatchObject({ sso: false, audit_log: false });

    envelope.created = T0 + 100;
    const normalized = normalizeStripeEvent(envelope);
    if (normalized.outcome !== 'handled') throw new Error(`not handled: ${JSON.stringify(normalized)}`);
    expect(normalized.event).toMatchObject({ customerId, data: { kind: 'entitlement_summary', lookupKeys: ['audit_log', 'sso'] } });
    expect((await apply([normalized.event])).map((r) => r.outcome)).toEqual(['applied']);
    expect((await entitlements(customerId)).body).toMatchObject({ stripeLookupKeys: ['audit_log', 'sso'], features: { sso: true, audit_log: true, api_calls: 10_000 } });

    const older = uniqueFixture('entitlements.active_entitlement_summary.updated', { token: customerId.slice(4, -'Customer01'.length) }).envelope;
    older.created = T0 + 50;
    older.data.object.entitlements.data = [];
    const stale = normalizeStripeEvent(older);
    if (stale.outcome !== 'handled') throw new Error('not handled');
    await apply([stale.event]);
    expect((await entitlements(customerId)).body.stripeLookupKeys).toEqual(['audit_log', 'sso']);

    const newer = uniqueFixture('entitlements.active_entitlement_summary.updated', { token: customerId.slice(4, -'Customer01'.length) }).envelope;
    newer.created = T0 + 200;
    newer.data.object.entitlements.data = [];
    const cleared = normalizeStripeEvent(newer);
    if (cleared.outcome !== 'handled') throw new Error('not handled');
    await apply([cleared.event]);
    expect((await entitlements(customerId)).body).toMatchObject({ stripeLookupKeys: [], features: { sso: false, audit_log: false } });
  });
});
