/**
 * reconciliationWorkflow `reconciliation:<suffix>`: pages through every Stripe subscription, then through
 * the local ones Stripe did not return, then through Stripe's open invoices and the dunning cycles open
 * here; records each mismatch and asks the owning customer workflow to repair it; puts events Stripe
 * failed to deliver into the delivery log; and, once the repairs landed, flags customers whose access
 * state disagrees with their rows. The workflow id is the run id (reconciliation_runs.id) and survives
 * continue-as-new.
 */
import {
  CancellationScope,
  ContinueAsNew,
  continueAsNew,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { ReconciliationCarry, ReconciliationInput, ReconciliationPhase, ReconciliationResult } from '../domain/reconciliation';
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
/** Customers per page of the access-state phase (Postgres only, no Stripe call). */
const ACCESS_PAGE_SIZE = 500;

/**
 * patched() id: runs also reconcile invoices with dunning cycles (open_invoices, open_cycles), undo the
 * retired 'mark_unpaid' pause found in the subscription scan, and check access states (access_state).
 * Runs started before it keep the three phases they had.
 */
export const RECONCILIATION_INVOICES_PATCH = 'reconciliation-invoices';

const PHASES_BEFORE_PATCH: readonly ReconciliationPhase[] = ['stripe_list', 'local_sweep', 'undelivered_events'];
const PHASES: readonly ReconciliationPhase[] = ['stripe_list', 'local_sweep', 'open_invoices', 'open_cycles', 'undelivered_events', 'access_state'];

/** One reconciliation run (scheduled daily by `reconciliation-daily`, or started from the admin API). */
export async function reconciliationWorkflow(input: ReconciliationInput = {}): Promise<ReconciliationResult> {
  // Asked before the first command, so a replay of an older history takes the same branch.
  const invoicesPatched = patched(RECONCILIATION_INVOICES_PATCH);
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
    const run: ScanRun = {
      runId,
      pageSize,
      pagesPerRun,
      input,
      phases: invoicesPatched ? PHASES : PHASES_BEFORE_PATCH,
      undoMarkUnpaid: invoicesPatched,
    };
    await scanAll(run, progress);
    // Patched runs waited for the repairs before their access-state phase.
    if (!invoicesPatched) await waitForRepairs(runId, input.repairWaitSeconds ?? DEFAULT_REPAIR_WAIT_SECONDS);
    const counts = await db.finishReconciliationRun({ runId });
    log.info('reconciliation finished', { runId, ...counts });
    setCurrentDetails(`finished: scanned ${counts.scanned}, drifted ${counts.drifted}, repaired ${counts.repaired}, flagged ${counts.flagged}`);
    return {
      runId,
      status: 'succeeded',
      ...counts,
      eventsRecovered: progress.eventsRecovered,
      invoicesChecked: progress.invoicesChecked ?? 0,
      customersChecked: progress.customersChecked ?? 0,
    };
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    // Record the failure even when the run was cancelled.
    await CancellationScope.nonCancellable(() => db.failReconciliationRun({ runId, error: failureText(err) }));
    throw err;
  }
}

/** What stays fixed for one workflow execution of a run. */
interface ScanRun {
  runId: string;
  pageSize: number;
  pagesPerRun: number;
  input: ReconciliationInput;
  phases: readonly ReconciliationPhase[];
  undoMarkUnpaid: boolean;
}

