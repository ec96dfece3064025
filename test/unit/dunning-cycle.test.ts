import { describe, expect, it } from 'vitest';
import {
  customerActionDeadline,
  isTerminalDunningState,
  minRetryGapMs,
  spacedRetryAt,
} from '../../domain/dunning-cycle';
import { normalizeStripeEvent } from '../../domain/events';
import { subscriptionSnapshotFromStripe } from '../../domain/stripe-objects';

const DAY = 86_400_000;
const policy = { retryDaysAfterFailure: [1, 3, 5, 7] };

describe('retry spacing', () => {
  it('uses the smallest gap of the schedule, counting the first retry from the failure', () => {
    expect(minRetryGapMs(policy)).toBe(DAY);
    expect(minRetryGapMs({ retryDaysAfterFailure: [2, 2.5, 10] })).toBe(DAY / 2);
  });

  it('keeps the scheduled time when the previous attempt is far enough back', () => {
    expect(spacedRetryAt({ scheduledAtMs: 3 * DAY, lastAttemptAtMs: DAY, policy })).toBe(3 * DAY);
    expect(spacedRetryAt({ scheduledAtMs: 3 * DAY, lastAttemptAtMs: null, policy })).toBe(3 * DAY);
  });

  it('does not fire overdue retries back to back after a late payment-method retry', () => {
    expect(spacedRetryAt({ scheduledAtMs: 3 * DAY, lastAttemptAtMs: 4 * DAY, policy })).toBe(5 * DAY);
  });
});

describe('customerActionDeadline', () => {
  it('waits until the last scheduled retry day', () => {
    expect(customerActionDeadline({ failedAtMs: 0, nowMs: DAY, policy })).toBe(7 * DAY);
  });

  it('still leaves one gap for the customer when the hard decline came on the last attempt', () => {
    expect(customerActionDeadline({ failedAtMs: 0, nowMs: 7 * DAY, policy })).toBe(8 * DAY);
  });
});

describe('isTerminalDunningState', () => {
  it('knows which states end a cycle', () => {
    expect(['recovered', 'exhausted', 'canceled'].every(isTerminalDunningState)).toBe(true);
    expect(['retrying', 'awaiting_payment_method', 'awaiting_authentication'].some(isTerminalDunningState)).toBe(false);
  });
});
