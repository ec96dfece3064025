import { describe, expect, it } from 'vitest';
import {
  customerActionDeadline,
  effectiveSubscriptionStatus,
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

describe('effectiveSubscriptionStatus', () => {
  const marked = { metadata: { dunning_final_action: 'mark_unpaid' }, pause_collection: { behavior: 'keep_as_draft' } };

  it('reads a past_due subscription whose collection dunning paused as unpaid', () => {
    expect(effectiveSubscriptionStatus('past_due', marked)).toBe('unpaid');
  });

  it('leaves every other case to Stripe', () => {
    expect(effectiveSubscriptionStatus('active', marked)).toBe('active');
    expect(effectiveSubscriptionStatus('past_due', { ...marked, pause_collection: null })).toBe('past_due');
    expect(effectiveSubscriptionStatus('past_due', { metadata: {}, pause_collection: marked.pause_collection })).toBe('past_due');
    expect(effectiveSubscriptionStatus('past_due', {})).toBe('past_due');
  });

  it('is applied to webhooks and to Stripe re-fetches alike', () => {
    const sub = {
      id: 'sub_unpaid',
      object: 'subscription',
      customer: 'cus_unpaid',
      status: 'past_due',
      cancel_at_period_end: false,
      items: { data: [{ price: { id: 'price_x' }, current_period_start: 1, current_period_end: 2 }] },
      ...marked,
    };
    expect(subscriptionSnapshotFromStripe(sub, 10)?.status).toBe('unpaid');
    const result = normalizeStripeEvent({
      id: 'evt_unpaid',
      object: 'event',
      type: 'customer.subscription.updated',
      created: 10,
      livemode: false,
      api_version: '2026-10-28.endive',
      data: { object: sub },
    });
    expect(result.outcome === 'handled' && result.event.data.kind === 'subscription' && result.event.data.status).toBe('unpaid');
  });
});
