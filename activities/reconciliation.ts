/**
 * Activities of the reconciliation workflow. Each page is compared with Postgres inside the activity and
 * only counts and the drifted objects go back to the workflow. Recording is idempotent (a retried
 * page inserts nothing twice); repairs are signals to the customer workflow, the single writer: a
 * `reconcile` with the fresh subscription, or a synthetic invoice event on its `stripeEvent` path. The
 * one write to Stripe undoes the retired 'mark_unpaid' pause, with an idempotency key per subscription.
 * This file: the run's bookkeeping, the subscription scans and lost events; reconciliation-invoices.ts:
 * invoices, cycles, access states and the undo; reconciliation-context.ts: pacing and signals.
 */
import type Stripe from 'stripe';
import type { SubscriptionStatus } from '../domain/billing-event';
import { type SubscriptionSnapshot } from '../domain/messages';
import { reconcileSignal } from '../workflows/contracts';
import {
  diffSubscription,
  isMarkUnpaidEmulation,
  type LocalSubscriptionRow,
  type ReconcileTarget,
  type ReconciliationCounts,
  type ReconciliationPageResult,
  type UndeliveredEventsPageResult,
} from '../domain/reconciliation';
import { subscriptionSnapshotFromStripe } from '../domain/stripe-objects';
import type { Sql, TxSql } from '../lib/db';
import { notifyInbox } from '../lib/inbox';
import { idOf } from '../domain/events/shared';
import { isStripeNotFound, mapStripeError } from './errors';
import { beat, createReconciliationContext, SIGNAL_CONCURRENCY, type ReconciliationDeps } from './reconciliation-context';
import { createInvoiceReconciliation, INVOICE_REPAIR_FIELDS } from './reconciliation-invoices';

export type { ReconciliationDeps } from './reconciliation-context';

type Source = 'stripe_list' | 'local_sweep';

interface LocalRow {
  id: string;
  customer_id: string;
  status: SubscriptionStatus;
  price_id: string | null;
  current_period_end: Date | null;
  cancel_at_period_end: boolean;
  quantity: number;
  updated_at: Date;
}

interface Compared {
  subscriptionId: string;
  local: LocalRow | null;
  snapshot: SubscriptionSnapshot | null;
  /**
   * Seen but not judged: the local row changed after we started reading Stripe (it may be newer than
   * Stripe's answer; the next run looks again), or Stripe's object is unreadable (no customer, unknown status).
   */
  skip: boolean;
  /** Stripe still has collection paused by the retired 'mark_unpaid' action (its customer, for the row). */
  markUnpaid?: { customerId: string | null };
}

const toUnix = (d: Date | null): number | null => (d === null ? null : Math.floor(d.getTime() / 1000));

function toComparable(r: LocalRow): LocalSubscriptionRow {
  return {
    subscriptionId: r.id,
    customerId: r.customer_id,
    status: r.status,
    priceId: r.price_id,
    currentPeriodEnd: toUnix(r.current_period_end),
    cancelAtPeriodEnd: r.cancel_at_period_end,
    quantity: r.quantity,
  };
}

/** Drops NUL characters, which jsonb rejects. */
function withoutNul(value: unknown): unknown {
  if (typeof value === 'string') return value.replace(/\u0000/g, '');
  if (Array.isArray(value)) return value.map(withoutNul);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.replace(/\u0000/g, ''), withoutNul(v)]));
  }
  return value;
}

