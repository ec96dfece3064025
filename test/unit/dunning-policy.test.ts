import { describe, expect, it } from 'vitest';
import {
  classifyDecline,
  DECLINE_CODES,
  DEFAULT_DUNNING_POLICY,
  validateDunningPolicy,
  formatDunningDetails,
  nextDunningStep,
  noticeDedupKey,
  parseRetrySchedule,
  type DunningPolicy,
  type NoticeKind,
} from '../../domain/dunning-policy';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 26, 12, 0, 0);

const HARD = [
  'stolen_card',
  'lost_card',
  'fraudulent',
  'pickup_card',
  'invalid_account',
  'expired_card',
  'incorrect_number',
  'incorrect_cvc',
  'restricted_card',
  'security_violation',
  'revocation_of_authorization',
  'revocation_of_all_authorizations',
  'card_not_supported',
  'currency_not_supported',
  'invalid_number',
  'invalid_expiry_year',
  'invalid_expiry_month',
  'merchant_blacklist',
  'new_account_information_available',
  'no_action_taken',
  'stop_payment_order',
  'transaction_not_allowed',
  'account_closed',
  'do_not_try_again',
];

const SOFT = [
  'insufficient_funds',
  'processing_error',
  'try_again_later',
  'do_not_honor',
  'generic_decline',
  'card_velocity_exceeded',
  'withdrawal_count_limit_exceeded',
  'issuer_not_available',
  'reenter_transaction',
  'approve_with_id',
  'call_issuer',
  'duplicate_transaction',
  'not_permitted',
  'service_not_allowed',
  'offline_pin_required',
  'online_or_offline_pin_required',
  'pin_try_exceeded',
  'card_declined',
];

const policy = (overrides: Partial<DunningPolicy> = {}): DunningPolicy => ({
  retryDaysAfterFailure: [1, 3, 5, 7],
  finalAction: 'cancel',
  noticeMinIntervalMs: 48 * HOUR,
  maxNoticesPerCycle: 4,
  ...overrides,
});

describe('classifyDecline', () => {
  it.each(HARD)('classifies %s as hard', (code) => {
    expect(classifyDecline(code)).toBe('hard');
  });

  it.each(SOFT)('classifies %s as soft', (code) => {
    expect(classifyDecline(code)).toBe('soft');
  });

  it('classifies authentication_required on its own', () => {
    expect(classifyDecline('authentication_required')).toBe('authentication_required');
  });

  it('treats unknown, empty, null and undefined codes as soft', () => {
    expect(classifyDecline('some_new_code_stripe_added')).toBe('soft');
    expect(classifyDecline('')).toBe('soft');
    expect(classifyDecline(null)).toBe('soft');
    expect(classifyDecline(undefined)).toBe('soft');
  });

  it('ignores case and surrounding whitespace', () => {
    expect(classifyDecline('STOLEN_CARD')).toBe('hard');
    expect(classifyDecline('  Insufficient_Funds ')).toBe('soft');
    expect(classifyDecline('Authentication_Required')).toBe('authentication_required');
  });

  it('does not resolve codes through the object prototype', () => {
    expect(classifyDecline('constructor')).toBe('soft');
    expect(classifyDecline('__proto__')).toBe('soft');
    expect(classifyDecline('toString')).toBe('soft');
  });

  it('keeps every table key lower-case so lookups can match', () => {
    for (const key of Object.keys(DECLINE_CODES)) expect(key).toBe(key.toLowerCase());
  });
});

describe('classifyDecline with Stripe advice codes', () => {
  it('lets the advice outrank a generic decline code', () => {
    expect(classifyDecline('generic_decline', 'do_not_try_again')).toBe('hard');
    expect(classifyDecline('do_not_honor', 'confirm_card_data')).toBe('hard');
    expect(classifyDecline('stolen_card', 'try_again_later')).toBe('soft');
    expect(classifyDecline(null, 'do_not_try_again')).toBe('hard');
    expect(classifyDecline('insufficient_funds', null)).toBe('soft');
    expect(classifyDecline('insufficient_funds', 'unknown_advice')).toBe('soft');
    expect(classifyDecline('stolen_card', 'unknown_advice')).toBe('hard');
  });

  it('keeps 3DS first: no advice makes an off-session retry work before the customer authenticates', () => {
    expect(classifyDecline('authentication_required', 'try_again_later')).toBe('authentication_required');
  });

  it('reads the retired mark_unpaid final action as mark_uncollectible', () => {
    expect(validateDunningPolicy({ ...DEFAULT_DUNNING_POLICY, finalAction: 'mark_unpaid' })).toMatchObject({ ok: true, policy: { finalAction: 'mark_uncollectible' } });
    expect(validateDunningPolicy({ ...DEFAULT_DUNNING_POLICY, finalAction: 'pause' })).toMatchObject({ ok: false });
  });
});

