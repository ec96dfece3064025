/**
 * The entitlement read model: each customer's inputs, read in one query and kept in memory; while LISTEN
 * entitlements_changed (migration 0033) is up a cached entry is answered without Postgres and dropped when
 * a notification names its customer ('' = all); while it is not (startup, connection lost, Postgres
 * restart) every hit is revalidated by one primary-key read of entitlement_versions, and the cache starts
 * over when LISTEN is back, since what was sent meanwhile is lost.
 */
import { pickCurrentSubscription } from '../domain/billing/current-subscription';
import type { SubscriptionStatus } from '../domain/billing-event';
import { resolveEntitlements, type EntitlementInputs, type EntitlementOverrideInput } from '../domain/entitlements';
import type { PlanFeatures } from '../domain/plan-catalog';
import type { AccessState } from '../domain/subscription-state';
import type { Sql } from '../lib/db';
import type { Logger } from '../lib/logger';
import { startPgListener, type PgListener } from '../lib/pg-listener';

/** The channel migration 0033's bump notifies: the customer id, '' for a catalog change. */
export const ENTITLEMENTS_CHANNEL = 'entitlements_changed';

/** Customers whose inputs are kept in memory; the oldest entry is dropped beyond it. */
const CACHE_MAX_ENTRIES = 100_000;

/** What one customer's entitlement answer is computed from, with the version it was read at. */
interface CachedInputs {
  version: string;
  planId: string | null;
  inputs: EntitlementInputs<EntitlementOverrideInput & { reason: string }>;
}

type InputsRow = {
  access_state: AccessState;
  version: string;
  subs: { id: string; status: SubscriptionStatus; planId: string | null; priceId: string | null; features: PlanFeatures | null; quantity: number; stripeUpdatedAt: number | null; updatedAt: number | null }[];
  /** The items of live subscriptions whose price is in the catalog, with that plan's features. */
  items: { subscriptionId: string; priceId: string; quantity: number; features: PlanFeatures }[];
  overrides: { id: string; feature: string; value: boolean | number | null; reason: string; expiresAt: number | null; createdAt: number }[];
  stripe_keys: string[];
};

/** The body of GET /customers/{customerId}/entitlements. */
export type EntitlementsBody = ReturnType<typeof answer>;

/** Reads entitlements through a per-process cache. */
export interface EntitlementReader {
  read(customerId: string): Promise<EntitlementsBody | null>;
  /** Drops one customer's entry after a local write: at once here; other replicas learn by NOTIFY. */
  invalidate(customerId: string): void;
  /** Starts LISTEN (in the background): until it is up, and whenever it is down, every hit is revalidated. */
  start(): void;
  /** Ends LISTEN (graceful shutdown); the reader goes on revalidating every hit. */
  stop(): Promise<void>;
  /** Whether LISTEN is up (hits are answered from memory), cached customers, notifications heard. */
  status(): { listening: boolean; entries: number; notifications: number };
}

