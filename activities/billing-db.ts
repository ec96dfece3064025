/**
 * Postgres activities of the customer workflow, the only writer of a customer's billing rows. The apply
 * transaction lives in db/apply.ts; one module per table kind under db/.
 */
import type { DunningReport } from '../domain/messages';
import type { Sql } from '../lib/db';
import { createApply, type ApplyFaults } from './db/apply';
import { ensureCustomer, refreshAccessState } from './db/customers';
import { recordDunningReport } from './db/dunning-cycles';
import { lockCustomer } from './db/shared';
import { countInActivity } from './metrics';
import { describeError, isDataError } from './db/failure-policy';
import { logEvent } from './event-log';
import { loadCurrentSubscription } from './db/subscriptions';
import { loadCustomerView, recordViewChange } from './db/app-events';
import type { AppEventDraft } from '../domain/app-events';

import type { LocalSubscription } from '../domain/billing/state';

export type { LocalSubscription };
export type { ApplyEventResult, ApplyEventOptions, ApplyFaults, ApplyOutcome } from './db/apply';
export { refreshAccessState } from './db/customers';

export interface BillingDbDeps {
  sql: Sql;
  /** Retries in the configured dunning schedule (default 4: days 1, 3, 5, 7). */
  dunningMaxAttempts?: number;
  faults?: ApplyFaults;
  /** Record events for the app (APP_WEBHOOK_URL is set). */
  appEvents?: boolean;
}

/** Creates the database activities. */
export function createBillingDbActivities({ sql, dunningMaxAttempts = 4, faults, appEvents = false }: BillingDbDeps) {
  return {
    ...createApply({ sql, dunningMaxAttempts, faults, appEvents }),

    /** Records what a dunning cycle reported to its customer workflow (progress, an attempt, its end). */
    async recordDunningReports(input: { customerId: string; reports: DunningReport[] }): Promise<void> {
      await sql.begin(async (tx) => {
        await lockCustomer(tx, input.customerId);
        await ensureCustomer(tx, input.customerId);
        const before = appEvents ? await loadCustomerView(tx, input.customerId) : null;
        const exhausted: AppEventDraft[] = [];
        for (const report of input.reports) {
          try {
            await tx.savepoint((sp) => recordDunningReport(sp, input.customerId, report));
            if (report.state === 'exhausted' && report.endedAtMs !== null) exhausted.push(dunningExhaustedEvent(input.customerId, report));
          } catch (err) {
            if (!isDataError(err)) throw err;
            // A report that cannot be stored is logged and skipped: the customer's queue flows on, and
            // the next report of the cycle carries its whole state again.
            countInActivity('dunningReportsRejected');
            logEvent('warn', 'dunning report not recorded: data error', { eventId: 'none', customerId: input.customerId, invoiceId: report.invoiceId, error: describeError(err) });
          }
        }
        await refreshAccessState(tx, input.customerId);
        const last = input.reports[input.reports.length - 1];
        const cause = last ? `dunning-report:${last.invoiceId}:${last.state}:${last.attemptsMade}:${last.endedAtMs ?? 'open'}` : null;
        await recordViewChange(tx, input.customerId, before, cause, exhausted);
      });
    },

    /** Flags a local subscription that Stripe no longer knows, for a human to look at. */
    async flagSubscriptionForReview(input: { subscriptionId: string; reason: string }): Promise<void> {
      await sql`
        UPDATE subscriptions SET needs_review = true, review_reason = ${input.reason}, updated_at = now()
        WHERE id = ${input.subscriptionId}`;
    },

    /** Marks the drift rows of one object in one reconciliation run as repaired (or flagged). */
    async markDriftRepaired(input: { runId: string; objectId: string; repaired: boolean }): Promise<void> {
      await sql`
        UPDATE reconciliation_drift
        SET repair_status = ${input.repaired ? 'repaired' : 'flagged'}, repaired_at = now()
        WHERE run_id = ${input.runId} AND object_id = ${input.objectId} AND repair_status = 'pending'`;
    },

    /** Reads the customer's current local subscription. */
    async loadLocalSubscription(customerId: string): Promise<LocalSubscription | null> {
      return loadCurrentSubscription(sql, customerId);
    },
  };
}

/** dunning.exhausted: the cycle ran out of retries and its final action was taken. */
function dunningExhaustedEvent(customerId: string, r: DunningReport): AppEventDraft {
  return {
    sourceKey: `dunning.exhausted:${r.invoiceId}`,
    type: 'dunning.exhausted',
    customerId,
    data: { customerId, invoiceId: r.invoiceId, subscriptionId: r.subscriptionId, finalAction: r.finalAction, attempts: r.attemptsMade },
  };
}

export type BillingDbActivities = ReturnType<typeof createBillingDbActivities>;