/** Every phase, page by page; continues as new every `pagesPerRun` pages carrying only the cursor and counters. */
async function scanAll(run: ScanRun, progress: ReconciliationCarry): Promise<void> {
  const { runId, pageSize, input } = run;
  let pagesThisRun = 0;
  for (;;) {
    if (pagesThisRun >= run.pagesPerRun || workflowInfo().continueAsNewSuggested) {
      await continueAsNew<typeof reconciliationWorkflow>({ ...input, carried: progress });
    }
    pagesThisRun++;
    progress.pages++;
    let nextCursor: string | null;
    switch (progress.phase) {
      case 'stripe_list':
      case 'local_sweep': {
        const page =
          progress.phase === 'stripe_list'
            ? await scan.scanStripeSubscriptionsPage({ runId, cursor: progress.cursor, pageSize, ...(run.undoMarkUnpaid ? { undoMarkUnpaid: true } : {}) })
            : await scan.scanLocalOnlyPage({ runId, cursor: progress.cursor, pageSize });
        if (page.targets.length > 0) await repair.sendReconcileSignals({ runId, targets: page.targets });
        if (page.undoMarkUnpaid?.length) await repair.undoMarkUnpaidEmulation({ runId, subscriptionIds: page.undoMarkUnpaid });
        progress.scanned += page.newlyScanned;
        progress.drifted += page.newlyDrifted;
        nextCursor = page.nextCursor;
        break;
      }
      case 'open_invoices':
      case 'open_cycles': {
        const page =
          progress.phase === 'open_invoices'
            ? await scan.scanOpenInvoicesPage({ runId, cursor: progress.cursor, pageSize })
            : await scan.scanOpenCyclesPage({ runId, cursor: progress.cursor, pageSize });
        if (page.events.length > 0) await repair.sendInvoiceEvents({ runId, events: page.events });
        progress.invoicesChecked = (progress.invoicesChecked ?? 0) + page.checked;
        progress.drifted += page.newlyDrifted;
        nextCursor = page.nextCursor;
        break;
      }
      case 'undelivered_events': {
        const page = await scan.recoverUndeliveredEventsPage({ runId, cursor: progress.cursor, since: progress.eventsSince ?? 0, pageSize });
        progress.eventsRecovered += page.recovered;
        nextCursor = page.nextCursor;
        break;
      }
      case 'access_state': {
        const page = await db.checkAccessStatesPage({ runId, cursor: progress.cursor, pageSize: ACCESS_PAGE_SIZE });
        progress.customersChecked = (progress.customersChecked ?? 0) + page.checked;
        progress.drifted += page.newlyDrifted;
        nextCursor = page.nextCursor;
        break;
      }
    }
    if (nextCursor !== null) {
      progress.cursor = nextCursor;
      describe(progress);
      continue;
    }
    const next = nextPhase(run, progress.phase);
    if (next === null) return;
    if (next === 'access_state') {
      // Access is judged on reconciled rows: let the customer workflows apply this run's repairs first.
      await waitForRepairs(runId, input.repairWaitSeconds ?? DEFAULT_REPAIR_WAIT_SECONDS);
    }
    progress.phase = next;
    progress.cursor = null;
    if (next === 'undelivered_events') progress.eventsSince = Math.floor(Date.now() / 1000) - EVENTS_LOOKBACK_SECONDS;
    describe(progress);
  }
}

/** The phase after `phase` in this run, or null when the scan is done. */
function nextPhase(run: ScanRun, phase: ReconciliationPhase): ReconciliationPhase | null {
  const at = run.phases.indexOf(phase);
  if (at < 0) return null;
  const rest = run.phases.slice(at + 1);
  return rest.find((p) => p !== 'undelivered_events' || run.input.recoverUndeliveredEvents !== false) ?? null;
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

const PHASE_TEXT: Record<ReconciliationPhase, string> = {
  stripe_list: 'Stripe subscriptions',
  local_sweep: 'local subscriptions Stripe did not list',
  open_invoices: 'open Stripe invoices',
  open_cycles: 'dunning cycles open here',
  undelivered_events: 'events Stripe failed to deliver',
  access_state: 'access states of customers',
};

function describe(p: ReconciliationCarry): void {
  setCurrentDetails(
    `scanning ${PHASE_TEXT[p.phase]} after ${p.cursor ?? '(start)'}; ${p.pages} page(s), scanned ${p.scanned}, drifted ${p.drifted}, ` +
      `events recovered ${p.eventsRecovered}`,
  );
}
