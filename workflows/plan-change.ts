/**
 * Plan-change handlers of the customer workflow: Workflow Updates with synchronous validators.
 *
 * Upgrades apply now: prorated, invoiced at once and applied only if that invoice is paid
 * (`pending_if_incomplete`). Downgrades are scheduled for the period end with a Stripe Subscription
 * Schedule rather than applied by this workflow at renewal: Stripe switches the price exactly at the
 * period boundary, so the renewal invoice is already at the new price even if this service is down at
 * that moment, and the `customer.subscription.updated` webhook confirms it (billing-db's writeSubscription
 * then clears the pending plan). The local plan and cancel fields change only through webhooks; this
 * workflow, the single writer, sets and clears only the pending-plan marker.
 */
import { ActivityFailure, ApplicationFailure, condition, log, patched, setHandler } from '@temporalio/workflow';
import type { LocalSubscription } from '../domain/billing/state';
import type { BillingEvent } from '../domain/billing-event';
import { type CancelSubscriptionRequest, type ChangePlanRequest, type ChangePlanResult, type PlanChangeView, type SubscriptionActionResult } from '../domain/messages';
import { cancelPendingPlanChangeUpdate, cancelSubscriptionUpdate, changePlanUpdate, refreshPlanCatalogUpdate, resumeSubscriptionUpdate } from './contracts';
import { commitRejection, decidePlanChange, REQUEST_ID_PATTERN, subscriptionVersion, subscriptionVersionV1, type PlanChangeRejection } from '../domain/plan-change';
import type { Plan } from '../domain/plan-catalog';
import { seatsText } from '../domain/seats';
import { localPostgresActivities, postgresActivities } from './postgres-activities';
import { installSeatHandlers } from './seats';
import { stripeInteractiveWriteActivities } from './stripe-activities';

const db = postgresActivities;
const dbLocal = localPostgresActivities;

const stripeWrite = stripeInteractiveWriteActivities;

/** Completed request results kept for idempotent retries (older ones fall back to Stripe's keys). */
export const COMPLETED_REQUESTS_LIMIT = 100;
/** How long a Stripe-confirmed state may be ahead of the local row before the row is trusted again. */
const EXPECTED_TTL_SECONDS = 3600;

/** What Stripe confirmed but the local row (written only from webhooks) does not show yet. */
interface ExpectedState {
  planId?: string;
  /** Seats Stripe confirmed (a seat change made now). */
  quantity?: number;
  cancelAtPeriodEnd?: boolean;
  canceled?: boolean;
  until: number;
}

/** State carried over continue-as-new (completed request ids make retries idempotent). */
export interface PlanChangeCarry {
  /** The latest plan change (in flight, pending payment, scheduled, or settled). */
  inFlight: PlanChangeView | null;
  /** Results keyed `<update name>:<requestId>`. */
  completed: { requestId: string; result: unknown }[];
  expected?: ExpectedState | null;
}

export interface PlanChangeContext {
  customerId: string;
  carried: PlanChangeCarry | undefined;
  getSubscription(): LocalSubscription | null;
  setSubscription(s: LocalSubscription | null): void;
  /** Runs a write of the customer's rows in the customer workflow's main loop (the single writer). */
  inLoop<T>(work: () => Promise<T>): Promise<T>;
}

/** patched() id of loading the plan catalog at workflow start. */
export const PLAN_CHANGE_CATALOG_PATCH = 'plan-change-catalog';
/**
 * patched() id of the commit rules in the changePlan handler (preview required for upgrades, unchanged
 * subscription, no downgrade while canceling). Validators do not run on replay; the handler's re-check
 * would reject changes older histories accepted, so it runs only in runs that recorded this marker.
 */
export const PLAN_CHANGE_COMMIT_RULES_PATCH = 'plan-change-commit-rules';
/**
 * patched() id of subscription versions that cover the seats (sv2, domain/plan-change.ts): the changePlan
 * handler of histories recorded before it compares the token with the sv1 hash those previews issued.
 */
export const SUBSCRIPTION_VERSION_QUANTITY_PATCH = 'subscription-version-quantity';

