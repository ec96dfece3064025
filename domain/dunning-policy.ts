/**
 * Dunning policy: decline codes → next step, retry schedule math, and the notice rules that keep a
 * customer from being spammed. Pure: no I/O, no clock, safe to import from workflows.
 */

const DAY_MS = 86_400_000;

/** How a decline is handled: retried on the schedule (soft), or waiting on the customer (hard, authentication_required). */
export type DeclineClass = 'hard' | 'soft' | 'authentication_required';

/** Stripe decline / failure codes (lower-case) mapped to how dunning treats them; anything absent is 'soft'. */
export const DECLINE_CODES: Readonly<Record<string, DeclineClass>> = Object.freeze({
  // Hard: the same card will not succeed again; the customer must supply a new payment method.
  stolen_card: 'hard',
  lost_card: 'hard',
  fraudulent: 'hard',
  pickup_card: 'hard',
  invalid_account: 'hard',
  expired_card: 'hard',
  incorrect_number: 'hard',
  incorrect_cvc: 'hard',
  incorrect_zip: 'hard',
  incorrect_pin: 'hard',
  invalid_cvc: 'hard',
  invalid_pin: 'hard',
  invalid_amount: 'hard',
  restricted_card: 'hard',
  security_violation: 'hard',
  revocation_of_authorization: 'hard',
  revocation_of_all_authorizations: 'hard',
  card_not_supported: 'hard',
  currency_not_supported: 'hard',
  invalid_number: 'hard',
  invalid_expiry_year: 'hard',
  invalid_expiry_month: 'hard',
  merchant_blacklist: 'hard',
  new_account_information_available: 'hard',
  no_action_taken: 'hard',
  stop_payment_order: 'hard',
  transaction_not_allowed: 'hard',
  do_not_try_again: 'hard',
  testmode_decline: 'hard',
  // Bank debit failures (ACH / SEPA) that no retry fixes.
  account_closed: 'hard',
  account_frozen: 'hard',
  no_account: 'hard',
  bank_account_restricted: 'hard',
  debit_not_authorized: 'hard',
  // Soft: transient or issuer-side; a later retry can succeed.
  insufficient_funds: 'soft',
  processing_error: 'soft',
  try_again_later: 'soft',
  do_not_honor: 'soft',
  generic_decline: 'soft',
  card_velocity_exceeded: 'soft',
  card_decline_rate_limit_exceeded: 'soft',
  withdrawal_count_limit_exceeded: 'soft',
  issuer_not_available: 'soft',
  reenter_transaction: 'soft',
  approve_with_id: 'soft',
  call_issuer: 'soft',
  duplicate_transaction: 'soft',
  not_permitted: 'soft',
  service_not_allowed: 'soft',
  offline_pin_required: 'soft',
  online_or_offline_pin_required: 'soft',
  pin_try_exceeded: 'soft',
  card_declined: 'soft',
  // 3DS / SCA: an off-session retry cannot succeed until the customer authenticates.
  authentication_required: 'authentication_required',
});

/**
 * Stripe's `advice_code` on a decline (the PaymentIntent's last_payment_error): what Stripe, with the
 * card network's data, advises. It outranks the decline code: issuers send generic codes for hard
 * declines, and the network says "do not try again".
 */
export const ADVICE_CODES: Readonly<Record<string, DeclineClass>> = Object.freeze({
  // Retrying this card will fail (and networks fine merchants who retry): wait for a new method.
  do_not_try_again: 'hard',
  // The card data is wrong or outdated (e.g. expiry): the customer must update it.
  confirm_card_data: 'hard',
  // Transient: retry on the schedule.
  try_again_later: 'soft',
});

