/**
 * reconciliationWorkflow `reconciliation:<suffix>`: pages through every Stripe subscription, then through
 * the local ones Stripe did not return, records each mismatch and asks the owning customer workflow to
 * repair it; finally puts events Stripe failed to deliver into the delivery log. The workflow id is the
 * run id (reconciliation_runs.id) and survives continue-as-new.
 */
import {
  CancellationScope,
  ContinueAsNew,
  continueAsNew,
  log,
  proxyActivities,
  setCurrentDetails,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { ReconciliationCarry, ReconciliationInput, ReconciliationResult } from '../domain/reconciliation';
import { BillingWorkflowKindKey } from './contracts';

const db = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  // A Postgres outage stalls the run instead of failing it.
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

// No attempt limit: a 429 (mapped with nextRetryDelay) or a Stripe outage slows the scan, never fails it.
// Bad credentials and invalid requests are non-retryable and do fail it.
const scan = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '5 minutes' },
});

const repair = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

export const DEFAULT_PAGES_PER_RUN = 50;
export const DEFAULT_PAGE_SIZE = 100;
export const DEFAULT_REPAIR_WAIT_SECONDS = 300;
const MAX_REPAIR_POLL_MS = 30_000;
/** How far back Stripe keeps events. */
const EVENTS_LOOKBACK_SECONDS = 30 * 86_400;

/** One reconciliation run (scheduled daily by `reconciliation-daily`, or started from the admin API). */
export async function reconciliationWorkflow(input: ReconciliationInput = {}): Promise<ReconciliationResult> {
  const runId = workflowInfo().workflowId;
  const pagesPerRun = Math.max(1, input.pagesPerRun ?? DEFAULT_PAGES_PER_RUN);
  const pageSize = Math.min(100, Math.max(1, input.pageSize ?? DEFAULT_PAGE_SIZE));
  const progress: ReconciliationCarry = input.carried ?? {
    phase: 'stripe_list',
    cursor: null,
    pages: 0,
    scanned: 0,
    drifted: 0,
    eventsSince: null,
    eventsRecovered: 0,
  };

  try {
    if (!input.carried) {
      upsertSearchAttributes([{ key: BillingWorkflowKindKey, value: 'reconciliation' }]);
      await db.beginReconciliationRun({ runId, trigger: input.trigger ?? 'manual' });
    }
    describe(progress);
    await scanAll(runId, progress, pageSize, pagesPerRun, input);
    await waitForRepairs(runId, input.repairWaitSeconds ?? DEFAULT_REPAIR_WAIT_SECONDS);
    const counts = await db.finishReconciliationRun({ runId });
    log.info('reconciliation finished', { runId, ...counts });
    setCurrentDetails(`finished: scanned ${counts.scanned}, drifted ${counts.drifted}, repaired ${counts.repaired}, flagged ${counts.flagged}`);
    return { runId, status: 'succeeded', ...counts, eventsRecovered: progress.eventsRecovered };
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    // Record the failure even when the run was cancelled.
    await CancellationScope.nonCancellable(() => db.failReconciliationRun({ runId, error: failureText(err) }));
    throw err;
  }
}

/** Every phase, page by page; continues as new every `pagesPerRun` pages carrying only the cursor and counters. */
async function scanAll(runId: string, progress: ReconciliationCarry, pageSize: number, pagesPerRun: number, input: ReconciliationInput): Promise<void> {
  let pagesThisRun = 0;
  for (;;) {
    if (pagesThisRun >= pagesPerRun || workflowInfo().continueAsNewSuggested) {
      await continueAsNew<typeof reconciliationWorkflow>({ ...input, carried: progress });
    }
    pagesThisRun++;
    progress.pages++;
    if (progress.phase === 'undelivered_events') {
      const page = await scan.recoverUndeliveredEventsPage({ runId, cursor: progress.cursor, since: progress.eventsSince ?? 0, pageSize });
      progress.eventsRecovered += page.recovered;
      if (page.nextCursor === null) return;
      progress.cursor = page.nextCursor;
      describe(progress);
      continue;
    }
    const page =
      progress.phase === 'stripe_list'
        ? await scan.scanStripeSubscriptionsPage({ runId, cursor: progress.cursor, pageSize })
        : await scan.scanLocalOnlyPage({ runId, cursor: progress.cursor, pageSize });
    if (page.targets.length > 0) await repair.sendReconcileSignals({ runId, targets: page.targets });
    progress.scanned += page.newlyScanned;
    progress.drifted += page.newlyDrifted;
    if (page.nextCursor !== null) {
      progress.cursor = page.nextCursor;
    } else if (progress.phase === 'stripe_list') {
      progress.phase = 'local_sweep';
      progress.cursor = null;
    } else if (input.recoverUndeliveredEvents !== false) {
      progress.phase = 'undelivered_events';
      progress.cursor = null;
      progress.eventsSince = Math.floor(Date.now() / 1000) - EVENTS_LOOKBACK_SECONDS;
    } else {
      return;
    }
    describe(progress);
  }
}

/** Polls (bounded) until the customer workflows have applied every repair signal of this run. */
async function waitForRepairs(runId: string, waitSeconds: number): Promise<void> {
  const deadline = Date.now() + waitSeconds * 1000;
  let delay = 500;
  for (;;) {
    const pending = await db.countPendingRepairs({ runId });
    const left = deadline - Date.now();
    if (pending === 0 || left <= 0) {
      if (pending > 0) log.warn('repairs still pending when the run finished', { runId, pending });
      return;
    }
    setCurrentDetails(`waiting for customer workflows to apply ${pending} repair(s)`);
    await sleep(Math.min(delay, left));
    delay = Math.min(delay * 2, MAX_REPAIR_POLL_MS);
  }
}

/** The messages along a failure's cause chain ("Activity task failed" alone tells ops nothing). */
function failureText(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e.message && !parts.some((p) => p.includes(e.message))) parts.push(e.message);
  }
  return parts.join(': ') || String(err);
}

const PHASE_TEXT: Record<ReconciliationCarry['phase'], string> = {
  stripe_list: 'Stripe subscriptions',
  local_sweep: 'local subscriptions Stripe did not list',
  undelivered_events: 'events Stripe failed to deliver',
};

function describe(p: ReconciliationCarry): void {
  setCurrentDetails(
    `scanning ${PHASE_TEXT[p.phase]} after ${p.cursor ?? '(start)'}; ${p.pages} page(s), scanned ${p.scanned}, drifted ${p.drifted}, ` +
      `events recovered ${p.eventsRecovered}`,
  );
}