export interface PlanChangeHandlers {
  view(): PlanChangeView | null;
  carry(): PlanChangeCarry;
  onEventApplied(event: BillingEvent): Promise<void>;
  /**
   * Loads the plan catalog; call once the subscription is loaded. Validators defer until then.
   * `catalogPatched`: the caller's earlier patched(PLAN_CHANGE_CATALOG_PATCH), if it asked already;
   * `local`: load it with a local activity (runs that use local activities for Postgres).
   */
  init(catalogPatched?: boolean, local?: boolean): Promise<void>;
}

/** A change waiting for the renewal: a downgrade to planId, or (quantity set) a seat decrease on it. */
type ScheduledChange = { planId: string; effectiveAt: number | null; quantity?: number };

/** Registers the plan-change updates; returns hooks the main loop calls. */
export function installPlanChangeHandlers(ctx: PlanChangeContext): PlanChangeHandlers {
  const { customerId } = ctx;
  let change: PlanChangeView | null = ctx.carried?.inFlight ?? null;
  const completed = [...(ctx.carried?.completed ?? [])];
  let expected: ExpectedState | null = ctx.carried?.expected ?? null;
  // null until loaded: validators then defer to the handler, which loads it first.
  let catalog: Plan[] | null = null;
  // The customer workflow has loaded its subscription (init ran).
  let ready = false;
  // `<update>:<requestId>` of the handler now talking to Stripe: one subscription change at a time.
  let busy: string | null = null;

  const now = () => Math.floor(Date.now() / 1000);
  const iso = (s: number | null | undefined) => (s ? new Date(s * 1000).toISOString() : 'the period end');
  const lookup = (key: string) => completed.find((c) => c.requestId === key);

  function remember(key: string, result: unknown): void {
    completed.push({ requestId: key, result });
    if (completed.length > COMPLETED_REQUESTS_LIMIT) completed.splice(0, completed.length - COMPLETED_REQUESTS_LIMIT);
  }

  function reject(type: PlanChangeRejection, message: string): never {
    throw ApplicationFailure.nonRetryable(message, type);
  }

  function expect(patch: Omit<ExpectedState, 'until'>): void {
    const live = expected && expected.until >= now() ? expected : {};
    expected = { ...live, ...patch, until: now() + EXPECTED_TTL_SECONDS };
  }

  /** The local subscription with what Stripe already confirmed laid over it. */
  function effective(): LocalSubscription | null {
    const s = ctx.getSubscription();
    if (!s || !expected || expected.until < now()) return s;
    return {
      ...s,
      planId: expected.planId ?? s.planId,
      ...(expected.quantity !== undefined ? { quantity: expected.quantity } : {}),
      cancelAtPeriodEnd: expected.cancelAtPeriodEnd ?? s.cancelAtPeriodEnd,
      status: expected.canceled ? 'canceled' : s.status,
    };
  }

  function scheduledChange(sub: LocalSubscription | null): ScheduledChange | null {
    if (change?.status === 'scheduled') {
      const seats = change.toQuantity !== undefined ? { quantity: change.toQuantity } : {};
      return { planId: change.toPlanId, effectiveAt: change.effectiveAt ?? null, ...seats };
    }
    if (sub?.pendingPlanId) return { planId: sub.pendingPlanId, effectiveAt: null };
    return null;
  }

  /** What a change is to, in messages: a plan, or seats. */
  const describeTarget = (t: { toPlanId?: string; planId?: string; toQuantity?: number; quantity?: number }) => {
    const seats = t.toQuantity ?? t.quantity;
    return seats !== undefined ? seatsText(seats) : (t.toPlanId ?? t.planId ?? 'another plan');
  };

  /** Refuses a new change while one awaits payment or the renewal (one subscription change at a time). */
  function requireNoOpenChange(sub: LocalSubscription | null): void {
    if (change?.status === 'pending' && (change.expiresAt ?? 0) > now()) {
      reject('ChangeInFlight', `the change to ${describeTarget(change)} awaits payment of invoice ${change.invoiceId ?? 'unknown'} until ${iso(change.expiresAt)}`);
    }
    const scheduled = scheduledChange(sub);
    if (scheduled) {
      reject('ChangeInFlight', `a change to ${describeTarget(scheduled)} is scheduled for ${iso(scheduled.effectiveAt)}; cancel it first`);
    }
  }

  function requireNotBusy(): void {
    if (busy) reject('ChangeInFlight', `another subscription change (${busy}) is in progress; retry when it finishes`);
  }

  function requireLive(sub: LocalSubscription | null): LocalSubscription {
    if (!sub) reject('NoSubscription', 'the customer has no subscription');
    if (sub.status === 'canceled' || sub.status === 'incomplete_expired') reject('SubscriptionCanceled', `subscription ${sub.id} is ${sub.status}`);
    return sub;
  }

  function requireRequestId(req: { requestId?: unknown } | null | undefined): void {
    if (!req || typeof req.requestId !== 'string' || !REQUEST_ID_PATTERN.test(req.requestId)) {
      reject('InvalidRequest', 'requestId must be 1-100 characters of letters, digits, _ . : -');
    }
  }

  /** A repeated request returns the first one's result (or waits for it while it runs). */
  async function priorResult<T>(key: string): Promise<{ found: true; result: T } | { found: false }> {
    if (busy === key) await condition(() => busy !== key);
    const prior = lookup(key);
    return prior ? { found: true, result: prior.result as T } : { found: false };
  }

  /** Moves the latest change to its final state; its request's stored result stays what was answered. */
  function settle(status: 'confirmed' | 'canceled', reason: string): void {
    if (!change) return;
    change = { ...change, status };
    log.info('plan change settled', { customerId, requestId: change.requestId, status, reason });
  }

  /** Turns activity failures into update failures with a type the API maps to an HTTP status. */
  function asUpdateFailure(err: unknown): unknown {
    if (err instanceof ApplicationFailure) return err;
    if (err instanceof ActivityFailure) {
      const cause = err.cause;
      const rejected = cause instanceof ApplicationFailure && cause.nonRetryable;
      return ApplicationFailure.create({
        message: cause?.message ?? err.message,
        type: rejected ? 'StripeRejected' : 'StripeUnavailable',
        nonRetryable: true,
        cause: err,
      });
    }
    return err;
  }

  async function exclusively<T>(key: string, work: () => Promise<T>): Promise<T> {
    busy = key;
    try {
      const result = await work();
      remember(key, result);
      return result;
    } catch (err) {
      throw asUpdateFailure(err);
    } finally {
      busy = null;
    }
  }

  // ---- changePlan -------------------------------------------------------------------------------

  /** Waits for the subscription and the catalog; both are there except in a run's very first task. */
  async function whenReady(): Promise<void> {
    await condition(() => ready);
    if (catalog === null) catalog = await db.loadPlanCatalog();
  }

  function checkChangePlan(req: ChangePlanRequest) {
    requireNotBusy();
    const sub = effective();
    const decision = decidePlanChange({ catalog: catalog ?? [], subscription: sub, planId: req.planId, prorationDate: req.prorationDate ?? undefined, now: now() });
    if (!decision.ok) reject(decision.type, decision.message);
    if (!sub) reject('NoSubscription', 'the customer has no subscription');
    requireNoOpenChange(sub);
    return { ...decision, sub };
  }

  /**
   * The commit rules of domain/plan-change.ts: compared with the local row the preview read. `seatsInVersion`
   * false: the sv1 token of histories recorded before SUBSCRIPTION_VERSION_QUANTITY_PATCH.
   */
  function checkCommit(req: ChangePlanRequest, kind: 'upgrade' | 'downgrade', sub: LocalSubscription, seatsInVersion = true): void {
    const refused = commitRejection({
      kind,
      subscription: sub,
      local: ctx.getSubscription(),
      prorationDate: req.prorationDate ?? undefined,
      subscriptionVersion: req.subscriptionVersion ?? undefined,
      versionOf: seatsInVersion ? subscriptionVersion : subscriptionVersionV1,
    });
    if (refused) reject(refused.type, refused.message);
  }

  setHandler(
    changePlanUpdate,
    async (req) => {
      const key = `changePlan:${req.requestId}`;
      const prior = await priorResult<ChangePlanResult>(key);
      if (prior.found) {
        if (prior.result.toPlanId !== req.planId) reject('RequestIdReused', `requestId ${req.requestId} was used for a change to ${prior.result.toPlanId}`);
        return prior.result;
      }
      await whenReady();
      const { kind, from, to, sub } = checkChangePlan(req);
      if (patched(PLAN_CHANGE_COMMIT_RULES_PATCH)) checkCommit(req, kind, sub, patched(SUBSCRIPTION_VERSION_QUANTITY_PATCH));
      const prorationDate = req.prorationDate ?? now();
      change = { requestId: req.requestId, fromPlanId: from.id, toPlanId: to.id, kind, status: 'in_flight' };
      try {
        return await exclusively(key, () => (kind === 'upgrade' ? upgrade(req.requestId, sub, from, to, prorationDate) : downgrade(req.requestId, sub, from, to)));
      } catch (err) {
        if (change?.requestId === req.requestId && change.status === 'in_flight') change = { ...change, status: 'failed' };
        throw err;
      }
    },
    {
      validator: (req) => {
        requireRequestId(req);
        if (
          typeof req.planId !== 'string' ||
          (req.prorationDate != null && typeof req.prorationDate !== 'number') ||
          (req.subscriptionVersion != null && typeof req.subscriptionVersion !== 'string')
        ) {
          reject('InvalidRequest', 'planId must be a string, prorationDate a unix time and subscriptionVersion a string');
        }
        const prior = lookup(`changePlan:${req.requestId}`);
        if (prior) {
          if ((prior.result as ChangePlanResult).toPlanId !== req.planId) {
            reject('RequestIdReused', `requestId ${req.requestId} was used for a change to ${(prior.result as ChangePlanResult).toPlanId}`);
          }
          return;
        }
        if (busy === `changePlan:${req.requestId}`) {
          if (change?.toPlanId !== req.planId) reject('RequestIdReused', `requestId ${req.requestId} is in flight for a change to ${change?.toPlanId ?? 'another plan'}`);
          return;
        }
        // First task of a run: the handler checks once the subscription and catalog are loaded.
        if (!ready || catalog === null) return;
        const { kind, sub } = checkChangePlan(req);
        checkCommit(req, kind, sub);
      },
    },
  );

  async function upgrade(requestId: string, sub: LocalSubscription, from: Plan, to: Plan, prorationDate: number): Promise<ChangePlanResult> {
    const out = await stripeWrite.updateSubscriptionPlan({
      customerId,
      subscriptionId: sub.id,
      requestId,
      fromPriceId: from.stripePriceId,
      toPriceId: to.stripePriceId,
      prorationDate,
    });
    const base = { requestId, kind: 'upgrade' as const, fromPlanId: from.id, toPlanId: to.id, invoiceId: out.invoiceId };
    const invoice = out.invoiceId ? ` (invoice ${out.invoiceId})` : '';
    if (out.outcome === 'confirmed') {
      change = { ...base, status: 'confirmed', effectiveAt: prorationDate };
      expect({ planId: to.id });
      return { ...base, status: 'confirmed', effectiveAt: prorationDate, message: `upgraded to ${to.name}; the prorated difference was invoiced and paid${invoice}` };
    }
    if (out.outcome === 'pending') {
      change = { ...base, status: 'pending', expiresAt: out.expiresAt };
      return {
        ...base,
        status: 'pending',
        effectiveAt: null,
        message: `the prorated payment${invoice} awaits the customer (${out.paymentStatus ?? 'payment incomplete'}); ${from.name} stays until it is paid, and the upgrade is discarded if unpaid by ${iso(out.expiresAt)}`,
      };
    }
    change = { ...base, status: 'failed', expiresAt: out.expiresAt };
    return {
      ...base,
      status: 'failed',
      effectiveAt: null,
      message: `the prorated payment was declined (${out.declineCode ?? 'no decline code'}); the subscription stays on ${from.name}`,
    };
  }

  async function downgrade(requestId: string, sub: LocalSubscription, from: Plan, to: Plan): Promise<ChangePlanResult> {
    const out = await stripeWrite.scheduleSubscriptionDowngrade({
      customerId,
      subscriptionId: sub.id,
      requestId,
      fromPriceId: from.stripePriceId,
      toPriceId: to.stripePriceId,
      toInterval: to.interval,
    });
    const effectiveAt = out.effectiveAt ?? sub.currentPeriodEnd;
    await ctx.inLoop(async () => {
      await db.setPendingPlanChange({ subscriptionId: sub.id, planId: to.id, effectiveAt });
      ctx.setSubscription(await db.loadLocalSubscription(customerId));
    });
    const base = { requestId, kind: 'downgrade' as const, fromPlanId: from.id, toPlanId: to.id, invoiceId: null };
    change = { ...base, status: 'scheduled', effectiveAt, scheduleId: out.scheduleId };
    return { ...base, status: 'scheduled', effectiveAt, message: `${to.name} starts at ${iso(effectiveAt)}, the end of the current period; nothing is refunded now` };
  }

  async function withdrawScheduled(sub: LocalSubscription, scheduled: ScheduledChange, requestId: string, step: string): Promise<void> {
    await stripeWrite.releaseSubscriptionSchedule({
      customerId,
      subscriptionId: sub.id,
      requestId,
      scheduleId: change?.status === 'scheduled' ? (change.scheduleId ?? null) : null,
      step,
    });
    await ctx.inLoop(async () => {
      if (scheduled.quantity !== undefined) await db.clearPendingQuantityChange({ subscriptionId: sub.id, quantity: scheduled.quantity });
      else await db.clearPendingPlanChange({ subscriptionId: sub.id, planId: scheduled.planId });
      ctx.setSubscription(await db.loadLocalSubscription(customerId));
    });
    if (change?.status === 'scheduled') settle('canceled', `the scheduled change to ${describeTarget(scheduled)} was canceled (request ${requestId})`);
  }

  // ---- cancelPendingPlanChange ------------------------------------------------------------------

  setHandler(
    cancelPendingPlanChangeUpdate,
    async (req) => {
      const key = `cancelPendingPlanChange:${req.requestId}`;
      const prior = await priorResult<ChangePlanResult | null>(key);
      if (prior.found) return prior.result;
      await whenReady();
      requireNotBusy();
      const sub = effective();
      const scheduled = scheduledChange(sub);
      if (!sub || !scheduled) return null;
      return exclusively(key, async (): Promise<ChangePlanResult> => {
        await withdrawScheduled(sub, scheduled, req.requestId, 'release');
        return {
          requestId: req.requestId,
          kind: 'downgrade',
          fromPlanId: sub.planId,
          toPlanId: scheduled.planId,
          status: 'canceled',
          effectiveAt: null,
          invoiceId: null,
          message:
            scheduled.quantity !== undefined
              ? `the scheduled change to ${describeTarget(scheduled)} was canceled; the subscription keeps ${describeTarget({ quantity: sub.quantity ?? 1 })}`
              : `the scheduled change to ${scheduled.planId} was canceled; the subscription stays on ${sub.planId ?? 'its current plan'}`,
        };
      });
    },
    {
      validator: (req) => {
        requireRequestId(req);
        const key = `cancelPendingPlanChange:${req.requestId}`;
        if (lookup(key) || busy === key || !ready) return;
        requireNotBusy();
      },
    },
  );

  // ---- cancelSubscription / resumeSubscription --------------------------------------------------

  setHandler(
    cancelSubscriptionUpdate,
    async (req) => {
      const key = `cancelSubscription:${req.requestId}`;
      const prior = await priorResult<SubscriptionActionResult>(key);
      if (prior.found) return prior.result;
      await whenReady();
      requireNotBusy();
      const sub = requireLive(effective());
      return exclusively(key, async (): Promise<SubscriptionActionResult> => {
        const scheduled = scheduledChange(sub);
        // Stripe refuses cancel_at_period_end on a schedule-managed subscription; the downgrade is moot anyway.
        if (scheduled) await withdrawScheduled(sub, scheduled, req.requestId, 'cancel-release');
        const out = await stripeWrite.cancelStripeSubscription({ customerId, subscriptionId: sub.id, requestId: req.requestId, atPeriodEnd: req.atPeriodEnd });
        expect({ cancelAtPeriodEnd: out.cancelAtPeriodEnd, canceled: out.status === 'canceled' });
        const withdrawn = scheduled ? `; the scheduled change to ${describeTarget(scheduled)} was withdrawn` : '';
        return {
          requestId: req.requestId,
          status: out.status ?? sub.status,
          cancelAtPeriodEnd: out.cancelAtPeriodEnd,
          message: (req.atPeriodEnd ? `cancels at ${iso(sub.currentPeriodEnd)}; resume undoes it until then` : 'canceled now') + withdrawn,
        };
      });
    },
    {
      validator: (req: CancelSubscriptionRequest) => {
        requireRequestId(req);
        if (typeof req.atPeriodEnd !== 'boolean') reject('InvalidRequest', 'atPeriodEnd must be a boolean');
        const key = `cancelSubscription:${req.requestId}`;
        if (lookup(key) || busy === key || !ready) return;
        requireNotBusy();
        requireLive(effective());
      },
    },
  );

  function checkResume(): LocalSubscription {
    requireNotBusy();
    const sub = requireLive(effective());
    if (!sub.cancelAtPeriodEnd) reject('NotCanceling', `subscription ${sub.id} is not set to cancel at period end`);
    return sub;
  }

  setHandler(
    resumeSubscriptionUpdate,
    async (req) => {
      const key = `resumeSubscription:${req.requestId}`;
      const prior = await priorResult<SubscriptionActionResult>(key);
      if (prior.found) return prior.result;
      await whenReady();
      const sub = checkResume();
      return exclusively(key, async (): Promise<SubscriptionActionResult> => {
        const out = await stripeWrite.resumeStripeSubscription({ customerId, subscriptionId: sub.id, requestId: req.requestId });
        expect({ cancelAtPeriodEnd: out.cancelAtPeriodEnd });
        return {
          requestId: req.requestId,
          status: out.status ?? sub.status,
          cancelAtPeriodEnd: out.cancelAtPeriodEnd,
          message: out.cancelAtPeriodEnd ? 'Stripe still shows a cancel at period end' : 'the subscription renews again',
        };
      });
    },
    {
      validator: (req) => {
        requireRequestId(req);
        const key = `resumeSubscription:${req.requestId}`;
        if (lookup(key) || busy === key || !ready) return;
        checkResume();
      },
    },
  );

  installSeatHandlers({
    customerId,
    ctx,
    now,
    iso,
    reject,
    requireRequestId,
    requireNotBusy,
    requireNoOpenChange,
    whenReady,
    isReady: () => ready,
    effective,
    lookup,
    isBusy: (key) => busy === key,
    priorResult,
    exclusively,
    expect: (quantity) => expect({ quantity }),
    change: () => change,
    setChange: (view) => {
      change = view;
    },
  });

  setHandler(refreshPlanCatalogUpdate, async () => {
    catalog = await db.loadPlanCatalog();
    return { plans: catalog.length };
  });

  function matchesExpected(sub: LocalSubscription, e: ExpectedState): boolean {
    return (
      (e.planId === undefined || sub.planId === e.planId) &&
      (e.quantity === undefined || (sub.quantity ?? 1) === e.quantity) &&
      (e.cancelAtPeriodEnd === undefined || sub.cancelAtPeriodEnd === e.cancelAtPeriodEnd) &&
      (!e.canceled || sub.status === 'canceled')
    );
  }

  return {
    view: () => change,
    carry: () => ({ inFlight: change, completed: completed.slice(-COMPLETED_REQUESTS_LIMIT), expected }),
    async init(catalogPatched, local) {
      // Histories recorded before the plan catalog existed scheduled nothing here; those runs load it on first use.
      if (catalogPatched ?? patched(PLAN_CHANGE_CATALOG_PATCH)) catalog = await (local ? dbLocal : db).loadPlanCatalog();
      ready = true;
    },
    async onEventApplied(event) {
      if (event.data.kind !== 'subscription') return;
      const sub = ctx.getSubscription();
      if (expected && (expected.until < now() || (sub && matchesExpected(sub, expected)))) expected = null;
      if (!change || !sub) return;
      // A pending upgrade paid later, or a scheduled downgrade reaching renewal: Stripe shows the new price
      // (a seat change: the new quantity).
      const reached = change.toQuantity !== undefined ? (sub.quantity ?? 1) === change.toQuantity : sub.planId === change.toPlanId;
      if ((change.status === 'pending' || change.status === 'scheduled' || change.status === 'failed') && reached) {
        settle('confirmed', `${describeTarget(change)} is active (confirmed by Stripe)`);
      } else if (change.status === 'scheduled' && (sub.status === 'canceled' || sub.status === 'incomplete_expired')) {
        settle('canceled', `the subscription ended before the change to ${describeTarget(change)}`);
      }
    },
  };
}
