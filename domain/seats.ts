/**
 * Seat (subscription quantity) rules shared by the customer workflow's changeQuantity validator and the
 * preview endpoint. Pure and synchronous, like domain/plan-change.ts, whose commit rules they reuse: an
 * increase is charged now (its preview is required), a decrease is credited or takes effect at renewal.
 */
import type { LocalSubscription } from './billing/state';
import { commitRejection, prorationDateRejection, subscriptionRejection, type PlanChangeRejection } from './plan-change';

/** The most seats one subscription may have: a bound that catches a typo before Stripe invoices it. */
export const MAX_SEATS = 10_000;

/** When a decrease takes effect (SEAT_DECREASE_AT): at the renewal (default) or now, with a credit proration. */
export const SEAT_DECREASE_POLICIES = ['period_end', 'now'] as const;
export type SeatDecreaseAt = (typeof SEAT_DECREASE_POLICIES)[number];

/** The endpoint whose answer an increase must carry. */
export const SEAT_PREVIEW_PATH = 'POST /customers/{id}/subscription/quantity/preview';

export type SeatChangeKind = 'increase' | 'decrease';

export type SeatChangeDecision =
  | { ok: true; kind: SeatChangeKind; from: number; to: number }
  | { ok: false; type: PlanChangeRejection; message: string };

/** "1 seat", "3 seats": for messages. */
export const seatsText = (n: number): string => `${n} seat${n === 1 ? '' : 's'}`;

/** The subscription's seats (results recorded before quantities were stored read as 1). */
export const seatsOf = (sub: LocalSubscription): number => sub.quantity ?? 1;

/** Whether `quantity` is a seat count a subscription may have (1 … MAX_SEATS). */
export function isSeatCount(quantity: unknown): quantity is number {
  return typeof quantity === 'number' && Number.isSafeInteger(quantity) && quantity >= 1 && quantity <= MAX_SEATS;
}

/** Decides a seat change: more seats is an increase (now, prorated), fewer a decrease. */
export function decideSeatChange(input: {
  subscription: LocalSubscription | null;
  quantity: number;
  prorationDate?: number | undefined;
  now: number;
}): SeatChangeDecision {
  const { subscription: sub, quantity } = input;
  if (!isSeatCount(quantity)) return { ok: false, type: 'InvalidQuantity', message: `quantity must be a whole number from 1 to ${MAX_SEATS}` };
  const blocked = subscriptionRejection(sub);
  if (blocked || !sub) return { ok: false, ...(blocked ?? { type: 'NoSubscription', message: 'the customer has no subscription' }) };
  if (sub.cancelAtPeriodEnd) {
    return {
      ok: false,
      type: 'SubscriptionCanceling',
      message: `subscription ${sub.id} is set to cancel at period end; resume it first (POST /customers/{id}/subscription/resume), then change seats`,
    };
  }
  const from = seatsOf(sub);
  if (from === quantity) return { ok: false, type: 'SameQuantity', message: `subscription ${sub.id} already has ${seatsText(quantity)}` };
  const stale = prorationDateRejection(input.prorationDate, input.now);
  if (stale) return { ok: false, ...stale };
  return { ok: true, kind: quantity > from ? 'increase' : 'decrease', from, to: quantity };
}

/**
 * The commit rules of a decided seat change (domain/plan-change.ts commitRejection): an increase is
 * charged now, so it needs its preview's prorationDate and subscriptionVersion; a version that no longer
 * matches the local row means the subscription (its seats included) changed since the preview.
 */
export function seatCommitRejection(input: {
  kind: SeatChangeKind;
  subscription: LocalSubscription;
  local: LocalSubscription | null;
  prorationDate?: number | undefined;
  subscriptionVersion?: string | undefined;
}): { type: PlanChangeRejection; message: string } | null {
  const { kind, ...rest } = input;
  return commitRejection({ ...rest, kind: kind === 'increase' ? 'upgrade' : 'downgrade', previewPath: SEAT_PREVIEW_PATH });
}

/** Stripe idempotency keys of one seat-change request: `seat-change:<customer>:<requestId>[:step]`. */
export function seatChangeIdempotencyKey(customerId: string, requestId: string, step?: string): string {
  return `seat-change:${customerId}:${requestId}${step ? `:${step}` : ''}`;
}
