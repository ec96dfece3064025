/** Reconciliation test wiring: local seed rows, and a worker whose Stripe calls go to a paging fake. */
import type { Client } from '@temporalio/client';
import { refreshAccessState } from '../../activities/billing-db';
import { createReconciliationActivities } from '../../activities/reconciliation';
import { createStripeReadActivities } from '../../activities/stripe';
import type { BillingEvent } from '../../domain/billing-event';
import { normalizeStripeEvent } from '../../domain/events';
import { customerWorkflowId } from '../../domain/ids';
import type { Config } from '../../lib/config';
import type { Sql } from '../../lib/db';
import { stripeEventSignal } from '../../workflows/contracts';
import type { FakeInvoice, PagingStripe } from './paging-stripe';
import { eventually, realActivities, startTestWorker, uniqueId, type RunningWorker } from './services';

/** The plan catalog the seeded subscriptions refer to. */
export async function seedPlans(sql: Sql): Promise<void> {
  await sql`
    INSERT INTO plans (id, stripe_price_id, name, amount, currency, interval, rank) VALUES
      ('basic-monthly', 'price_basic', 'Basic', 1000, 'usd', 'month', 1),
      ('pro-monthly', 'price_pro', 'Pro', 3000, 'usd', 'month', 2)
    ON CONFLICT (id) DO NOTHING`;
}

/**
 * Writes a local subscription row directly, with the access state the apply path would derive for it
 * (test setup only: production writes go through the customer workflow).
 */
export async function seedLocalSubscription(
  sql: Sql,
  s: { id: string; customer: string; status?: string; priceId?: string; periodEnd?: number; cancelAtPeriodEnd?: boolean },
): Promise<void> {
  const end = s.periodEnd ?? 1_800_000_000;
  const priceId = s.priceId ?? 'price_basic';
  await sql.begin(async (tx) => {
    await tx`INSERT INTO customers (id) VALUES (${s.customer}) ON CONFLICT (id) DO NOTHING`;
    await tx`
      INSERT INTO subscriptions (
        id, customer_id, status, plan_id, price_id, current_period_start, current_period_end,
        cancel_at_period_end, stripe_updated_at)
      VALUES (
        ${s.id}, ${s.customer}, ${s.status ?? 'active'}, (SELECT id FROM plans WHERE stripe_price_id = ${priceId}), ${priceId},
        ${new Date((end - 30 * 86_400) * 1000)}, ${new Date(end * 1000)}, ${s.cancelAtPeriodEnd ?? false}, now() - interval '1 day')`;
    await refreshAccessState(tx, s.customer);
  });
}

/**
 * Opens a dunning cycle the way production does: an `invoice.payment_failed` webhook for `invoice`,
 * normalized and signalled to the customer workflow; resolves once its cycle row exists.
 */
export async function failInvoiceThroughWebhook(opts: { sql: Sql; client: Client; config: Config; invoice: FakeInvoice }): Promise<BillingEvent> {
  const normalized = normalizeStripeEvent({
    id: `evt_${uniqueId()}`,
    type: 'invoice.payment_failed',
    created: opts.invoice.created + 3600,
    livemode: false,
    data: { object: opts.invoice },
  });
  if (normalized.outcome !== 'handled') throw new Error(`fixture invoice does not normalize: ${JSON.stringify(normalized)}`);
  const event = normalized.event;
  await opts.client.workflow.signalWithStart('customerWorkflow', {
    workflowId: customerWorkflowId(event.customerId),
    taskQueue: opts.config.TEMPORAL_TASK_QUEUE,
    args: [{ customerId: event.customerId }],
    signal: stripeEventSignal,
    signalArgs: [event],
  });
  await eventually(async () => (await opts.sql`SELECT 1 FROM dunning_cycles WHERE invoice_id = ${opts.invoice.id}`).length > 0, 20_000, `a cycle for ${opts.invoice.id}`);
  return event;
}

/**
 * Starts a worker with every real activity (the customer workflow applies the repairs) and the
 * reconciliation activities reading Stripe from `fake`; subscription re-reads (dunning cycles,
 * same-second ties) read the fake too, so every workflow sees one Stripe.
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
  const { fetchSubscription } = createStripeReadActivities({ stripe: opts.fake.stripe });
  return startTestWorker({
    taskQueue: opts.config.TEMPORAL_TASK_QUEUE,
    activities: { ...realActivities(opts.sql, opts.config), fetchSubscription, ...reconciliation, ...opts.wrap?.(reconciliation) },
  });
}