describe('DEFAULT_DUNNING_POLICY', () => {
  it('retries after 1, 3, 5, 7 days with at most 4 notices 48 h apart', () => {
    expect(DEFAULT_DUNNING_POLICY).toEqual({
      retryDaysAfterFailure: [1, 3, 5, 7],
      finalAction: 'cancel',
      noticeMinIntervalMs: 48 * HOUR,
      maxNoticesPerCycle: 4,
    });
    expect(validateDunningPolicy(DEFAULT_DUNNING_POLICY)).toEqual({ ok: true, policy: DEFAULT_DUNNING_POLICY });
  });

  it('cannot be mutated by a caller', () => {
    expect(() => DEFAULT_DUNNING_POLICY.retryDaysAfterFailure.push(9)).toThrow(TypeError);
    expect(DEFAULT_DUNNING_POLICY.retryDaysAfterFailure).toEqual([1, 3, 5, 7]);
  });

  it('rejects a schedule that is not strictly increasing', () => {
    expect(validateDunningPolicy(policy({ retryDaysAfterFailure: [1, 3, 3] }))).toEqual({ ok: false, error: 'retryDaysAfterFailure must be strictly increasing' });
  });

  it.each([
    ['an empty schedule', { retryDaysAfterFailure: [] }, /non-empty/],
    ['a non-finite day', { retryDaysAfterFailure: [1, Infinity] }, /positive finite/],
    ['a zero day', { retryDaysAfterFailure: [0, 1] }, /positive finite/],
    ['an unknown final action', { finalAction: 'delete_customer' }, /finalAction must be one of/],
    ['a fractional notice cap', { maxNoticesPerCycle: 1.5 }, /maxNoticesPerCycle/],
    ['a negative notice interval', { noticeMinIntervalMs: -1 }, /noticeMinIntervalMs/],
  ])('rejects %s', (_name, override, message) => {
    const result = validateDunningPolicy({ ...DEFAULT_DUNNING_POLICY, ...override });
    expect(result.ok).toBe(false);
    expect(!result.ok && result.error).toMatch(message);
  });

  it('rejects what is not an object', () => {
    expect(validateDunningPolicy(null)).toEqual({ ok: false, error: 'policy must be an object' });
  });
});

describe('parseRetrySchedule', () => {
  it('parses whole and fractional days', () => {
    expect(parseRetrySchedule('1,3,5,7')).toEqual([1, 3, 5, 7]);
    expect(parseRetrySchedule(' 1 , 3 ,5 ')).toEqual([1, 3, 5]);
    expect(parseRetrySchedule('0.001,0.002,0.5')).toEqual([0.001, 0.002, 0.5]);
    expect(parseRetrySchedule('2')).toEqual([2]);
  });

  it.each([
    ['', /expected comma-separated days/],
    ['   ', /expected comma-separated days/],
    ['1,,3', /entry 2 \(""\) is not a number of days/],
    ['1,3,', /entry 3 \(""\) is not a number of days/],
    ['1,abc', /entry 2 \("abc"\) is not a number of days/],
    ['-1,3', /entry 1 \("-1"\) is not a number of days/],
    ['1e3', /entry 1 \("1e3"\) is not a number of days/],
    ['0x10', /is not a number of days/],
    ['Infinity', /is not a number of days/],
    ['0,1', /entry 1 \(0\) must be greater than 0/],
    ['0.000', /must be greater than 0/],
    ['3,1', /entry 2 \(1\) must be greater than the previous entry \(3\)/],
    ['1,3,3', /entry 3 \(3\) must be greater than the previous entry \(3\)/],
  ])('rejects %j', (input, message) => {
    expect(() => parseRetrySchedule(input)).toThrow(message);
  });
});

