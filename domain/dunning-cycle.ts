/**
 * Pure rules of one dunning cycle that sit beside the decline table in dunning-policy.ts: cycle
 * states, retry spacing, how long the cycle waits on the customer, and how a subscription that
 * dunning marked unpaid reads back from Stripe. No I/O, no clock: safe to import from workflows.
 */
import type { DunningPolicy } from './dunning-policy';

const DAY_MS = 86_400_000;

/** States of a cycle (the `dunning_cycles.state` check constraint and the DunningState search attribute). */
export type DunningCycleState =
  | 'retrying'
  | 'awaiting_payment_method'
  | 'awaiting_authentication'
  | 'recovered'
  | 'exhausted'
  | 'canceled';

/** How a cycle ended. */
export type DunningOutcome = 'recovered' | 'exhausted' | 'canceled';

/** True for the states a cycle ends in. */
export function isTerminalDunningState(state: string): state is DunningOutcome {
  return state === 'recovered' || state === 'exhausted' || state === 'canceled';
}

/** Smallest gap between two consecutive scheduled retries (the first one counts from the failure). */
export function minRetryGapMs(policy: Pick<DunningPolicy, 'retryDaysAfterFailure'>): number {
  const days = policy.retryDaysAfterFailure;
  const gaps = days.map((d, i) => d - (i === 0 ? 0 : (days[i - 1] as number)));
  return Math.round(Math.min(...gaps) * DAY_MS);
}

/**
 * When the next retry really happens: the scheduled time, but never sooner than the smallest
 * scheduled gap after the previous attempt. After a late payment-method retry the schedule would
 * otherwise fire its overdue attempts back to back, which issuers read as card testing.
 */
export function spacedRetryAt(input: {
  scheduledAtMs: number;
  lastAttemptAtMs: number | null;
  policy: Pick<DunningPolicy, 'retryDaysAfterFailure'>;
}): number {
  if (input.lastAttemptAtMs === null) return input.scheduledAtMs;
  return Math.max(input.scheduledAtMs, input.lastAttemptAtMs + minRetryGapMs(input.policy));
}

/**
 * How long a cycle waits for the customer (new payment method, authentication) before it is
 * exhausted: until the schedule's last retry day, and at least one smallest gap from now so a hard
 * decline on the last attempt still gives the customer a chance to act on the notice.
 */
export function customerActionDeadline(input: {
  failedAtMs: number;
  nowMs: number;
  policy: Pick<DunningPolicy, 'retryDaysAfterFailure'>;
}): number {
  const days = input.policy.retryDaysAfterFailure;
  const lastDay = days[days.length - 1] ?? 0;
  return Math.max(input.failedAtMs + Math.round(lastDay * DAY_MS), input.nowMs + minRetryGapMs(input.policy));
}

/**
 * Metadata key that earlier versions set on a Stripe subscription with the retired 'mark_unpaid' final
 * action (which paused collection with `keep_as_draft`: service for free). Reconciliation finds
 * subscriptions carrying it and undoes the pause; nothing sets it any more.
 */
export const DUNNING_FINAL_ACTION_METADATA_KEY = 'dunning_final_action';