/** Creates the reader and its cache (one per process: api/server.ts, or createApp's default without LISTEN). */
export function createEntitlementReader(deps: { sql: Sql; logger?: Logger; maxEntries?: number; heartbeatMs?: number }): EntitlementReader {
  const { sql } = deps;
  const max = deps.maxEntries ?? CACHE_MAX_ENTRIES;
  const cache = new Map<string, CachedInputs>();
  let listener: PgListener | null = null;
  let notifications = 0;
  // A load keeps its result only if nothing invalidated it meanwhile: `epoch` moves when everything is
  // dropped, a customer's `gen` when it is (kept only while that customer has loads in flight).
  let epoch = 0;
  const loading = new Map<string, { gen: number; loads: number }>();

  const drop = (customerId: string) => {
    cache.delete(customerId);
    const l = loading.get(customerId);
    if (l) l.gen++;
  };
  const dropAll = () => {
    cache.clear();
    epoch++;
  };

  /** All inputs in one statement: one snapshot, so the version read matches the rows read. */
  async function load(customerId: string): Promise<CachedInputs | null> {
    const [row] = await sql<InputsRow[]>`
      SELECT c.access_state,
        (SELECT COALESCE(sum(v.version), 0) FROM entitlement_versions v WHERE v.customer_id IN (c.id, ''))::text AS version,
        COALESCE((SELECT json_agg(json_build_object(
            'id', s.id, 'status', s.status, 'planId', s.plan_id, 'priceId', s.price_id, 'features', p.features, 'quantity', s.quantity,
            'stripeUpdatedAt', floor(extract(epoch FROM s.stripe_updated_at) * 1000),
            'updatedAt', floor(extract(epoch FROM s.updated_at) * 1000)))
          FROM subscriptions s LEFT JOIN plans p ON p.id = s.plan_id WHERE s.customer_id = c.id), '[]'::json) AS subs,
        COALESCE((SELECT json_agg(json_build_object(
            'subscriptionId', s.id, 'priceId', i.item->>'priceId', 'quantity', COALESCE((i.item->>'quantity')::int, 1), 'features', p.features)
            ORDER BY s.id, i.n)
          FROM subscriptions s
          CROSS JOIN LATERAL jsonb_array_elements(s.items) WITH ORDINALITY AS i(item, n)
          JOIN plans p ON p.stripe_price_id = i.item->>'priceId'
          WHERE s.customer_id = c.id AND s.status IN ('active', 'trialing', 'past_due')), '[]'::json) AS items,
        COALESCE((SELECT json_agg(json_build_object(
            'id', o.id, 'feature', o.feature, 'value', o.value, 'reason', o.reason,
            'expiresAt', floor(extract(epoch FROM o.expires_at) * 1000), 'createdAt', floor(extract(epoch FROM o.created_at) * 1000)))
          FROM entitlement_overrides o WHERE o.customer_id = c.id AND o.revoked_at IS NULL), '[]'::json) AS overrides,
        COALESCE((SELECT se.lookup_keys FROM stripe_entitlements se WHERE se.customer_id = c.id), '{}') AS stripe_keys
      FROM customers c WHERE c.id = ${customerId}`;
    if (!row) return null;
    // The one "current subscription" rule of the read model and the workflow.
    const current = pickCurrentSubscription(row.subs);
    // Everything else the customer pays for adds to the current plan: its other items, other live subscriptions.
    let primarySeen = false;
    const addOns = row.items
      .filter((i) => {
        const primary = !primarySeen && current !== null && i.subscriptionId === current.id && i.priceId === current.priceId;
        if (primary) primarySeen = true;
        return !primary;
      })
      .map((i) => ({ features: i.features, quantity: i.quantity }));
    return {
      version: row.version,
      planId: current?.planId ?? null,
      inputs: {
        accessState: row.access_state,
        planFeatures: current?.features ?? {},
        quantity: current?.quantity ?? 1,
        addOns,
        stripeLookupKeys: row.stripe_keys,
        overrides: row.overrides,
      },
    };
  }

  /** Loads and caches, unless a notification (or a clear) came between the load's snapshot and now. */
  async function loadAndKeep(customerId: string): Promise<CachedInputs | null> {
    let l = loading.get(customerId);
    if (!l) loading.set(customerId, (l = { gen: 0, loads: 0 }));
    l.loads++;
    const [gen, atEpoch] = [l.gen, epoch];
    try {
      const fresh = await load(customerId);
      if (fresh && l.gen === gen && epoch === atEpoch) {
        cache.set(customerId, fresh);
        if (cache.size > max) cache.delete(cache.keys().next().value!);
      }
      return fresh;
    } finally {
      if (--l.loads === 0) loading.delete(customerId);
    }
  }

  return {
    async read(customerId) {
      const cached = cache.get(customerId);
      if (cached) {
        // The hot path: LISTEN is up, so a change would have dropped the entry.
        if (listener?.listening) return answer(customerId, cached, Date.now());
        const [v] = await sql<{ version: string }[]>`
          SELECT COALESCE(sum(version), 0)::text AS version FROM entitlement_versions WHERE customer_id IN (${customerId}, '')`;
        if (v?.version === cached.version) return answer(customerId, cached, Date.now());
        if (cache.get(customerId) === cached) cache.delete(customerId);
      }
      const fresh = await loadAndKeep(customerId);
      return fresh ? answer(customerId, fresh, Date.now()) : null;
    },
    invalidate: drop,
    start() {
      if (listener) return;
      if (!deps.logger) throw new Error('createEntitlementReader: start() needs a logger');
      listener = startPgListener({
        sql,
        channel: ENTITLEMENTS_CHANNEL,
        logger: deps.logger,
        heartbeatMs: deps.heartbeatMs,
        onNotify(customerId) {
          notifications++;
          if (customerId === '') dropAll();
          else drop(customerId);
        },
        // Entries kept while deaf are revalidated by version; once listening they would not be.
        onListen: dropAll,
        onDeaf() {},
      });
    },
    async stop() {
      const l = listener;
      listener = null;
      await l?.stop();
    },
    status: () => ({ listening: listener?.listening ?? false, entries: cache.size, notifications }),
  };
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The response body for cached inputs at `now` (expiry is decided here, not by a write). */
function answer(customerId: string, cached: CachedInputs, now: number) {
  const resolved = resolveEntitlements(cached.inputs, now);
  return {
    customerId,
    accessState: cached.inputs.accessState,
    entitled: resolved.entitled,
    planId: cached.planId,
    quantity: cached.inputs.quantity,
    features: resolved.features,
    stripeLookupKeys: [...cached.inputs.stripeLookupKeys],
    overrides: resolved.activeOverrides.map((o) => ({ id: o.id, feature: o.feature, value: o.value, reason: o.reason, expiresAt: iso(o.expiresAt), createdAt: iso(o.createdAt)! })),
    computedAt: new Date(now).toISOString(),
  };
}
