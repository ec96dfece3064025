/**
 * Plan catalog sync: configuration (PLANS_JSON, else PLANS_FILE, else config/plans.json) → `plans` table.
 * The worker runs it at startup, after migrations: it is the process whose workflows validate plan changes
 * against the catalog, and every deploy restarts it. Idempotent and serialized by an advisory lock, so
 * several replicas starting at once converge on the same rows.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { formatIssues } from '../domain/events/shared';
import { PlanCatalogSchema, type Plan, type PlanFeatures } from '../domain/plan-catalog';
import { ConfigError, type Config } from './config';
import type { Sql } from './db';

/** The catalog shipped with the code, used when neither PLANS_JSON nor PLANS_FILE is set. */
export const DEFAULT_PLANS_FILE = path.resolve(__dirname, '..', 'config', 'plans.json');

/** "plansyn" as an int: one catalog sync at a time per database. */
const PLAN_SYNC_LOCK_KEY = 7_294_911_022;

/** Reads and validates the configured catalog; a bad catalog is a ConfigError naming its variable. */
export function loadPlanConfig(config: Partial<Pick<Config, 'PLANS_JSON' | 'PLANS_FILE'>>): Plan[] {
  const variable = config.PLANS_JSON ? 'PLANS_JSON' : 'PLANS_FILE';
  const file = config.PLANS_FILE ?? DEFAULT_PLANS_FILE;
  let text: string;
  if (config.PLANS_JSON) {
    text = config.PLANS_JSON;
  } else {
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError([variable], `Invalid configuration:\n  - PLANS_FILE: cannot read ${file}: ${(err as Error).message}`);
    }
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([variable], `Invalid configuration:\n  - ${variable}: not valid JSON: ${(err as Error).message}`);
  }
  const parsed = PlanCatalogSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError([variable], `Invalid configuration:\n  - ${variable}: ${formatIssues(parsed.error, 'plans')}`);
  }
  return parsed.data;
}

/** What syncPlans changed. */
export interface SyncPlansResult {
  inserted: string[];
  updated: string[];
  deactivated: string[];
}

/**
 * Upserts every configured plan and deactivates plans no longer configured. Plans are never deleted:
 * subscriptions and checkout sessions reference them.
 */
export async function syncPlans(sql: Sql, plans: Plan[]): Promise<SyncPlansResult> {
  const valid = PlanCatalogSchema.parse(plans);
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${PLAN_SYNC_LOCK_KEY})`;
    const result: SyncPlansResult = { inserted: [], updated: [], deactivated: [] };
    for (const p of valid) {
      const rows = await tx<{ inserted: boolean }[]>`
        INSERT INTO plans (id, stripe_price_id, name, amount, currency, interval, rank, active, features)
        VALUES (${p.id}, ${p.stripePriceId}, ${p.name}, ${p.amount}, ${p.currency}, ${p.interval}, ${p.rank}, ${p.active}, ${tx.json(p.features ?? {})})
        ON CONFLICT (id) DO UPDATE SET
          stripe_price_id = excluded.stripe_price_id, name = excluded.name, amount = excluded.amount,
          currency = excluded.currency, interval = excluded.interval, rank = excluded.rank,
          active = excluded.active, features = excluded.features, updated_at = now()
        WHERE (plans.stripe_price_id, plans.name, plans.amount, plans.currency, plans.interval, plans.rank, plans.active, plans.features)
          IS DISTINCT FROM (excluded.stripe_price_id, excluded.name, excluded.amount, excluded.currency, excluded.interval, excluded.rank, excluded.active, excluded.features)
        RETURNING (xmax = 0) AS inserted`;
      if (rows[0]) (rows[0].inserted ? result.inserted : result.updated).push(p.id);
    }
    const gone = await tx<{ id: string }[]>`
      UPDATE plans SET active = false, updated_at = now()
      WHERE active AND NOT (id = ANY(${valid.map((p) => p.id)}))
      RETURNING id`;
    result.deactivated = gone.map((r) => r.id).sort();
    return result;
  });
}

type PlanRow = {
  id: string;
  stripe_price_id: string;
  name: string;
  amount: number;
  currency: string;
  interval: Plan['interval'];
  rank: number;
  active: boolean;
  features: PlanFeatures;
};

/** Maps a `plans` row to the catalog type. */
function planFromRow(r: PlanRow): Plan {
  return {
    id: r.id,
    stripePriceId: r.stripe_price_id,
    name: r.name,
    amount: r.amount,
    currency: r.currency,
    interval: r.interval,
    rank: r.rank,
    active: r.active,
    features: r.features,
  };
}

/** Reads the catalog; inactive plans are included so a grandfathered current plan can still be ranked. */
export async function readPlans(sql: Sql, opts: { activeOnly?: boolean } = {}): Promise<Plan[]> {
  const rows = await sql<PlanRow[]>`
    SELECT id, stripe_price_id, name, amount, currency, interval, rank, active, features FROM plans
    ${opts.activeOnly ? sql`WHERE active` : sql``}
    ORDER BY rank, id`;
  return rows.map(planFromRow);
}
