/**
 * dunningWorkflow `dunning:<invoiceId>`: recovers one failed invoice with durable timers.
 *
 * Why a child workflow per invoice rather than a state inside customerWorkflow:
 * - The customer entity continues-as-new often (every few thousand events); a cycle lives for days
 *   with its own timers, attempts and notice decisions, which would otherwise have to be carried
 *   and re-armed across every continue-as-new. As a child started with ParentClosePolicy.ABANDON it
 *   survives the parent's continue-as-new (the default TERMINATE would kill it).
 * - "One cycle per invoice" comes from the workflow id: `dunning:<invoiceId>` with
 *   REJECT_DUPLICATE cannot start twice; a redelivered or second failure event joins by signal.
 * - Each cycle is its own row in the Temporal UI (DunningState, current details, a query, cancel
 *   or reset) with a small history, and a slow Stripe call never blocks the customer's event loop.
 *
 * Signal handlers only validate and enqueue; the main loop decides. The schedule is kept as absolute
 * times (first failure + policy days), so a worker restart or continue-as-new resumes it unchanged.
 */
import {
  ActivityFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { AttemptTrigger, RetryPaymentResult } from '../activities/dunning';
import {
  customerActionDeadline,
  isTerminalDunningState,
  spacedRetryAt,
  type DunningCycleState,
  type DunningOutcome,
} from '../domain/dunning-cycle';
import {
  DEFAULT_DUNNING_POLICY,
  classifyDecline,
  formatDunningDetails,
  nextDunningStep,
  validateDunningPolicy,
  type DeclineClass,
  type DunningPolicy,
  type NoticeKind,
} from '../domain/dunning-policy';
import { customerWorkflowId, dunningWorkflowId } from '../domain/ids';
import { type DunningEvent, type DunningReport, type DunningView, type DunningWorkflowInput, type DunningWorkflowResult, type SubscriptionSnapshot } from '../domain/messages';
import { dunningEventSignal, dunningProgressSignal, dunningReportSignal, dunningStateQuery, reconcileSignal } from './contracts';
import { BillingWorkflowKindKey, DunningStateKey, StripeCustomerIdKey } from './contracts';
import { postgresActivities } from './postgres-activities';
import { stripeBackgroundWriteActivities, stripeReadActivities } from './stripe-activities';

/** Postgres: retried until it is back; a database outage must not end a cycle. */
const db = postgresActivities;

/** Stripe writes with business idempotency keys: the retry window stays under Stripe's 24 h key retention. */
const stripeWrite = stripeBackgroundWriteActivities;
const stripeRead = stripeReadActivities;

/** A notice that cannot be recorded within the hour is dropped (logged), never allowed to stall the cycle. */
const notices = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '1 hour',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** Reaches the customer workflow when a plain signal cannot (it is not running): retried for a day. */
const parentSignal = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '1 day',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '5 minutes' },
});

const EVENT_KINDS: ReadonlySet<string> = new Set(['payment_failed', 'paid', 'payment_method_updated', 'subscription_ended', 'invoice_closed']);

/**
 * patched() id: the cycle writes no billing rows itself. It reports every step to its customer workflow
 * (the single writer), which records it; the cycle row was opened by the apply that decided it.
 */
export const DUNNING_REPORTS_PATCH = 'dunning-reports-to-parent';

/**
 * patched() id: decline data from the source (the invoice's payments → PaymentIntent last_payment_error,
 * with Stripe's advice code), retries that pay with the customer's new payment method, and a final
 * action that re-reads the invoice first (mark_uncollectible replaces the retired mark_unpaid).
 */
export const DUNNING_DECLINE_SOURCE_PATCH = 'dunning-decline-from-source';

/**
 * patched() id: the notice before the last scheduled retry says so ('final_attempt_ahead': "we will
 * try one last time on …") instead of a plain 'payment_failed'. Checked only at that notice.
 */
export const DUNNING_FINAL_ATTEMPT_NOTICE_PATCH = 'dunning-final-attempt-notice';
const SEEN_EVENT_IDS_LIMIT = 200;

