/**
 * retentionWorkflow `retention:<suffix>`: one retention pass (scheduled daily by `retention-daily`). Fixes
 * its cutoffs once, then runs each step (activities/retention.ts) in batches of `batchSize` rows in index
 * order, each batch one short transaction, until a batch comes back short; continues as new every
 * `batchesPerRun` batches carrying the cutoffs, the step's cursor and the counts. Returns what it deleted.
 */
import { continueAsNew, log, proxyActivities, setCurrentDetails, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { RetentionCounts, RetentionCursor, RetentionPlan, RetentionStep } from '../activities/retention';
import { BillingWorkflowKindKey } from './contracts';

const db = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  // A Postgres outage stalls the pass instead of failing it.
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

export const DEFAULT_RETENTION_BATCH_SIZE = 1000;
export const DEFAULT_RETENTION_BATCHES_PER_RUN = 200;

/** Log rows before the ledger rows that outlive them; the ledger step skips a row whose delivery is still logged. */
const STEPS: readonly RetentionStep[] = ['webhook_events', 'applied_events', 'webhook_payloads', 'app_webhooks', 'notifications'];

/** Where a pass is, carried across continue-as-new. */
export interface RetentionCarry {
  plan: RetentionPlan;
  step: RetentionStep;
  /** Where the step's next batch starts (null: at its beginning). */
  after: RetentionCursor | null;
  counts: RetentionCounts;
  batches: number;
}

export interface RetentionInput {
  /** Rows per batch (default 1,000, at most 10,000). */
  batchSize?: number;
  /** Batches per workflow execution before continue-as-new (default 200). */
  batchesPerRun?: number;
  carried?: RetentionCarry;
}

export interface RetentionResult extends RetentionPlan {
  counts: RetentionCounts;
  batches: number;
}

/** One retention pass over the delivery log, the applied-events ledger, app webhooks and notifications. */
export async function retentionWorkflow(input: RetentionInput = {}): Promise<RetentionResult> {
  const batchSize = Math.min(10_000, Math.max(1, Math.trunc(input.batchSize ?? DEFAULT_RETENTION_BATCH_SIZE)));
  const batchesPerRun = Math.max(1, input.batchesPerRun ?? DEFAULT_RETENTION_BATCHES_PER_RUN);
  let carry = input.carried;
  if (!carry) {
    upsertSearchAttributes([{ key: BillingWorkflowKindKey, value: 'retention' }]);
    const plan = await db.planRetention();
    log.info('retention pass started', { ...plan });
    carry = { plan, step: STEPS[0]!, after: null, counts: zeroCounts(), batches: 0 };
  }
  let batchesThisRun = 0;
  for (let i = STEPS.indexOf(carry.step); i < STEPS.length; i++) {
    const step = STEPS[i]!;
    if (carry.step !== step) {
      carry.step = step;
      carry.after = null;
    }
    do {
      if (batchesThisRun >= batchesPerRun || workflowInfo().continueAsNewSuggested) {
        await continueAsNew<typeof retentionWorkflow>({ batchSize, batchesPerRun, carried: carry });
      }
      const out = await db.purgeRetentionBatch({ step, plan: carry.plan, limit: batchSize, after: carry.after });
      batchesThisRun++;
      carry.batches++;
      if (out.next && carry.after && out.next.at === carry.after.at && out.next.id === carry.after.id) {
        // A page that did not move on would repeat forever: end the step, the next pass tries again.
        log.warn('retention cursor did not advance; step ended early', { step, after: carry.after });
        out.next = null;
      }
      carry.after = out.next;
      for (const [key, value] of Object.entries(out.counts) as [keyof RetentionCounts, number][]) carry.counts[key] += value;
      describe(carry);
    } while (carry.after !== null);
  }
  log.info('retention pass finished', { ...carry.plan, ...carry.counts, batches: carry.batches });
  setCurrentDetails(`finished: ${summary(carry.counts)}`);
  return { ...carry.plan, counts: carry.counts, batches: carry.batches };
}

function zeroCounts(): RetentionCounts {
  return {
    webhookEventsDeleted: 0,
    payloadsPurged: 0,
    payloadBytesPurged: 0,
    appliedEventsDeleted: 0,
    appliedEffectsDeleted: 0,
    appWebhooksDeleted: 0,
    notificationsDeleted: 0,
  };
}

function summary(c: RetentionCounts): string {
  return (
    `deleted ${c.webhookEventsDeleted} delivery-log rows, ${c.appliedEventsDeleted} applied events (${c.appliedEffectsDeleted} effects), ` +
    `${c.appWebhooksDeleted} app webhooks, ${c.notificationsDeleted} notifications; purged ${c.payloadsPurged} payloads`
  );
}

function describe(carry: RetentionCarry): void {
  setCurrentDetails(`step ${carry.step}, ${carry.batches} batch(es): ${summary(carry.counts)}`);
}
