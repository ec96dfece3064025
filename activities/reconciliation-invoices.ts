/**
 * The invoice side of reconciliation: open past-due invoices without a dunning cycle, open cycles whose
 * invoice Stripe has closed (both repaired by a synthetic invoice event through the customer workflow),
 * access states that disagree with the rows (flagged), and the undo of the retired 'mark_unpaid' pause.
 */
import { log } from '@temporalio/activity';
import Stripe from 'stripe';
import type { BillingEvent } from '../domain/billing-event';
import { DUNNING_FINAL_ACTION_METADATA_KEY } from '../domain/dunning-cycle';
import { idOf } from '../domain/events/shared';
import {
  closedInvoiceEventType,
  invoiceRepairEvent,
  pastDueInvoiceSubscription,
  type AccessStatePageResult,
  type InvoicePageResult,
  type StripeInvoiceView,
} from '../domain/reconciliation';
import { stripeEventSignal } from '../workflows/contracts';
import { accessFactColumns, accessOf, type AccessFactRow } from './db/customers';
import { isStripeNotFound, mapStripeError } from './errors';
import { beat, SIGNAL_CONCURRENCY, type ReconciliationContext } from './reconciliation-context';

/** Invoice retrieves in flight at once (the token bucket still paces them). */
const RETRIEVE_CONCURRENCY = 5;
/** Expanded in the open-invoices list so a canceled subscription's invoices are told apart without another call. */
const INVOICE_SUBSCRIPTION_EXPAND = 'data.parent.subscription_details.subscription';
/** Drift fields whose repair is a synthetic invoice event: reconciliation confirms them from the cycle rows. */
export const INVOICE_REPAIR_FIELDS = ['invoice_without_cycle', 'cycle_invoice_closed'];

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

/** The invoice-side activities, and the confirmation the run's bookkeeping calls before counting repairs. */
export function createInvoiceReconciliation(ctx: ReconciliationContext) {
  const { sql, stripe, paced, nowSeconds, inChunks, customerStart, requireClient } = ctx;

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

  return {
    confirmInvoiceRepairs,
    activities: {
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
    },
  };
}
