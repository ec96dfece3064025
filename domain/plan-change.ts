/**
 * Plan-change rules shared by the customer workflow's update validators and the preview endpoint.
 * Pure and synchronous: validators must be deterministic and cannot call activities.
 */
import type { LocalSubscription } from './billing/state';
import type { SubscriptionStatus } from './billing-event';
import type { Plan } from './plan-catalog';
import { classifyPlanChange } from './proration';

/** Rejection types: the `type` of the ApplicationFailure a validator throws, mapped to HTTP by the API. */
export type PlanChangeRejection =
  | 'InvalidRequest'
  | 'UnknownPlan'
  | 'SamePlan'
  | 'NoSubscription'
  | 'SubscriptionCanceled'
  | 'SubscriptionNotChangeable'
  | 'UnknownCurrentPlan'
  | 'CurrencyMismatch'
  | 'InvalidProrationDate'
  | 'ChangeInFlight'
  | 'RequestIdReused'
  | 'NotCanceling'
  | 'PreviewRequired'
  | 'SubscriptionChanged'
  | 'SubscriptionCanceling'
  | 'SameQuantity'
  | 'InvalidQuantity';

/** What the rules read of the customer's subscription: the one local subscription contract. */
export type PlanChangeSubject = LocalSubscription;

export type PlanChangeDecision =
  | { ok: true; kind: 'upgrade' | 'downgrade'; from: Plan; to: Plan }
  | { ok: false; type: PlanChangeRejection; message: string };

/** A preview's proration date stays usable this long (Stripe requires it inside the current period anyway). */
export const PRORATION_DATE_MAX_AGE_SECONDS = 24 * 3600;
/** Clock skew tolerated for a proration date slightly in the future. */
const PRORATION_DATE_MAX_SKEW_SECONDS = 300;

const ENDED: readonly SubscriptionStatus[] = ['canceled', 'incomplete_expired'];
const NOT_CHANGEABLE: readonly SubscriptionStatus[] = ['incomplete', 'paused'];

/** Request ids travel into Stripe idempotency keys and Temporal update ids. */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,100}$/;

/** Why a subscription cannot be changed at all, or null when it can. */
export function subscriptionRejection(sub: PlanChangeSubject | null): { type: PlanChangeRejection; message: string } | null {
  if (!sub) return { type: 'NoSubscription', message: 'the customer has no subscription' };
  if (ENDED.includes(sub.status)) return { type: 'SubscriptionCanceled', message: `subscription ${sub.id} is ${sub.status}` };
  if (NOT_CHANGEABLE.includes(sub.status)) {
    return { type: 'SubscriptionNotChangeable', message: `subscription ${sub.id} is ${sub.status}; it cannot change plans until it is active` };
  }
  return null;
}

/** The subscription's plan in the catalog, by plan id or else by Stripe price id. */
export function currentPlanOf(sub: PlanChangeSubject, catalog: readonly Plan[]): Plan | null {
  return catalog.find((p) => p.id === sub.planId) ?? catalog.find((p) => sub.priceId !== null && p.stripePriceId === sub.priceId) ?? null;
}

/**
 * Decides a plan change: a higher rank is an upgrade (now, prorated), a lower or equal rank a
 * downgrade (at period end, no refund).
 */
export function decidePlanChange(input: {
  catalog: readonly Plan[];
  subscription: PlanChangeSubject | null;
  planId: string;
  prorationDate?: number | undefined;
  now: number;
}): PlanChangeDecision {
  const { catalog, subscription: sub, planId, prorationDate, now } = input;
  const to = catalog.find((p) => p.id === planId && p.active);
  if (!to) return { ok: false, type: 'UnknownPlan', message: `unknown plan ${planId}` };
  const blocked = subscriptionRejection(sub);
  if (blocked || !sub) return { ok: false, ...(blocked ?? { type: 'NoSubscription', message: 'the customer has no subscription' }) };
  const from = currentPlanOf(sub, catalog);
  if (from?.id === to.id) return { ok: false, type: 'SamePlan', message: `subscription ${sub.id} is already on ${to.id}` };
  if (!from) {
    return { ok: false, type: 'UnknownCurrentPlan', message: `subscription ${sub.id} is on price ${sub.priceId ?? 'unknown'}, which is not in the plan catalog` };
  }
  if (from.currency !== to.currency) {
    return { ok: false, type: 'CurrencyMismatch', message: `${to.id} is billed in ${to.currency}, the subscription in ${from.currency}` };
  }
  const stale = prorationDateRejection(prorationDate, now);
  if (stale) return { ok: false, ...stale };
  const kind = classifyPlanChange(from.rank, to.rank) === 'upgrade' ? 'upgrade' : 'downgrade';
  return { ok: true, kind, from, to };
}

