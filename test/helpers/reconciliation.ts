/** Reconciliation test wiring: local seed rows, and a worker whose Stripe list calls go to a paging fake. */
import type { Client } from '@temporalio/client';
import { createReconciliationActivities } from '../../activities/reconciliation';
import type { Config } from '../../lib/config';
import type { Sql } from '../../lib/db';
import type { PagingStripe } from './paging-stripe';
import { realActivities, startTestWorker, type RunningWorker } from './services';

/** The plan catalog the seeded subscriptions refer to. */
export async function seedPlans(sql: Sql): Promise<void> {
  await sql`
    INSERT INTO plans (id, stripe_price_id, name, amount, currency, interval, rank) VALUES
      ('basic-monthly', 'price_basic', 'Basic', 1000, 'usd', 'month', 1),
      ('pro-monthly', 'price_pro', 'Pro', 3000, 'usd', 'month', 2)
    ON CONFLICT (id) DO NOTHING`;
}

/** Writes a local subscription row directly (test setup only: production writes go through the customer workflow). */
export async function seedLocalSubscription(
  sql: Sql,
  s: { id: string; customer: string; status?: string; priceId?: string; periodEnd?: number; cancelAtPeriodEnd?: boolean },
): Promise<void> {
  const end = s.periodEnd ?? 1_800_000_000;
  const priceId = s.priceId ?? 'price_basic';
  await sql`INSERT INTO customers (id) VALUES (${s.customer}) ON CONFLICT (id) DO NOTHING`;
  await sql`
    INSERT INTO subscriptions (
      id, customer_id, status, plan_id, price_id, current_period_start, current_period_end,
      cancel_at_period_end, stripe_updated_at)
    VALUES (
      ${s.id}, ${s.customer}, ${s.status ?? 'active'}, (SELECT id FROM plans WHERE stripe_price_id = ${priceId}), ${priceId},
      ${new Date((end - 30 * 86_400) * 1000)}, ${new Date(end * 1000)}, ${s.cancelAtPeriodEnd ?? false}, now() - interval '1 day')`;
}

/**
 * Starts a worker with every real activity (the customer workflow applies the repairs) and the
 * reconciliation activities reading Stripe from `fake`.
 */
export async function startReconciliationWorker(opts: {
  sql: Sql;
  config: Config;
  client: Client;
  fake: PagingStripe;
  rateLimitBackoffMs?: number;
  wrap?: (activities: ReturnType<typeof createReconciliationActivities>) => Partial<ReturnType<typeof createReconciliationActivities>>;
}): Promise<RunningWorker> {
  const reconciliation = createReconciliationActivities({
    sql: opts.sql,
    stripe: opts.fake.stripe,
    config: opts.config,
    temporalClient: opts.client,
    rateLimitBackoffMs: opts.rateLimitBackoffMs ?? 100,
  });
  return startTestWorker({
    taskQueue: opts.config.TEMPORAL_TASK_QUEUE,
    activities: { ...realActivities(opts.sql, opts.config), ...reconciliation, ...opts.wrap?.(reconciliation) },
  });
}
