/** Temporal Schedules the worker creates or updates at startup (idempotent: safe on every start and replica). */
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client, type ScheduleHandle, type ScheduleOptionsStartWorkflowAction } from '@temporalio/client';
import type { Duration } from '@temporalio/common';
import { msToNumber } from '@temporalio/common/lib/time';
import { RECONCILIATION_SCHEDULE_ID, reconciliationWorkflowId } from '../domain/ids';
import type { ReconciliationInput } from '../domain/reconciliation';
import { BillingWorkflowKindKey } from '../workflows/contracts';
import type { Config } from '../lib/config';
import type { reconciliationWorkflow } from '../workflows/reconciliation';

export type ReconciliationScheduleConfig = Pick<
  Config,
  'TEMPORAL_TASK_QUEUE' | 'RECONCILIATION_CRON' | 'RECONCILIATION_TIMEZONE' | 'RECONCILIATION_CATCHUP_WINDOW'
>;

export interface ReconciliationScheduleOptions {
  /** Default `reconciliation-daily`; tests use their own so they do not collide. */
  scheduleId?: string;
  /** Extra workflow input (tests: small pages, short repair wait). */
  workflowInput?: Omit<ReconciliationInput, 'trigger' | 'carried'>;
}

/**
 * Creates the reconciliation schedule, or brings an existing one to the configured spec, action and
 * policies. A pause set by an operator survives the update (a worker restart must not unpause it).
 */
export async function ensureReconciliationSchedule(
  client: Client,
  config: ReconciliationScheduleConfig,
  opts: ReconciliationScheduleOptions = {},
): Promise<{ handle: ScheduleHandle; outcome: 'created' | 'updated' }> {
  const scheduleId = opts.scheduleId ?? RECONCILIATION_SCHEDULE_ID;
  const spec = { cronExpressions: [config.RECONCILIATION_CRON], timezone: config.RECONCILIATION_TIMEZONE };
  const action: ScheduleOptionsStartWorkflowAction<typeof reconciliationWorkflow> = {
    type: 'startWorkflow',
    workflowType: 'reconciliationWorkflow',
    // The server appends the scheduled time: `reconciliation:reconciliation-daily-2026-11-26T03:00:00Z`.
    workflowId: reconciliationWorkflowId(scheduleId),
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    args: [{ ...opts.workflowInput, trigger: 'schedule' }],
    typedSearchAttributes: [{ key: BillingWorkflowKindKey, value: 'reconciliation' }],
  };
  const policies = {
    // A run still going when the next one is due (or an ops trigger arrives) makes that one a no-op.
    overlap: ScheduleOverlapPolicy.SKIP,
    // The server default is a year: after an outage run at most one late reconciliation, not a backlog.
    catchupWindow: catchupWindowMs(config.RECONCILIATION_CATCHUP_WINDOW),
    pauseOnFailure: false,
  };
  try {
    const handle = await client.schedule.create({ scheduleId, spec, action, policies });
    return { handle, outcome: 'created' };
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    const handle = client.schedule.getHandle(scheduleId);
    await handle.update((previous) => ({
      spec,
      action,
      policies,
      state: { paused: previous.state.paused, note: previous.state.note },
    }));
    return { handle, outcome: 'updated' };
  }
}

/** Parses RECONCILIATION_CATCHUP_WINDOW ('1 hour', '30m', or milliseconds) with a clear error. */
function catchupWindowMs(value: string): number {
  const ms = /^\d+$/.test(value) ? Number(value) : msToNumber(value as Duration);
  if (!Number.isFinite(ms) || ms <= 0) throw new Error(`RECONCILIATION_CATCHUP_WINDOW must be a duration such as '1 hour', got '${value}'`);
  return ms;
}