/** Creates the reconciliation activities. */
export function createReconciliationActivities(deps: ReconciliationDeps) {
  const ctx = createReconciliationContext(deps);
  const { sql, stripe, paced, dbNow, nowSeconds, inChunks, customerStart, requireClient } = ctx;
  const invoices = createInvoiceReconciliation(ctx);
  const { confirmInvoiceRepairs } = invoices;


  async function loadLocal(ids: string[]): Promise<Map<string, LocalRow>> {
    if (ids.length === 0) return new Map();
    const rows = await sql<LocalRow[]>`
      SELECT id, customer_id, status, price_id, current_period_end, cancel_at_period_end, quantity, updated_at
      FROM subscriptions WHERE id IN ${sql(ids)}`;
    return new Map(rows.map((r) => [r.id, r]));
  }

  /** Marks the page seen, records its drift and bumps the run's counters, all in one transaction. */
  async function record(runId: string, source: Source, items: Compared[], nextCursor: string | null): Promise<ReconciliationPageResult> {
    const targets: ReconcileTarget[] = [];
    const driftRows: Record<string, string | null>[] = [];
    for (const item of items) {
      if (item.markUnpaid) {
        // Repaired in Stripe by undoMarkUnpaidEmulation, which marks this row with the outcome.
        driftRows.push({
          run_id: runId,
          object_id: item.subscriptionId,
          customer_id: item.markUnpaid.customerId,
          field: 'pause_collection',
          local_value: null,
          stripe_value: 'keep_as_draft',
        });
      }
      if (item.skip) continue;
      const drift = diffSubscription(item.local && toComparable(item.local), item.snapshot);
      if (drift.length === 0) continue;
      const customerId = item.snapshot?.customerId ?? item.local!.customer_id;
      targets.push({ subscriptionId: item.subscriptionId, customerId, snapshot: item.snapshot });
      for (const d of drift) {
        driftRows.push({
          run_id: runId,
          object_id: item.subscriptionId,
          customer_id: customerId,
          field: d.field,
          local_value: d.localValue,
          stripe_value: d.stripeValue,
        });
      }
    }
    const seenRows = items.map((i) => ({ run_id: runId, object_id: i.subscriptionId, source }));
    const cursorLabel = nextCursor === null ? null : `${source}:${nextCursor}`;

    return sql.begin(async (tx) => {
      // Only first-time inserts count, so a page retried after its commit counts nothing twice.
      const seen = seenRows.length
        ? await tx`
            INSERT INTO reconciliation_seen ${tx(seenRows, 'run_id', 'object_id', 'source')}
            ON CONFLICT (run_id, object_id) DO NOTHING RETURNING object_id`
        : [];
      const drifted = driftRows.length
        ? await tx<{ object_id: string }[]>`
            INSERT INTO reconciliation_drift ${tx(driftRows, 'run_id', 'object_id', 'customer_id', 'field', 'local_value', 'stripe_value')}
            ON CONFLICT (run_id, object_id, field) DO NOTHING RETURNING object_id`
        : [];
      const newlyDrifted = new Set(drifted.map((r) => r.object_id)).size;
      await tx`
        UPDATE reconciliation_runs
        SET scanned = scanned + ${seen.length}, drifted = drifted + ${newlyDrifted}, cursor = ${cursorLabel}
        WHERE id = ${runId}`;
      const undo = items.filter((i) => i.markUnpaid).map((i) => i.subscriptionId);
      return { nextCursor, newlyScanned: seen.length, newlyDrifted, targets, ...(undo.length > 0 ? { undoMarkUnpaid: undo } : {}) };
    });
  }

  /** Records one page of invoice drift (rows about invoices) and bumps the run's counters, in one transaction. */

  async function countsOf(q: Sql | TxSql, runId: string): Promise<Omit<ReconciliationCounts, 'scanned'>> {
    const rows = await q<{ drifted: number; repaired: number; flagged: number; pending: number }[]>`
      SELECT count(DISTINCT object_id)::int AS drifted,
             count(DISTINCT object_id) FILTER (WHERE repair_status = 'repaired')::int AS repaired,
             count(DISTINCT object_id) FILTER (WHERE repair_status = 'flagged')::int AS flagged,
             count(DISTINCT object_id) FILTER (WHERE repair_status = 'pending')::int AS pending
      FROM reconciliation_drift WHERE run_id = ${runId}`;
    return rows[0]!;
  }

  return {
    ...invoices.activities,

    /** Records the run (idempotent: continue-as-new and retries find it already there). */
    async beginReconciliationRun(input: { runId: string; trigger: 'schedule' | 'manual' }): Promise<void> {
      await sql`
        INSERT INTO reconciliation_runs (id, trigger) VALUES (${input.runId}, ${input.trigger})
        ON CONFLICT (id) DO NOTHING`;
    },

    /** Lists one page of all Stripe subscriptions, compares it with Postgres and records the drift. */
    async scanStripeSubscriptionsPage(input: {
      runId: string;
      cursor: string | null;
      pageSize: number;
      /** Also find subscriptions still paused by the retired 'mark_unpaid' action (runs after the reconciliation-invoices patch). */
      undoMarkUnpaid?: boolean;
    }): Promise<ReconciliationPageResult> {
      const startedAt = await dbNow();
      const page = await paced(() =>
        stripe.subscriptions.list({
          status: 'all',
          limit: input.pageSize,
          ...(input.cursor ? { starting_after: input.cursor } : {}),
        }),
      ).catch((err: unknown) => mapStripeError(err, `list subscriptions after ${input.cursor ?? '(start)'}`));
      beat({ cursor: input.cursor });
      const fetchedAt = nowSeconds();
      const locals = await loadLocal(page.data.map((s) => s.id));
      const items: Compared[] = page.data.map((sub) => {
        const local = locals.get(sub.id) ?? null;
        const snapshot = subscriptionSnapshotFromStripe(sub, fetchedAt);
        const markUnpaid = input.undoMarkUnpaid && isMarkUnpaidEmulation(sub) ? { customerId: idOf(sub.customer) } : undefined;
        return {
          subscriptionId: sub.id,
          local,
          snapshot,
          skip: snapshot === null || (local !== null && local.updated_at >= startedAt),
          ...(markUnpaid ? { markUnpaid } : {}),
        };
      });
      const last = page.data[page.data.length - 1];
      return record(input.runId, 'stripe_list', items, page.has_more && last ? last.id : null);
    },

    /**
     * Pages (by id) through local subscriptions the Stripe list did not return in this run, and asks
     * Stripe for each one: found → compared like a listed one; not found → local-only, flagged.
     * Rows created after the run started, and rows already flagged for review, are left out.
     */
    async scanLocalOnlyPage(input: { runId: string; cursor: string | null; pageSize: number }): Promise<ReconciliationPageResult> {
      const rows = await sql<LocalRow[]>`
        SELECT s.id, s.customer_id, s.status, s.price_id, s.current_period_end, s.cancel_at_period_end, s.quantity, s.updated_at
        FROM subscriptions s JOIN reconciliation_runs r ON r.id = ${input.runId}
        WHERE s.created_at < r.started_at
          AND NOT s.needs_review
          ${input.cursor ? sql`AND s.id > ${input.cursor}` : sql``}
          AND NOT EXISTS (
            SELECT 1 FROM reconciliation_seen x
            WHERE x.run_id = ${input.runId} AND x.object_id = s.id AND x.source = 'stripe_list')
        ORDER BY s.id
        LIMIT ${input.pageSize}`;
      const items: Compared[] = [];
      for (const local of rows) {
        const startedAt = await dbNow();
        let found: Stripe.Subscription | null;
        try {
          found = await paced(() => stripe.subscriptions.retrieve(local.id));
        } catch (err) {
          if (!isStripeNotFound(err)) return mapStripeError(err, `retrieve subscription ${local.id}`);
          found = null;
        }
        beat({ cursor: input.cursor, at: local.id });
        const snapshot = found ? subscriptionSnapshotFromStripe(found, nowSeconds()) : null;
        // Re-read: the customer workflow may have written the row while we were asking Stripe.
        const current = (await loadLocal([local.id])).get(local.id) ?? null;
        const skip = (found !== null && snapshot === null) || current === null || current.updated_at >= startedAt;
        items.push({ subscriptionId: local.id, local: current, snapshot, skip });
      }
      const last = rows[rows.length - 1];
      const nextCursor = rows.length === input.pageSize && last ? last.id : null;
      return record(input.runId, 'local_sweep', items, nextCursor);
    },

    /**
     * Lists events Stripe has not delivered to every endpoint (pending retries or failed for good) and
     * puts those missing from the delivery log into it as 'received'. The API's sweeper then dispatches
     * them on the normal path (normalize → customer workflow → dedup by event id → applied_events).
     */
    async recoverUndeliveredEventsPage(input: {
      runId: string;
      cursor: string | null;
      since: number;
      pageSize: number;
    }): Promise<UndeliveredEventsPageResult> {
      const page = await paced(() =>
        stripe.events.list({
          delivery_success: false,
          created: { gte: input.since },
          limit: input.pageSize,
          ...(input.cursor ? { starting_after: input.cursor } : {}),
        }),
      ).catch((err: unknown) => mapStripeError(err, `list undelivered events after ${input.cursor ?? '(start)'}`));
      beat({ cursor: input.cursor });
      let recovered = 0;
      for (const event of page.data) {
        const payload = withoutNul(event) as Record<string, unknown>;
        // An event already in the log is left to the log's own status and the sweeper.
        const inserted = await sql`
          INSERT INTO webhook_events (event_id, type, api_version, livemode, stripe_created_at, status, payload, payload_bytes)
          VALUES (
            ${event.id}, ${event.type}, ${event.api_version ?? null}, ${event.livemode}, ${new Date(event.created * 1000)},
            'received', ${sql.json(payload as never)}, ${Buffer.byteLength(JSON.stringify(payload))})
          ON CONFLICT (event_id) DO NOTHING
          RETURNING event_id`;
        recovered += inserted.length;
      }
      // The API's dispatchers hand them over; wake them now rather than on their timers.
      if (recovered > 0) await notifyInbox(sql).catch(() => {});
      const last = page.data[page.data.length - 1];
      return { nextCursor: page.has_more && last ? last.id : null, listed: page.data.length, recovered };
    },

    /** Hands each drifted subscription to its customer workflow (signal-with-start `reconcile`). */
    async sendReconcileSignals(input: { runId: string; targets: ReconcileTarget[] }): Promise<number> {
      const client = requireClient();
      const sent = await inChunks(input.targets, SIGNAL_CONCURRENCY, (t) =>
        client.workflow.signalWithStart('customerWorkflow', {
          ...customerStart(t.customerId),
          signal: reconcileSignal,
          signalArgs: [{ runId: input.runId, subscriptionId: t.subscriptionId, subscription: t.snapshot }],
        }),
      );
      return sent.length;
    },


    /** Drifted objects of the run whose repair has not landed yet (invoice repairs are confirmed from the cycle rows first). */
    async countPendingRepairs(input: { runId: string }): Promise<number> {
      await confirmInvoiceRepairs(input.runId);
      return (await countsOf(sql, input.runId)).pending;
    },

    /**
     * Closes the run: repaired/flagged are the objects whose drift rows were marked by now (by the
     * customer workflows, or confirmed from the cycle rows). An invoice repair that has not landed is
     * flagged: nothing marks it later (a subscription's stays pending, its workflow marks it when it
     * lands). Idempotent: a finished run keeps its counts.
     */
    async finishReconciliationRun(input: { runId: string }): Promise<ReconciliationCounts> {
      await confirmInvoiceRepairs(input.runId);
      return sql.begin(async (tx) => {
        await tx`
          UPDATE reconciliation_drift SET repair_status = 'flagged', repaired_at = now()
          WHERE run_id = ${input.runId} AND repair_status = 'pending' AND field IN ${tx(INVOICE_REPAIR_FIELDS)}
            AND EXISTS (SELECT 1 FROM reconciliation_runs r WHERE r.id = ${input.runId} AND r.status = 'running')`;
        const counts = await countsOf(tx, input.runId);
        const rows = await tx<{ scanned: number }[]>`
          UPDATE reconciliation_runs
          SET status = 'succeeded', finished_at = now(), cursor = NULL,
              drifted = ${counts.drifted}, repaired = ${counts.repaired}, flagged = ${counts.flagged}
          WHERE id = ${input.runId} AND status = 'running'
          RETURNING scanned`;
        await tx`DELETE FROM reconciliation_seen WHERE run_id = ${input.runId}`;
        if (rows[0]) return { scanned: rows[0].scanned, ...counts };
        const stored = await tx<ReconciliationCounts[]>`
          SELECT scanned, drifted, repaired, flagged FROM reconciliation_runs WHERE id = ${input.runId}`;
        return { ...stored[0]!, pending: counts.pending };
      });
    },

    /** Marks the run failed with the reason (the workflow is failing with it). */
    async failReconciliationRun(input: { runId: string; error: string }): Promise<void> {
      await sql.begin(async (tx) => {
        await tx`
          UPDATE reconciliation_runs SET status = 'failed', error = ${input.error.slice(0, 2000)}, finished_at = now()
          WHERE id = ${input.runId} AND status = 'running'`;
        await tx`DELETE FROM reconciliation_seen WHERE run_id = ${input.runId}`;
      });
    },
  };
}

export type ReconciliationActivities = ReturnType<typeof createReconciliationActivities>;
