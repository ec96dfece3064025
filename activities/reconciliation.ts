/**
 * Activities of the reconciliation workflow. Each page is compared with Postgres inside the activity and
 * only counts and the drifted objects go back to the workflow. Recording is idempotent (a retried
 * page inserts nothing twice); repairs are signals to the customer workflow, the single writer: a
 * `reconcile` with the fresh subscription, or a synthetic invoice event on its `stripeEvent` path. The
 * one write to Stripe undoes the retired 'mark_unpaid' pause, with an idempotency key per subscription.
 */
import { heartbeat, log } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import Stripe from 'stripe';
import type { BillingEvent, SubscriptionStatus } from '../domain/billing-event';
import { DUNNING_FINAL_ACTION_METADATA_KEY } from '../domain/dunning-cycle';
import { idOf } from '../domain/events/shared';
import { customerWorkflowId } from '../domain/ids';
import { type SubscriptionSnapshot } from '../domain/messages';
import { reconcileSignal, stripeEventSignal } from '../workflows/contracts';
import {
  closedInvoiceEventType,
  diffSubscription,
  invoiceRepairEvent,
  isMarkUnpaidEmulation,
  pastDueInvoiceSubscription,
  type AccessStatePageResult,
  type InvoicePageResult,
  type LocalSubscriptionRow,
  type ReconcileTarget,
  type ReconciliationCounts,
  type ReconciliationPageResult,
  type StripeInvoiceView,
  type UndeliveredEventsPageResult,
} from '../domain/reconciliation';
import { BillingWorkflowKindKey, StripeCustomerIdKey } from '../workflows/contracts';
import { subscriptionSnapshotFromStripe } from '../domain/stripe-objects';
import type { Config } from '../lib/config';
import { accessFactColumns, accessOf, type AccessFactRow } from './db/customers';
import type { Sql, TxSql } from '../lib/db';
import { isStripeNotFound, mapStripeError } from './errors';
import { createTokenBucket, type RateLimiter } from './rate-limit';

export interface ReconciliationDeps {
  sql: Sql;
  stripe: Pick<Stripe, 'subscriptions' | 'events' | 'invoices'>;
  config: Pick<Config, 'TEMPORAL_TASK_QUEUE' | 'STRIPE_RATE_LIMIT_PER_SECOND'>;
  /** Sends the repair signals; required by sendReconcileSignals only. */
  temporalClient?: Client | undefined;
  /** Shared by every reconciliation call in this worker process (default: STRIPE_RATE_LIMIT_PER_SECOND). */
  rateLimiter?: RateLimiter;
  /** First in-activity wait after a 429, doubled per attempt (default 1000 ms). */
  rateLimitBackoffMs?: number;
  now?: () => number;
}

/** 429s retried inside the activity before it fails the attempt (Temporal then retries it, without limit). */
const IN_ACTIVITY_RATE_LIMIT_RETRIES = 4;
const MAX_RATE_LIMIT_BACKOFF_MS = 20_000;
const SIGNAL_CONCURRENCY = 10;
/** Invoice retrieves in flight at once (the token bucket still paces them). */
const RETRIEVE_CONCURRENCY = 5;
/** Expanded in the open-invoices list so a canceled subscription's invoices are told apart without another call. */
const INVOICE_SUBSCRIPTION_EXPAND = 'data.parent.subscription_details.subscription';
/** Drift fields whose repair is a synthetic invoice event: reconciliation confirms them from the cycle rows. */
const INVOICE_REPAIR_FIELDS = ['invoice_without_cycle', 'cycle_invoice_closed'];

type Source = 'stripe_list' | 'local_sweep';

interface LocalRow {
  id: string;
  customer_id: string;
  status: SubscriptionStatus;
  price_id: string | null;
  current_period_end: Date | null;
  cancel_at_period_end: boolean;
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

/** One invoice-side mismatch of a page. */
interface InvoiceFinding {
  invoiceId: string;
  customerId: string | null;
  field: 'invoice_without_cycle' | 'cycle_invoice_closed';
  localValue: string | null;
  stripeValue: string | null;
  /** The repair for the customer workflow; null when there is none to send (flagged for a human). */
  event: BillingEvent | null;
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
  };
}