/** Why a preview's proration date cannot be used (not a recent unix time), or null when it can or is absent. */
export function prorationDateRejection(prorationDate: number | undefined, now: number): { type: 'InvalidProrationDate'; message: string } | null {
  if (prorationDate === undefined) return null;
  if (!Number.isSafeInteger(prorationDate) || prorationDate > now + PRORATION_DATE_MAX_SKEW_SECONDS || prorationDate < now - PRORATION_DATE_MAX_AGE_SECONDS) {
    return { type: 'InvalidProrationDate', message: 'prorationDate must be a recent unix time from a preview (at most 24 h old)' };
  }
  return null;
}

function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/**
 * A token of the local subscription as a preview saw it: any change of its id, status, plan, price,
 * period, cancel flag, scheduled change or seats (quantity) gives a new token. Deterministic (FNV-1a), so
 * the workflow's validator computes it from the same row the preview read and a commit can tell the two apart.
 */
export function subscriptionVersion(sub: PlanChangeSubject): string {
  const fields = [sub.id, sub.status, sub.planId, sub.priceId, sub.currentPeriodEnd, sub.cancelAtPeriodEnd, sub.pendingPlanId, sub.quantity ?? 1];
  return `sv2_${fnv1a(JSON.stringify(fields))}`;
}

/**
 * The token previews issued before seat changes (no quantity). Only the changePlan handler of histories
 * recorded before the subscription-version-quantity patch compares with it, so their replay is unchanged.
 */
export function subscriptionVersionV1(sub: PlanChangeSubject): string {
  return `sv1_${fnv1a(JSON.stringify([sub.id, sub.status, sub.planId, sub.priceId, sub.currentPeriodEnd, sub.cancelAtPeriodEnd, sub.pendingPlanId]))}`;
}

/**
 * Why a decided change may not be committed as asked, or null. An upgrade must carry its preview's
 * prorationDate and subscriptionVersion (so the charge is the previewed one); a version that no longer
 * matches `local` (the row the preview read) means the subscription changed since; a downgrade of a
 * subscription set to cancel at period end is refused, because the schedule's `end_behavior: release`
 * would renew it.
 */
export function commitRejection(input: {
  kind: 'upgrade' | 'downgrade';
  /** The subscription with what Stripe already confirmed laid over it. */
  subscription: PlanChangeSubject;
  /** The local row as a preview reads it. */
  local: PlanChangeSubject | null;
  prorationDate?: number | undefined;
  subscriptionVersion?: string | undefined;
  /** How the version is computed (default subscriptionVersion; replays of older histories: subscriptionVersionV1). */
  versionOf?: (sub: PlanChangeSubject) => string;
  /** The preview endpoint a PreviewRequired answer names (default the plan-change preview). */
  previewPath?: string;
}): { type: PlanChangeRejection; message: string } | null {
  const { kind, subscription: sub, local } = input;
  const versionOf = input.versionOf ?? subscriptionVersion;
  if (kind === 'downgrade' && sub.cancelAtPeriodEnd) {
    return {
      type: 'SubscriptionCanceling',
      message: `subscription ${sub.id} is set to cancel at period end; resume it first (POST /customers/{id}/subscription/resume), then downgrade`,
    };
  }
  if (kind === 'upgrade' && (input.prorationDate === undefined || input.subscriptionVersion === undefined)) {
    return {
      type: 'PreviewRequired',
      message: `${input.previewPath ? 'a change charged now' : 'an upgrade'} needs its preview: ${input.previewPath ?? 'POST /customers/{id}/subscription/plan/preview'} first, then pass its prorationDate and subscriptionVersion`,
    };
  }
  if (input.subscriptionVersion !== undefined && (!local || input.subscriptionVersion !== versionOf(local))) {
    return { type: 'SubscriptionChanged', message: `subscription ${sub.id} changed since the preview; preview again and commit with the new prorationDate and subscriptionVersion` };
  }
  return null;
}

/** Stripe idempotency keys of one plan-change request: `plan-change:<customer>:<requestId>[:step]`. */
export function planChangeIdempotencyKey(customerId: string, requestId: string, step?: string): string {
  return `plan-change:${customerId}:${requestId}${step ? `:${step}` : ''}`;
}

/** Stripe idempotency key of a cancel or resume request. */
export function subscriptionActionIdempotencyKey(action: 'cancel' | 'resume', customerId: string, requestId: string): string {
  return `subscription-${action}:${customerId}:${requestId}`;
}