/** Classifies a decline by Stripe's advice code first, then the decline code (case-insensitively); unknown or missing is 'soft'. */
export function classifyDecline(code: string | null | undefined, adviceCode?: string | null): DeclineClass {
  const key = code?.trim().toLowerCase() ?? null;
  // 3DS first: no advice makes an off-session retry succeed before the customer authenticates.
  if (key === 'authentication_required') return 'authentication_required';
  const advice = adviceCode?.trim().toLowerCase() ?? null;
  // hasOwn, not `in`: 'constructor' and friends must not resolve through the prototype.
  if (advice !== null && Object.hasOwn(ADVICE_CODES, advice)) return ADVICE_CODES[advice] as DeclineClass;
  if (key === null) return 'soft';
  return Object.hasOwn(DECLINE_CODES, key) ? (DECLINE_CODES[key] as DeclineClass) : 'soft';
}

/**
 * What a dunning cycle does once every retry failed:
 * - cancel: the subscription is canceled (no proration, no final invoice);
 * - mark_uncollectible: the invoice is written off and local access is suspended while the
 *   subscription continues, so a later payment of that invoice restores access;
 * - leave_past_due: nothing changes in Stripe; access stays in grace.
 */
export const FINAL_ACTIONS = ['cancel', 'mark_uncollectible', 'leave_past_due'] as const;

/** The final action of a legacy setting or carried policy: 'mark_unpaid' (collection paused, service for free) became 'mark_uncollectible'. */
export function normalizeFinalAction(value: unknown): DunningPolicy['finalAction'] | null {
  if (value === 'mark_unpaid') return 'mark_uncollectible';
  return FINAL_ACTIONS.includes(value as DunningPolicy['finalAction']) ? (value as DunningPolicy['finalAction']) : null;
}

/** Retry schedule, final action and notice limits for one dunning cycle. */
export interface DunningPolicy {
  /** Days after the cycle's first failure at which retry k happens; strictly increasing, positive. */
  retryDaysAfterFailure: number[];
  finalAction: (typeof FINAL_ACTIONS)[number];
  noticeMinIntervalMs: number;
  maxNoticesPerCycle: number;
}

/**
 * Validates a policy (config-derived, or merged with a per-cycle override). Hand-written rather than
 * zod: this module is part of the workflow bundle, and every new workflow instance re-runs the bundle's
 * module initialization, where zod's alone was ~10% of the worker's workflow-thread CPU (npm run bench).
 */
export function validateDunningPolicy(value: unknown): { ok: true; policy: DunningPolicy } | { ok: false; error: string } {
  if (!value || typeof value !== 'object') return { ok: false, error: 'policy must be an object' };
  const p = value as Record<string, unknown>;
  const days = p.retryDaysAfterFailure;
  if (!Array.isArray(days) || days.length === 0) return { ok: false, error: 'retryDaysAfterFailure must be a non-empty array' };
  if (!days.every((d) => typeof d === 'number' && Number.isFinite(d) && d > 0)) {
    return { ok: false, error: 'retryDaysAfterFailure must hold positive finite numbers' };
  }
  if (!days.every((d, i) => i === 0 || d > (days[i - 1] as number))) return { ok: false, error: 'retryDaysAfterFailure must be strictly increasing' };
  const finalAction = normalizeFinalAction(p.finalAction);
  if (finalAction === null) return { ok: false, error: `finalAction must be one of ${FINAL_ACTIONS.join(', ')}` };
  for (const key of ['noticeMinIntervalMs', 'maxNoticesPerCycle'] as const) {
    const v = p[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) return { ok: false, error: `${key} must be a non-negative integer` };
  }
  return {
    ok: true,
    policy: {
      retryDaysAfterFailure: [...(days as number[])],
      finalAction,
      noticeMinIntervalMs: p.noticeMinIntervalMs as number,
      maxNoticesPerCycle: p.maxNoticesPerCycle as number,
    },
  };
}

/** Retry after 1, 3, 5, 7 days; cancel when exhausted; at most 4 notices, 48 h apart. */
export const DEFAULT_DUNNING_POLICY: Readonly<DunningPolicy> = Object.freeze({
  // Frozen so a caller mutating the shared default cannot change every later cycle.
  retryDaysAfterFailure: Object.freeze([1, 3, 5, 7]) as number[],
  finalAction: 'cancel',
  noticeMinIntervalMs: 48 * 60 * 60 * 1000,
  maxNoticesPerCycle: 4,
});