/** Cycle state carried over continue-as-new (plain JSON: arrays, no Sets). */
interface DunningCarry {
  policy: DunningPolicy;
  state: DunningCycleState;
  declineClass: DeclineClass;
  lastDeclineCode: string | null;
  attemptsMade: number;
  lastAttemptAtMs: number | null;
  nextAttemptAtMs: number | null;
  /** While waiting on the customer: when the cycle gives up. */
  waitUntilMs: number | null;
  /** A new payment method arrived: retry before anything else. */
  retryNow: boolean;
  /** The decline class changed or an attempt failed: decide the next step. */
  replan: boolean;
  pending: DunningEvent[];
  seenEventIds: string[];
  /** Stripe's advice on the last decline (decline-from-source runs; absent in older carried states). */
  lastAdviceCode?: string | null;
  lastNetworkDeclineCode?: string | null;
  paymentIntentId?: string | null;
  /** A failure arrived without decline data (today's invoice payloads): read it from Stripe before deciding. */
  refreshDecline?: boolean;
  /** The payment method the customer just added: the next attempt pays with it. */
  newPaymentMethodId?: string | null;
}

/** One dunning cycle for one failed invoice. */
export async function dunningWorkflow(input: DunningWorkflowInput): Promise<DunningWorkflowResult> {
  const { invoiceId, customerId, subscriptionId } = input;
  const failedAtMs = input.firstFailure.at * 1000;
  const carried = input.carried as DunningCarry | undefined;
  const s: DunningCarry = carried
    ? { ...carried, pending: [...carried.pending], seenEventIds: [...carried.seenEventIds] }
    : {
        policy: DEFAULT_DUNNING_POLICY,
        state: 'retrying',
        declineClass: classifyDecline(input.firstFailure.declineCode),
        lastDeclineCode: input.firstFailure.declineCode,
        attemptsMade: 0,
        lastAttemptAtMs: null,
        nextAttemptAtMs: null,
        waitUntilMs: null,
        retryNow: false,
        replan: true,
        pending: [],
        seenEventIds: [input.firstFailure.eventId],
      };
  let reported = '';
  let publishedState = '';
  // Asked before the first command, so a replay of an older history takes the same branch.
  const reportsToParent = patched(DUNNING_REPORTS_PATCH);
  const declineFromSource = reportsToParent ? patched(DUNNING_DECLINE_SOURCE_PATCH) : false;
  /** The attempt made since the last report (reports-to-parent runs). */
  let unreportedAttempt: DunningReport['attempt'] = null;

  setHandler(dunningEventSignal, (event) => {
    if (!event || typeof event.eventId !== 'string' || !EVENT_KINDS.has(event.kind)) {
      log.warn('dropping malformed dunning event', { invoiceId, kind: event?.kind });
      return;
    }
    if (s.seenEventIds.includes(event.eventId) || s.pending.some((p) => p.eventId === event.eventId)) return;
    s.pending.push(event);
  });
  setHandler(dunningStateQuery, () => view());

  if (!carried && reportsToParent) {
    s.policy = await loadPolicy();
    if (declineFromSource) await readDeclineFromSource();
    await report(null);
    // Stripe has moved the subscription to past_due; mirror it even if that webhook never comes.
    await syncSubscription(undefined);
  } else if (!carried) {
    s.policy = await loadPolicy();
    await db.openDunningCycle({
      invoiceId,
      customerId,
      subscriptionId,
      workflowId: dunningWorkflowId(invoiceId),
      maxAttempts: s.policy.retryDaysAfterFailure.length,
      declineCode: s.lastDeclineCode,
      declineClass: s.declineClass,
      atMs: Date.now(),
    });
    // Stripe has moved the subscription to past_due; mirror it even if that webhook never comes.
    await syncSubscription(undefined);
  } else {
    await publish();
  }

  for (;;) {
    const ended = drainEvents();
    if (ended) return finish(ended);

    if (s.refreshDecline) {
      s.refreshDecline = false;
      const before = [s.declineClass, s.lastDeclineCode, s.lastAdviceCode ?? null].join('|');
      await readDeclineFromSource();
      if ([s.declineClass, s.lastDeclineCode, s.lastAdviceCode ?? null].join('|') !== before) s.replan = true;
      continue;
    }

    if (s.replan) {
      s.replan = false;
      if ((await plan()) === 'exhausted') return finish('exhausted');
      continue;
    }

    const now = Date.now();
    if (s.retryNow || (s.state === 'retrying' && s.nextAttemptAtMs !== null && now >= s.nextAttemptAtMs)) {
      const outcome = await attempt(s.retryNow ? 'payment_method' : 'schedule');
      if (outcome) return finish(outcome, { byRetry: outcome === 'recovered' });
      continue;
    }
    if (s.state !== 'retrying' && s.waitUntilMs !== null && now >= s.waitUntilMs) return finish('exhausted');

    if (shouldContinueAsNew()) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof dunningWorkflow>({ ...input, carried: s });
    }
    const wakeAtMs = s.state === 'retrying' ? s.nextAttemptAtMs : s.waitUntilMs;
    if (wakeAtMs === null) await condition(() => s.pending.length > 0);
    else await condition(() => s.pending.length > 0, Math.max(1, wakeAtMs - Date.now()));
  }

  /** Applies queued events in arrival order; returns the outcome when one ends the cycle. */
  function drainEvents(): DunningOutcome | null {
    for (let event = s.pending.shift(); event; event = s.pending.shift()) {
      s.seenEventIds.push(event.eventId);
      if (s.seenEventIds.length > SEEN_EVENT_IDS_LIMIT) s.seenEventIds.splice(0, s.seenEventIds.length - SEEN_EVENT_IDS_LIMIT);
      switch (event.kind) {
        case 'paid':
          return 'recovered';
        case 'subscription_ended':
        case 'invoice_closed':
          return 'canceled';
        case 'payment_method_updated':
          s.retryNow = true;
          if (declineFromSource) s.newPaymentMethodId = event.paymentMethodId;
          break;
        case 'payment_failed':
          // Today's invoice.payment_failed carries no decline: the source (the invoice's payment) does.
          if (declineFromSource && event.declineCode === null) s.refreshDecline = true;
          // A failure without a code (e.g. Stripe's webhook echoing our own failed retry) says nothing new.
          if (event.declineCode !== null) {
            // New decline data is recorded (a report follows the replan); the notice dedup key keeps it quiet.
            if (declineFromSource && (event.declineCode !== s.lastDeclineCode || (event.adviceCode ?? null) !== (s.lastAdviceCode ?? null))) s.replan = true;
            s.lastDeclineCode = event.declineCode;
            if (declineFromSource) s.lastAdviceCode = event.adviceCode ?? null;
            const declineClass = declineFromSource ? classifyDecline(event.declineCode, event.adviceCode) : classifyDecline(event.declineCode);
            if (declineClass !== s.declineClass) {
              s.declineClass = declineClass;
              s.replan = true;
            }
          }
          break;
      }
    }
    return null;
  }

  /** Decides the next step from the decline class and the schedule, and tells the customer (within the caps). */
  async function plan(): Promise<'exhausted' | null> {
    const step = nextDunningStep({ declineClass: s.declineClass, attemptsMade: s.attemptsMade, policy: s.policy, failedAtMs });
    let notice: NoticeKind;
    switch (step.action) {
      case 'exhausted':
        return 'exhausted';
      case 'retry_at':
        s.state = 'retrying';
        s.nextAttemptAtMs = spacedRetryAt({ scheduledAtMs: step.atMs, lastAttemptAtMs: s.lastAttemptAtMs, policy: s.policy });
        s.waitUntilMs = null;
        notice =
          step.attempt === s.policy.retryDaysAfterFailure.length && patched(DUNNING_FINAL_ATTEMPT_NOTICE_PATCH)
            ? 'final_attempt_ahead'
            : 'payment_failed';
        break;
      case 'await_payment_method':
      case 'await_authentication':
        // No blind retries: the same card will not work until the customer acts.
        s.state = step.action === 'await_payment_method' ? 'awaiting_payment_method' : 'awaiting_authentication';
        s.nextAttemptAtMs = null;
        s.waitUntilMs = customerActionDeadline({ failedAtMs, nowMs: Date.now(), policy: s.policy });
        notice = step.notice;
        break;
    }
    await record(null);
    await publish();
    await notify(notice);
    return null;
  }

  /** One off-session retry; returns the outcome when it ends the cycle. */
  async function attempt(trigger: AttemptTrigger): Promise<DunningOutcome | null> {
    const attemptNo = s.attemptsMade + 1;
    const atMs = Date.now();
    s.retryNow = false;
    let result: RetryPaymentResult;
    try {
      const paymentMethodId = declineFromSource && trigger === 'payment_method' ? (s.newPaymentMethodId ?? null) : null;
      result = await stripeWrite.retryInvoicePayment(
        paymentMethodId ? { invoiceId, attempt: attemptNo, paymentMethodId, subscriptionId } : { invoiceId, attempt: attemptNo },
      );
      if (declineFromSource) s.newPaymentMethodId = null;
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      // Stripe unreachable for the whole retry window, or a request Stripe rejects: count it and go on.
      log.warn('retry attempt could not reach a decision', { invoiceId, attempt: attemptNo, error: err.message });
      result = { outcome: 'error', declineCode: null };
    }
    s.attemptsMade = attemptNo;
    s.lastAttemptAtMs = atMs;
    if (reportsToParent) unreportedAttempt = { attempt: attemptNo, trigger, outcome: result.outcome, declineCode: result.declineCode, adviceCode: result.adviceCode ?? null, atMs };
    else await db.recordDunningAttempt({ invoiceId, attempt: attemptNo, trigger, outcome: result.outcome, declineCode: result.declineCode, atMs });
    switch (result.outcome) {
      case 'succeeded':
        return 'recovered';
      case 'invoice_closed':
        return 'canceled';
      case 'requires_action':
        s.declineClass = 'authentication_required';
        s.lastDeclineCode = result.declineCode;
        break;
      case 'failed':
        s.declineClass = declineFromSource ? classifyDecline(result.declineCode, result.adviceCode) : classifyDecline(result.declineCode);
        if (declineFromSource) s.lastAdviceCode = result.adviceCode ?? null;
        s.lastDeclineCode = result.declineCode ?? s.lastDeclineCode;
        break;
      case 'error':
        break;
    }
    s.replan = true;
    return null;
  }

  /** Ends the cycle: final action or notice clean-up, the closing record, and the subscription mirrored. */
  async function finish(outcome: DunningOutcome, how: { byRetry: boolean } = { byRetry: false }): Promise<DunningWorkflowResult> {
    s.state = outcome;
    s.nextAttemptAtMs = null;
    s.waitUntilMs = null;
    let finalSnapshot: SubscriptionSnapshot | null | undefined;
    if (outcome === 'exhausted' && declineFromSource) {
      // The invoice may have been paid, voided or written off since: then there is nothing to act on.
      const settled = await invoiceSettledMeanwhile();
      if (settled) return finish(settled);
    }
    if (outcome === 'exhausted') {
      finalSnapshot = await applyFinalAction();
      await notify('final_notice');
    } else {
      // Paid or ended: whatever still waits in the outbox is obsolete.
      const { sent } = await db.cancelQueuedNotices({ invoiceId });
      // Only a customer who was actually told about the problem hears that it is solved.
      if (how.byRetry && sent > 0) await notify('recovered');
    }
    await record(outcome === 'exhausted' ? s.policy.finalAction : null);
    if (outcome !== 'canceled') await syncSubscription(finalSnapshot);
    await publish();
    log.info('dunning cycle ended', { invoiceId, customerId, outcome, attempts: s.attemptsMade });
    return { invoiceId, outcome, attempts: s.attemptsMade };
  }

  /** Reads the invoice's decline data from Stripe (its payments); keeps what the event said when Stripe has none. */
  async function readDeclineFromSource(): Promise<void> {
    let decline: Awaited<ReturnType<Activities['fetchInvoiceDecline']>> = null;
    try {
      decline = await stripeRead.fetchInvoiceDecline({ invoiceId });
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.warn('could not read the decline from Stripe; classifying by the event', { invoiceId, error: err.message });
    }
    if (!decline) return;
    s.lastDeclineCode = decline.declineCode ?? decline.failureCode ?? s.lastDeclineCode;
    s.lastAdviceCode = decline.adviceCode;
    s.lastNetworkDeclineCode = decline.networkDeclineCode;
    s.paymentIntentId = decline.paymentIntentId;
    s.declineClass = classifyDecline(s.lastDeclineCode, s.lastAdviceCode);
  }

  /** Before the final action: the invoice's state at Stripe now, as an outcome when it no longer needs one. */
  async function invoiceSettledMeanwhile(): Promise<DunningOutcome | null> {
    try {
      const invoice = await stripeRead.fetchInvoiceStatus({ invoiceId });
      if (invoice?.status === 'paid') return 'recovered';
      if (invoice === null || invoice.status === 'void' || invoice.status === 'uncollectible') return 'canceled';
      return null;
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.warn('could not re-read the invoice before the final action; applying it', { invoiceId, error: err.message });
      return null;
    }
  }

  async function applyFinalAction(): Promise<SubscriptionSnapshot | null | undefined> {
    if (!subscriptionId) return undefined;
    try {
      const { snapshot } = await stripeWrite.applyDunningFinalAction({ invoiceId, subscriptionId, finalAction: s.policy.finalAction });
      return snapshot;
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      // The cycle still ends; reconciliation and ops (the recorded final_action) catch up.
      log.error('final action failed', { invoiceId, subscriptionId, finalAction: s.policy.finalAction, error: err.message });
      return undefined;
    }
  }

  /**
   * Mirrors the subscription as Stripe has it through the customer workflow (the single writer);
   * writes it directly only when that workflow is not running. `undefined` means: read it first.
   */
  async function syncSubscription(snapshot: SubscriptionSnapshot | null | undefined): Promise<void> {
    if (!subscriptionId) return;
    let current = snapshot;
    if (current === undefined) {
      try {
        current = await stripeRead.fetchSubscription({ subscriptionId, customerId });
      } catch (err) {
        if (!(err instanceof ActivityFailure)) throw err;
        log.warn('could not read the subscription from Stripe; webhooks will converge it', { subscriptionId });
        return;
      }
    }
    if (!current) return;
    const request = { runId: dunningWorkflowId(invoiceId), subscriptionId, subscription: current };
    try {
      await getExternalWorkflowHandle(customerWorkflowId(customerId)).signal(reconcileSignal, request);
    } catch {
      if (reportsToParent) await toParentByActivity({ customerId, reconcile: request });
      else await db.applySubscriptionSnapshot({ snapshot: current, eventId: null, eventType: null, eventCreated: null });
    }
  }

  async function loadPolicy(): Promise<DunningPolicy> {
    let base: DunningPolicy;
    try {
      base = await db.getDunningPolicy();
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.error('invalid dunning configuration; using the default policy', { invoiceId, error: err.message });
      base = DEFAULT_DUNNING_POLICY;
    }
    if (!input.policyOverride) return base;
    const overrides = Object.fromEntries(Object.entries(input.policyOverride).filter(([, v]) => v !== undefined));
    const merged = validateDunningPolicy({ ...base, ...overrides });
    if (merged.ok) return merged.policy;
    log.error('invalid policyOverride ignored', { invoiceId, error: merged.error });
    return base;
  }

  async function notify(kind: NoticeKind): Promise<void> {
    const link = kind === 'authenticate_payment' || kind === 'update_payment_method' ? await paymentLink() : null;
    try {
      await notices.sendDunningNotice({
        customerId,
        invoiceId,
        kind,
        attempt: s.attemptsMade,
        atMs: Date.now(),
        policy: s.policy,
        payload: {
          maxAttempts: s.policy.retryDaysAfterFailure.length,
          declineCode: s.lastDeclineCode,
          nextAttemptAt: s.nextAttemptAtMs === null ? null : new Date(s.nextAttemptAtMs).toISOString(),
          hostedInvoiceUrl: link,
        },
      });
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.warn('notice not recorded', { invoiceId, kind, error: err.message });
    }
  }

  async function paymentLink(): Promise<string | null> {
    try {
      return await stripeRead.invoicePaymentLink({ invoiceId });
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      return null;
    }
  }

  /**
   * Tells the customer workflow what the cycle did, for it to record: a workflow-to-workflow signal,
   * or signal-with-start through an activity when the customer workflow is not running.
   */
  async function report(finalAction: DunningPolicy['finalAction'] | null): Promise<void> {
    const r: DunningReport = {
      invoiceId,
      subscriptionId,
      firstDeclineCode: input.firstFailure.declineCode,
      startedAtMs: failedAtMs,
      state: s.state,
      attemptsMade: s.attemptsMade,
      maxAttempts: s.policy.retryDaysAfterFailure.length,
      nextAttemptAtMs: s.nextAttemptAtMs,
      lastDeclineCode: s.lastDeclineCode,
      lastAdviceCode: s.lastAdviceCode ?? null,
      lastNetworkDeclineCode: s.lastNetworkDeclineCode ?? null,
      paymentIntentId: s.paymentIntentId ?? null,
      declineClass: s.declineClass,
      finalAction,
      endedAtMs: isTerminalDunningState(s.state) ? Date.now() : null,
      attempt: unreportedAttempt,
    };
    unreportedAttempt = null;
    try {
      await getExternalWorkflowHandle(customerWorkflowId(customerId)).signal(dunningReportSignal, r);
    } catch {
      await toParentByActivity({ customerId, report: r });
    }
  }

  async function toParentByActivity(payload: Parameters<Activities['signalCustomerWorkflow']>[0]): Promise<void> {
    try {
      await parentSignal.signalCustomerWorkflow(payload);
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.error('could not reach the customer workflow; reconciliation will converge the records', { invoiceId, customerId, error: err.message });
    }
  }

  async function record(finalAction: DunningPolicy['finalAction'] | null): Promise<void> {
    if (reportsToParent) return report(finalAction);
    await db.recordDunningProgress({
      invoiceId,
      customerId,
      state: s.state,
      attemptsMade: s.attemptsMade,
      nextAttemptAtMs: s.nextAttemptAtMs,
      lastDeclineCode: s.lastDeclineCode,
      declineClass: s.declineClass,
      finalAction,
      endedAtMs: isTerminalDunningState(s.state) ? Date.now() : null,
    });
  }

  function view(): DunningView {
    return {
      invoiceId,
      state: s.state,
      attempt: s.attemptsMade,
      maxAttempts: s.policy.retryDaysAfterFailure.length,
      nextAttemptAt: s.nextAttemptAtMs === null ? null : Math.floor(s.nextAttemptAtMs / 1000),
      lastDeclineCode: s.lastDeclineCode,
    };
  }

  /** Search attributes, current details, and the parent's copy of the view (best effort). */
  async function publish(): Promise<void> {
    const v = view();
    if (v.state !== publishedState) {
      upsertSearchAttributes([
        { key: DunningStateKey, value: v.state },
        { key: StripeCustomerIdKey, value: customerId },
        { key: BillingWorkflowKindKey, value: 'dunning' },
      ]);
      publishedState = v.state;
    }
    setCurrentDetails(details(v));
    // Reports carry the view to the customer workflow (record() runs before every publish()).
    if (reportsToParent) return;
    const key = JSON.stringify(v);
    if (key === reported) return;
    reported = key;
    try {
      await getExternalWorkflowHandle(customerWorkflowId(customerId)).signal(dunningProgressSignal, v);
    } catch (err) {
      log.info('customer workflow not reachable for dunning progress', { invoiceId, customerId, error: String(err) });
    }
  }

  function details(v: DunningView): string {
    const head = formatDunningDetails({ attempt: v.attempt, total: v.maxAttempts, nextAtMs: s.nextAttemptAtMs });
    const until = s.waitUntilMs === null ? '' : ` until ${new Date(s.waitUntilMs).toISOString().slice(0, 10)}`;
    switch (s.state) {
      case 'retrying':
        return head;
      case 'awaiting_payment_method':
        return `${head}; waiting for a new payment method${until}`;
      case 'awaiting_authentication':
        return `${head}; waiting for the customer to authenticate${until}`;
      default:
        return `${head}; ended: ${s.state}`;
    }
  }

  function shouldContinueAsNew(): boolean {
    const info = workflowInfo();
    if (input.continueAsNewAtHistoryLength !== undefined && info.historyLength >= input.continueAsNewAtHistoryLength) return true;
    return info.continueAsNewSuggested;
  }
}