describe('nextDunningStep', () => {
  it('schedules soft-decline retry k at the k-th offset from the first failure', () => {
    const p = policy();
    expect(nextDunningStep({ declineClass: 'soft', attemptsMade: 0, policy: p, failedAtMs: T0 })).toEqual({
      action: 'retry_at',
      attempt: 1,
      atMs: T0 + 1 * DAY,
    });
    expect(nextDunningStep({ declineClass: 'soft', attemptsMade: 1, policy: p, failedAtMs: T0 })).toEqual({
      action: 'retry_at',
      attempt: 2,
      atMs: T0 + 3 * DAY,
    });
    expect(nextDunningStep({ declineClass: 'soft', attemptsMade: 3, policy: p, failedAtMs: T0 })).toEqual({
      action: 'retry_at',
      attempt: 4,
      atMs: T0 + 7 * DAY,
    });
  });

  it('converts fractional days to whole milliseconds', () => {
    const p = policy({ retryDaysAfterFailure: [0.001, 0.002] });
    expect(nextDunningStep({ declineClass: 'soft', attemptsMade: 0, policy: p, failedAtMs: T0 })).toEqual({
      action: 'retry_at',
      attempt: 1,
      atMs: T0 + 86_400,
    });
    expect(nextDunningStep({ declineClass: 'soft', attemptsMade: 1, policy: p, failedAtMs: T0 })).toEqual({
      action: 'retry_at',
      attempt: 2,
      atMs: T0 + 172_800,
    });
  });

  it('reports exhaustion with the policy final action once the schedule is used up', () => {
    for (const finalAction of ['cancel', 'mark_uncollectible', 'leave_past_due'] as const) {
      const p = policy({ finalAction });
      expect(nextDunningStep({ declineClass: 'soft', attemptsMade: 4, policy: p, failedAtMs: T0 })).toEqual({
        action: 'exhausted',
        finalAction,
      });
      expect(nextDunningStep({ declineClass: 'soft', attemptsMade: 9, policy: p, failedAtMs: T0 })).toEqual({
        action: 'exhausted',
        finalAction,
      });
    }
  });

  it('never retries a hard decline and asks for a new payment method instead', () => {
    for (const attemptsMade of [0, 2, 4]) {
      expect(nextDunningStep({ declineClass: 'hard', attemptsMade, policy: policy(), failedAtMs: T0 })).toEqual({
        action: 'await_payment_method',
        notice: 'update_payment_method',
      });
    }
  });

  it('waits for the customer to authenticate when the bank requires it', () => {
    expect(
      nextDunningStep({ declineClass: 'authentication_required', attemptsMade: 1, policy: policy(), failedAtMs: T0 }),
    ).toEqual({ action: 'await_authentication', notice: 'authenticate_payment' });
  });

  it('rejects a negative or fractional attempt count', () => {
    expect(() => nextDunningStep({ declineClass: 'soft', attemptsMade: -1, policy: policy(), failedAtMs: T0 })).toThrow(
      RangeError,
    );
    expect(() => nextDunningStep({ declineClass: 'soft', attemptsMade: 1.5, policy: policy(), failedAtMs: T0 })).toThrow(
      RangeError,
    );
  });

  it('drives a whole soft cycle from the decline code to exhaustion', () => {
    const p = policy();
    const steps = [0, 1, 2, 3, 4].map((attemptsMade) =>
      nextDunningStep({ declineClass: classifyDecline('insufficient_funds'), attemptsMade, policy: p, failedAtMs: T0 }),
    );
    expect(steps.map((s) => (s.action === 'retry_at' ? (s.atMs - T0) / DAY : s.action))).toEqual([1, 3, 5, 7, 'exhausted']);
  });
});

describe('noticeDedupKey', () => {
  it('keys a notice by invoice, kind and attempt', () => {
    expect(noticeDedupKey({ invoiceId: 'in_123', kind: 'payment_failed', attempt: 2 })).toBe('invoice:in_123:payment_failed:2');
  });

  it('gives different attempts and kinds different keys', () => {
    const a = noticeDedupKey({ invoiceId: 'in_1', kind: 'payment_failed', attempt: 1 });
    const b = noticeDedupKey({ invoiceId: 'in_1', kind: 'payment_failed', attempt: 2 });
    const c = noticeDedupKey({ invoiceId: 'in_1', kind: 'final_notice', attempt: 1 });
    expect(new Set([a, b, c]).size).toBe(3);
  });
});

describe('formatDunningDetails', () => {
  it('shows the attempt and the UTC date of the next retry', () => {
    expect(formatDunningDetails({ attempt: 2, total: 4, nextAtMs: Date.UTC(2026, 11, 3, 9, 30) })).toBe(
      'attempt 2/4, next 2026-12-03',
    );
  });

  it('uses the UTC date, not the local one, just before midnight UTC', () => {
    expect(formatDunningDetails({ attempt: 1, total: 4, nextAtMs: Date.UTC(2026, 11, 31, 23, 59, 59) })).toBe(
      'attempt 1/4, next 2026-12-31',
    );
  });

  it('says when no retry is left', () => {
    expect(formatDunningDetails({ attempt: 4, total: 4, nextAtMs: null })).toBe('attempt 4/4, no further retries');
  });
});