const DAYS_ENTRY = /^\d+(\.\d+)?$/;

/** Parses a retry schedule such as "1,3,5,7" or "0.001,0.002" (days); throws an Error naming the bad entry. */
export function parseRetrySchedule(s: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  if (parts.length === 1 && parts[0] === '') {
    throw new Error('Invalid retry schedule "": expected comma-separated days such as "1,3,5,7"');
  }
  const days: number[] = [];
  parts.forEach((part, i) => {
    if (!DAYS_ENTRY.test(part)) {
      throw new Error(`Invalid retry schedule "${s}": entry ${i + 1} ("${part}") is not a number of days`);
    }
    const value = Number(part);
    if (!(value > 0)) {
      throw new Error(`Invalid retry schedule "${s}": entry ${i + 1} (${part}) must be greater than 0`);
    }
    const previous = days[i - 1];
    if (previous !== undefined && value <= previous) {
      throw new Error(`Invalid retry schedule "${s}": entry ${i + 1} (${part}) must be greater than the previous entry (${previous})`);
    }
    days.push(value);
  });
  return days;
}

/** Input to nextDunningStep; failedAtMs is the cycle's first failure, which the schedule counts from. */
export interface NextDunningStepInput {
  declineClass: DeclineClass;
  /** Retries already made in this cycle (0 right after the first failure). */
  attemptsMade: number;
  policy: DunningPolicy;
  failedAtMs: number;
}

/** What the dunning cycle does next. */
export type DunningStep =
  | { action: 'retry_at'; attempt: number; atMs: number }
  | { action: 'await_payment_method'; notice: 'update_payment_method' }
  | { action: 'await_authentication'; notice: 'authenticate_payment' }
  | { action: 'exhausted'; finalAction: DunningPolicy['finalAction'] };

/** Decides the next dunning step: schedule a retry, wait on the customer, or give up with the policy's final action. */
export function nextDunningStep(input: NextDunningStepInput): DunningStep {
  const { declineClass, attemptsMade, policy, failedAtMs } = input;
  if (!Number.isInteger(attemptsMade) || attemptsMade < 0) {
    throw new RangeError(`attemptsMade must be a non-negative integer, got ${attemptsMade}`);
  }
  // Retrying a hard decline blindly only burns issuer goodwill and risks card-testing flags.
  if (declineClass === 'hard') return { action: 'await_payment_method', notice: 'update_payment_method' };
  if (declineClass === 'authentication_required') {
    return { action: 'await_authentication', notice: 'authenticate_payment' };
  }
  const attempt = attemptsMade + 1;
  const days = policy.retryDaysAfterFailure[attempt - 1];
  if (days === undefined) return { action: 'exhausted', finalAction: policy.finalAction };
  return { action: 'retry_at', attempt, atMs: failedAtMs + Math.round(days * DAY_MS) };
}

/** Kinds of customer notice sent during dunning. */
export type NoticeKind =
  | 'payment_failed'
  | 'update_payment_method'
  | 'authenticate_payment'
  | 'final_attempt_ahead'
  | 'final_notice'
  | 'recovered'
  | 'upgrade_declined'
  | 'trial_ending';

/** Unique key for the notification ledger: at most one notice per kind per invoice attempt. */
export function noticeDedupKey(input: { invoiceId: string; kind: NoticeKind; attempt: number }): string {
  return `invoice:${input.invoiceId}:${input.kind}:${input.attempt}`;
}

/** Workflow current-details text, e.g. "attempt 2/4, next 2026-12-03" (UTC date); null nextAtMs means no further retry. */
export function formatDunningDetails(input: { attempt: number; total: number; nextAtMs: number | null }): string {
  const head = `attempt ${input.attempt}/${input.total}`;
  if (input.nextAtMs === null) return `${head}, no further retries`;
  return `${head}, next ${new Date(input.nextAtMs).toISOString().slice(0, 10)}`;
}