/** Heartbeats when running as an activity; a no-op when called directly. */
function beat(details?: unknown): void {
  try {
    heartbeat(details);
  } catch {
    /* not in an activity context */
  }
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

const isRateLimited = (err: unknown): boolean =>
  err instanceof Stripe.errors.StripeRateLimitError || (err instanceof Stripe.errors.StripeError && err.statusCode === 429);

/** Creates the reconciliation activities. */
export function createReconciliationActivities(deps: ReconciliationDeps) {
  const { sql, stripe } = deps;
  const limiter = deps.rateLimiter ?? createTokenBucket({ ratePerSecond: deps.config.STRIPE_RATE_LIMIT_PER_SECOND });
  const backoffMs = deps.rateLimitBackoffMs ?? 1000;
  const nowSeconds = () => Math.floor((deps.now?.() ?? Date.now()) / 1000);

  /** Paces one Stripe call and waits out 429s; other errors are rethrown untouched for the caller to map. */
  async function paced<T>(call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      await limiter.acquire();
      try {
        return await call();
      } catch (err) {
        if (!isRateLimited(err)) throw err;
        limiter.backOff(Math.min(MAX_RATE_LIMIT_BACKOFF_MS, backoffMs * 2 ** (attempt - 1)));
        beat({ rateLimited: attempt });
        if (attempt >= IN_ACTIVITY_RATE_LIMIT_RETRIES) throw err;
      }
    }
  }

  async function dbNow(): Promise<Date> {
    const rows = await sql<{ t: Date }[]>`SELECT clock_timestamp() AS t`;
    return rows[0]!.t;
  }

  async function loadLocal(ids: string[]): Promise<Map<string, LocalRow>> {
    if (ids.length === 0) return new Map();
    const rows = await sql<LocalRow[]>`
      SELECT id, customer_id, status, price_id, current_period_end, cancel_at_period_end, updated_at
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
  async function recordInvoicePage(
    runId: string,
    phase: 'open_invoices' | 'open_cycles',
    findings: InvoiceFinding[],
    checked: number,
    nextCursor: string | null,
  ): Promise<InvoicePageResult> {
    const rows: Record<string, string | Date | null>[] = findings.map((f) => ({
      run_id: runId,
      object_type: 'invoice',
      object_id: f.invoiceId,
      customer_id: f.customerId,
      field: f.field,
      local_value: f.localValue,
      stripe_value: f.stripeValue,
      repair_status: f.event ? 'pending' : 'flagged',
      repaired_at: f.event ? null : new Date(),
    }));
    return sql.begin(async (tx) => {
      const inserted = rows.length
        ? await tx<{ object_id: string }[]>`
            INSERT INTO reconciliation_drift ${tx(rows, 'run_id', 'object_type', 'object_id', 'customer_id', 'field', 'local_value', 'stripe_value', 'repair_status', 'repaired_at')}
            ON CONFLICT (run_id, object_id, field) DO NOTHING RETURNING object_id`
        : [];
      await tx`
        UPDATE reconciliation_runs
        SET drifted = drifted + ${inserted.length}, cursor = ${nextCursor === null ? null : `${phase}:${nextCursor}`}
        WHERE id = ${runId}`;
      return { nextCursor, checked, newlyDrifted: inserted.length, events: findings.flatMap((f) => (f.event ? [f.event] : [])) };
    });
  }

  /** Marks invoice repairs whose effect the cycle rows show (a cycle opened; a cycle ended) as repaired. */
  async function confirmInvoiceRepairs(runId: string): Promise<void> {
    await sql`
      UPDATE reconciliation_drift d SET repair_status = 'repaired', repaired_at = now()
      WHERE d.run_id = ${runId} AND d.repair_status = 'pending' AND d.field IN ${sql(INVOICE_REPAIR_FIELDS)}
        AND EXISTS (
          SELECT 1 FROM dunning_cycles c
          WHERE c.invoice_id = d.object_id AND (d.field = 'invoice_without_cycle' OR c.ended_at IS NOT NULL))`;
  }

  /** The start half of a signal-with-start of one customer workflow, as the webhook dispatcher sends it. */
  function customerStart(customerId: string) {
    return {
      workflowId: customerWorkflowId(customerId),
      taskQueue: deps.config.TEMPORAL_TASK_QUEUE,
      args: [{ customerId }],
      typedSearchAttributes: [
        { key: StripeCustomerIdKey, value: customerId },
        { key: BillingWorkflowKindKey, value: 'customer' },
      ],
    };
  }

  function requireClient(): Client {
    if (!deps.temporalClient) throw ApplicationFailure.nonRetryable('no Temporal client configured for reconciliation repairs', 'ConfigurationError');
    return deps.temporalClient;
  }

  /** Maps every item through `call`, `concurrency` at a time, heartbeating per chunk; results in item order. */
  async function inChunks<T, R>(items: T[], concurrency: number, call: (item: T) => Promise<R>): Promise<R[]> {
    const out: R[] = [];
    for (let i = 0; i < items.length; i += concurrency) {
      out.push(...(await Promise.all(items.slice(i, i + concurrency).map(call))));
      beat({ done: out.length });
    }
    return out;
  }

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
        SELECT s.id, s.customer_id, s.status, s.price_id, s.current_period_end, s.cancel_at_period_end, s.updated_at
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

    /**
     * Lists one page of open Stripe invoices and records those that should be in dunning but have no
     * cycle here (attempted, not a plan change's proration, subscription not ended). Returns for each a
     * synthetic `invoice.payment_failed` for its customer workflow, whose reducer opens the one cycle.
     */
    async scanOpenInvoicesPage(input: { runId: string; cursor: string | null; pageSize: number }): Promise<InvoicePageResult> {
      const page = await paced(() =>
        stripe.invoices.list({
          status: 'open',
          limit: input.pageSize,
          expand: [INVOICE_SUBSCRIPTION_EXPAND],
          ...(input.cursor ? { starting_after: input.cursor } : {}),
        }),
      ).catch((err: unknown) => mapStripeError(err, `list open invoices after ${input.cursor ?? '(start)'}`));
      beat({ cursor: input.cursor });
      const fetchedAt = nowSeconds();
      const due = page.data.filter((inv) => pastDueInvoiceSubscription(inv as StripeInvoiceView) !== null);
      const withCycle = due.length
        ? new Set(
            (await sql<{ invoice_id: string }[]>`SELECT invoice_id FROM dunning_cycles WHERE invoice_id IN ${sql(due.map((i) => i.id))}`).map(
              (r) => r.invoice_id,
            ),
          )
        : new Set<string>();
      const findings: InvoiceFinding[] = [];
      for (const inv of due) {
        if (withCycle.has(inv.id)) continue;
        const event = invoiceRepairEvent({ runId: input.runId, invoice: inv as StripeInvoiceView, type: 'invoice.payment_failed', fetchedAt });
        findings.push({
          invoiceId: inv.id,
          customerId: event?.customerId ?? idOf(inv.customer),
          field: 'invoice_without_cycle',
          localValue: null,
          stripeValue: `open, ${inv.attempt_count} attempt(s)`,
          event,
        });
      }
      const last = page.data[page.data.length - 1];
      return recordInvoicePage(input.runId, 'open_invoices', findings, page.data.length, page.has_more && last ? last.id : null);
    },

    /**
     * Pages (by invoice id) through the dunning cycles open here and asks Stripe for each invoice; one
     * already paid, voided or written off is recorded, with a synthetic invoice event (invoice.paid,
     * invoice.voided, invoice.marked_uncollectible) whose apply ends the cycle. An invoice Stripe does
     * not know is flagged. A cycle that ended while we asked is left alone.
     */
    async scanOpenCyclesPage(input: { runId: string; cursor: string | null; pageSize: number }): Promise<InvoicePageResult> {
      const cycles = await sql<{ invoice_id: string; customer_id: string; state: string }[]>`
        SELECT invoice_id, customer_id, state FROM dunning_cycles
        WHERE ended_at IS NULL ${input.cursor ? sql`AND invoice_id > ${input.cursor}` : sql``}
        ORDER BY invoice_id
        LIMIT ${input.pageSize}`;
      const lookUp = async (cycle: (typeof cycles)[number]): Promise<InvoiceFinding | null> => {
        let invoice: Stripe.Invoice | null;
        try {
          invoice = await paced(() => stripe.invoices.retrieve(cycle.invoice_id));
        } catch (err) {
          if (!isStripeNotFound(err)) return mapStripeError(err, `retrieve invoice ${cycle.invoice_id}`);
          invoice = null;
        }
        const base = { invoiceId: cycle.invoice_id, customerId: cycle.customer_id, field: 'cycle_invoice_closed' as const, localValue: cycle.state };
        if (!invoice) return { ...base, stripeValue: null, event: null };
        const type = closedInvoiceEventType(invoice.status);
        if (!type) return null;
        const event = invoiceRepairEvent({ runId: input.runId, invoice: invoice as StripeInvoiceView, type, fetchedAt: nowSeconds() });
        // The cycle lives in its customer's workflow: an invoice Stripe files under another customer is for a human.
        return { ...base, stripeValue: invoice.status ?? null, event: event?.customerId === cycle.customer_id ? event : null };
      };
      const findings = (await inChunks(cycles, RETRIEVE_CONCURRENCY, lookUp)).filter((f): f is InvoiceFinding => f !== null);
      const stillOpen = findings.length
        ? new Set(
            (
              await sql<{ invoice_id: string }[]>`
                SELECT invoice_id FROM dunning_cycles WHERE invoice_id IN ${sql(findings.map((f) => f.invoiceId))} AND ended_at IS NULL`
            ).map((r) => r.invoice_id),
          )
        : new Set<string>();
      const last = cycles[cycles.length - 1];
      const nextCursor = cycles.length === input.pageSize && last ? last.invoice_id : null;
      return recordInvoicePage(input.runId, 'open_cycles', findings.filter((f) => stillOpen.has(f.invoiceId)), cycles.length, nextCursor);
    },

    /** Hands each synthetic invoice event to its customer workflow (signal-with-start `stripeEvent`), like a webhook. */
    async sendInvoiceEvents(input: { runId: string; events: BillingEvent[] }): Promise<number> {
      const client = requireClient();
      const sent = await inChunks(input.events, SIGNAL_CONCURRENCY, (e) =>
        client.workflow.signalWithStart('customerWorkflow', { ...customerStart(e.customerId), signal: stripeEventSignal, signalArgs: [e] }),
      );
      return sent.length;
    },

    /**
     * Unsets the retired 'mark_unpaid' pause in Stripe (`pause_collection` and the dunning metadata,
     * idempotency key per subscription) and marks each `pause_collection` drift row repaired, or failed
     * when Stripe refuses the update. Stripe then collects the subscription's new invoices again; the
     * exhausted invoice the pause stood for is written off (what the mark_uncollectible final action
     * does), so access follows it (suspended until it is paid) instead of a grace that nothing ends.
     */
    async undoMarkUnpaidEmulation(input: { runId: string; subscriptionIds: string[] }): Promise<{ undone: number; failed: number }> {
      async function writeOffExhausted(invoiceId: string, subscriptionId: string): Promise<void> {
        try {
          await paced(() => stripe.invoices.markUncollectible(invoiceId, {}, { idempotencyKey: `recon:undo-mark-unpaid:${subscriptionId}:write-off` }));
        } catch (err) {
          // Paid, voided or written off since: nothing to write off.
          if (!(err instanceof Stripe.errors.StripeInvalidRequestError)) throw err;
          log.info('exhausted invoice not written off', { invoiceId, subscriptionId, error: err.message });
        }
      }
      let undone = 0;
      let failed = 0;
      for (const id of input.subscriptionIds) {
        let outcome: 'repaired' | 'failed' = 'repaired';
        try {
          const before = await paced(() => stripe.subscriptions.retrieve(id));
          const exhausted = (before.metadata ?? {}).dunning_invoice_id;
          if (exhausted) await writeOffExhausted(exhausted, id);
          await paced(() =>
            stripe.subscriptions.update(
              id,
              // '' unsets: pause_collection is Emptyable, and a metadata key set to '' is removed.
              { pause_collection: '', metadata: { [DUNNING_FINAL_ACTION_METADATA_KEY]: '', dunning_invoice_id: '' } },
              { idempotencyKey: `recon:undo-mark-unpaid:${id}` },
            ),
          );
          undone++;
        } catch (err) {
          if (!(err instanceof Stripe.errors.StripeInvalidRequestError)) return mapStripeError(err, `undo mark_unpaid pause of ${id}`);
          // One subscription Stripe will not update (gone, canceled meanwhile) must not fail the run.
          log.warn('could not undo the mark_unpaid pause', { subscriptionId: id, error: err.message });
          outcome = 'failed';
          failed++;
        }
        beat({ at: id });
        // Whatever a reconcile of the same subscription marked meanwhile, this row says what happened in Stripe.
        await sql`
          UPDATE reconciliation_drift SET repair_status = ${outcome}, repaired_at = now()
          WHERE run_id = ${input.runId} AND object_id = ${id} AND field = 'pause_collection'`;
      }
      return { undone, failed };
    },

    /**
     * Pages (by id) through the customers without drift in this run and flags those whose access_state
     * differs from what their rows imply. Their subscriptions matched Stripe's and their open cycles
     * matched Stripe's past-due invoices in the earlier phases, so that is what Stripe implies; a
     * customer with drift was handed to its workflow, whose repair re-derived the access state.
     */
    async checkAccessStatesPage(input: { runId: string; cursor: string | null; pageSize: number }): Promise<AccessStatePageResult> {
      // One statement: a consistent snapshot of each customer's rows, whatever its workflow writes meanwhile.
      const rows = await sql<({ id: string; access_state: string } & AccessFactRow)[]>`
        SELECT c.id, c.access_state, ${accessFactColumns(sql)}
        FROM customers c
        WHERE NOT EXISTS (SELECT 1 FROM reconciliation_drift d WHERE d.run_id = ${input.runId} AND d.customer_id = c.id)
          ${input.cursor ? sql`AND c.id > ${input.cursor}` : sql``}
        ORDER BY c.id
        LIMIT ${input.pageSize}`;
      const drift = rows.flatMap((r) => {
        const implied = accessOf(r);
        if (implied === r.access_state) return [];
        // No repair to send: the apply path derives the column, so a mismatch is for a human to explain.
        const row = {
          run_id: input.runId,
          object_type: 'customer',
          object_id: r.id,
          customer_id: r.id,
          field: 'access_state',
          local_value: r.access_state,
          stripe_value: implied,
          repair_status: 'flagged',
          repaired_at: new Date(),
        };
        return [row];
      });
      const last = rows[rows.length - 1];
      const nextCursor = rows.length === input.pageSize && last ? last.id : null;
      return sql.begin(async (tx) => {
        const inserted = drift.length
          ? await tx`
              INSERT INTO reconciliation_drift ${tx(drift, 'run_id', 'object_type', 'object_id', 'customer_id', 'field', 'local_value', 'stripe_value', 'repair_status', 'repaired_at')}
              ON CONFLICT (run_id, object_id, field) DO NOTHING RETURNING object_id`
          : [];
        await tx`
          UPDATE reconciliation_runs
          SET drifted = drifted + ${inserted.length}, cursor = ${nextCursor === null ? null : `access_state:${nextCursor}`}
          WHERE id = ${input.runId}`;
        return { nextCursor, checked: rows.length, newlyDrifted: inserted.length };
      });
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
