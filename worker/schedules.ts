/** Temporal Schedules the worker creates or updates at startup (idempotent: safe on every start and replica). */
import {
  ScheduleAlreadyRunning,
  ScheduleOverlapPolicy,
  type Client,
  type ScheduleHandle,
  type ScheduleOptions,
  type ScheduleOptionsStartWorkflowAction,
} from '@temporalio/client';
import type { Duration } from '@temporalio/common';
import { msToNumber } from '@temporalio/common/lib/time';
import { RECONCILIATION_SCHEDULE_ID, reconciliationWorkflowId } from '../domain/ids';
import type { ReconciliationInput } from '../domain/reconciliation';
import { BillingWorkflowKindKey } from '../workflows/contracts';
import type { Config } from '../lib/config';
import type { reconciliationWorkflow } from '../workflows/reconciliation';
import type { RetentionInput, retentionWorkflow } from '../workflows/retention';

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
  return ensureSchedule(client, scheduleId, spec, action, policies);
}

/** The Temporal Schedule that starts the daily retention pass. */
export const RETENTION_SCHEDULE_ID = 'retention-daily';

/** `retention:<suffix>`: one retention pass. */
export const retentionWorkflowId = (suffix: string): string => `retention:${suffix}`;

/** 04:30 UTC: after the default reconciliation (03:00), outside most traffic peaks. */
export const RETENTION_CRON = '30 4 * * *';

export interface RetentionScheduleOptions {
  /** Default `retention-daily`; tests use their own so they do not collide. */
  scheduleId?: string;
  /** Default RETENTION_CRON (UTC). */
  cron?: string;
  /** Extra workflow input (tests: small batches). */
  workflowInput?: Omit<RetentionInput, 'carried'>;
}

/**
 * Creates the retention schedule, or brings an existing one to this spec, action and policies, keeping
 * an operator's pause. The cutoffs come from WEBHOOK_RETENTION_DAYS when each pass starts (activities/retention.ts).
 */
export async function ensureRetentionSchedule(
  client: Client,
  config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>,
  opts: RetentionScheduleOptions = {},
): Promise<{ handle: ScheduleHandle; outcome: 'created' | 'updated' }> {
  const scheduleId = opts.scheduleId ?? RETENTION_SCHEDULE_ID;
  const spec = { cronExpressions: [opts.cron ?? RETENTION_CRON], timezone: 'UTC' };
  const action: ScheduleOptionsStartWorkflowAction<typeof retentionWorkflow> = {
    type: 'startWorkflow',
    workflowType: 'retentionWorkflow',
    // The server appends the scheduled time: `retention:retention-daily-2026-11-26T04:30:00Z`.
    workflowId: retentionWorkflowId(scheduleId),
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    args: [{ ...opts.workflowInput }],
    typedSearchAttributes: [{ key: BillingWorkflowKindKey, value: 'retention' }],
  };
  const policies = {
    // A pass still deleting a backlog when the next is due: the next one is skipped, never run beside it.
    overlap: ScheduleOverlapPolicy.SKIP,
    // A missed day is caught up by the next pass (it deletes everything past the cutoff), not by a backlog of runs.
    catchupWindow: 60 * 60_000,
    pauseOnFailure: false,
  };
  return ensureSchedule(client, scheduleId, spec, action, policies);
}

/** Creates the schedule, or updates it in place (an operator's pause and note survive a worker restart). */
async function ensureSchedule(
  client: Client,
  scheduleId: string,
  spec: ScheduleOptions['spec'],
  action: ScheduleOptions['action'],
  policies: ScheduleOptions['policies'],
): Promise<{ handle: ScheduleHandle; outcome: 'created' | 'updated' }> {
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
