/**
 * customerWorkflow `customer:<cus_id>`: the only writer of one customer's billing state.
 * Signal handlers only validate and enqueue; the main loop applies events one at a time.
 */
import {
  ApplicationFailure,
  ActivityFailure,
  ChildWorkflowFailure,
  ParentClosePolicy,
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  patched,
  proxyActivities,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  setCurrentDetails,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { BillingEvent } from '../domain/billing-event';
import { dunningWorkflowId } from '../domain/ids';
import type { Effect, StartDunningEffect } from '../domain/billing/effects';
import { type CustomerWorkflowState, type DunningEvent, type DunningReport, type DunningView, type ReconcileRequest } from '../domain/messages';
import { dunningEventSignal, dunningProgressSignal, dunningReportSignal, reconcileSignal, stateQuery, stripeEventSignal, stripeEventsSignal } from './contracts';
import { DunningStateKey, PlanIdKey, SubscriptionStatusKey } from './contracts';
import type { ApplyEventResult } from '../activities/billing-db';
import type { LocalSubscription } from '../domain/billing/state';
import { PLAN_CHANGE_CATALOG_PATCH, installPlanChangeHandlers, type PlanChangeCarry } from './plan-change';
import { localPostgresActivities, postgresActivities } from './postgres-activities';
import { stripeInteractiveWriteActivities, stripeReadActivities } from './stripe-activities';
import type { Activities } from '../activities';
import { DEFAULT_DUNNING_POLICY } from '../domain/dunning-policy';

/**
 * Runs after LOCAL_APPLY_PATCH call the Postgres activities as local activities (in the workflow task,
 * no activity task round trip through the server) and apply events queued together in one batch; runs
 * started before it keep the regular activities.
 */
const db = postgresActivities;
const dbLocal = localPostgresActivities;

/** patched() id of the batched local-activity apply path (workflows/customer.ts). */
export const LOCAL_APPLY_PATCH = 'customer-local-batch-apply';

/**
 * patched() id of effects as data (runs after LOCAL_APPLY_PATCH only): the apply returns each event's
 * effects — recorded with its state, replayed on a re-run — and this loop runs them idempotently;
 * update handlers and dunning cycles hand their writes to this loop; quarantined events are not remembered.
 */
export const EFFECTS_PATCH = 'customer-effects-as-data';

/** At most this many queued events are applied in one transaction. */
export const APPLY_BATCH_MAX = 100;

const stripeRead = stripeReadActivities;
/** Stripe writes an effect makes: awaited in the loop, so minutes (not a day) before giving up loudly. */
const stripeWrite = stripeInteractiveWriteActivities;
/** The notification ledger: a notice that cannot be recorded within the hour is dropped (logged). */
const notices = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '1 hour',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** How many applied event ids the workflow remembers for dedup (Stripe retries for up to 3 days). */
export const RECENT_EVENT_IDS_LIMIT = 2000;

/** Input of customerWorkflow; everything but customerId is carried over continue-as-new. */
export interface CustomerWorkflowInput {
  customerId: string;
  recentEventIds?: string[];
  pending?: QueueItem[];
  counters?: { applied: number; duplicatesDropped: number; staleDropped: number; quarantined?: number };
  dunning?: DunningView[];
  planChange?: PlanChangeCarry;
  /** Tests: continue-as-new after this many applied items instead of waiting for the server's hint. */
  continueAsNewAfter?: number;
}

type QueueItem =
  | { kind: 'event'; event: BillingEvent }
  | { kind: 'reconcile'; request: ReconcileRequest }
  | { kind: 'dunning_report'; report: DunningReport };

/** A write handed to the main loop by an update handler (never carried: handlers finish before continue-as-new). */
interface Command {
  run(): Promise<unknown>;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

/** The per-customer entity workflow. */
export async function customerWorkflow(input: CustomerWorkflowInput): Promise<void> {
  const { customerId } = input;
  const recent: string[] = [...(input.recentEventIds ?? [])];
  const queue: QueueItem[] = [...(input.pending ?? [])];
  const counters = { applied: 0, duplicatesDropped: 0, staleDropped: 0, quarantined: 0, ...input.counters };
  const dunning = new Map<string, DunningView>((input.dunning ?? []).map((d) => [d.invoiceId, d]));
  let subscription: LocalSubscription | null = null;
  let lastEventId: string | null = null;
  let processedThisRun = 0;
  const published = { status: '', planId: '', dunning: '' };

  // Decided once per run, before its first command: histories from before the patch replay unchanged.
  const batched = patched(LOCAL_APPLY_PATCH);
  // Batched runs ask every patch before their first local activity. A patch asked right after one can
  // land in the next workflow task (seen when a continued-as-new run's first task completes with only
  // the local activity's marker), and replay, which resolves that activity from the earlier task,
  // would then not see the marker: nondeterminism. Found by test/workflows/replay.test.ts (v3 run2).
  const catalogPatched = batched ? patched(PLAN_CHANGE_CATALOG_PATCH) : undefined;
  const effectsPatched = batched ? patched(EFFECTS_PATCH) : false;
  const commands: Command[] = [];
  const store = batched ? dbLocal : db;
  /** Events taken off the queue whose apply has not finished (batched runs only). */
  let inFlight: string[] = [];

  const isKnown = (eventId: string) =>
    recent.includes(eventId) ||
    (batched && inFlight.includes(eventId)) ||
    queue.some((q) => q.kind === 'event' && q.event.eventId === eventId);

  /** Validates and enqueues one event (signal handlers never throw: that would fail the workflow). */
  function enqueueEvent(event: BillingEvent | null | undefined): void {
    if (!event || typeof event.eventId !== 'string' || event.customerId !== customerId) {
      log.warn('dropping malformed or misrouted event', { eventId: event?.eventId, customerId });
      return;
    }
    if (isKnown(event.eventId)) {
      counters.duplicatesDropped++;
      return;
    }
    queue.push({ kind: 'event', event });
  }

  setHandler(stripeEventSignal, enqueueEvent);
  // Registering a handler adds no command: histories recorded before it replay unchanged.
  setHandler(stripeEventsSignal, (events) => {
    if (!Array.isArray(events)) {
      log.warn('dropping a malformed event batch', { customerId });
      return;
    }
    for (const event of events) enqueueEvent(event);
  });

  setHandler(reconcileSignal, (request) => {
    if (!request || typeof request.subscriptionId !== 'string') return;
    queue.push({ kind: 'reconcile', request });
  });

  setHandler(dunningProgressSignal, (view) => {
    if (!view || typeof view.invoiceId !== 'string') return;
    dunning.set(view.invoiceId, view);
    publish();
  });

  setHandler(dunningReportSignal, (report) => {
    if (!report || typeof report.invoiceId !== 'string' || typeof report.state !== 'string') return;
    dunning.set(report.invoiceId, viewOfReport(report));
    queue.push({ kind: 'dunning_report', report });
    publish();
  });

  /**
   * Runs `work` in the main loop, between applies (effects-as-data runs): the loop is the only place
   * that writes the customer's rows. Older runs run it in place, as they always did.
   */
  function inLoop<T>(work: () => Promise<T>): Promise<T> {
    if (!effectsPatched) return work();
    return new Promise<T>((resolve, reject) => {
      commands.push({ run: work, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  const planChange = installPlanChangeHandlers({
    customerId,
    inLoop,
    carried: input.planChange,
    getSubscription: () => subscription,
    setSubscription: (s) => {
      subscription = s;
      publish();
    },
  });

  setHandler(stateQuery, (): CustomerWorkflowState => ({
    customerId,
    subscription: subscription && {
      id: subscription.id,
      status: subscription.status,
      planId: subscription.planId,
      priceId: subscription.priceId,
      currentPeriodEnd: subscription.currentPeriodEnd,
      cancelAtPeriodEnd: subscription.cancelAtPeriodEnd,
      pendingPlanId: subscription.pendingPlanId,
      quantity: subscription.quantity ?? 1,
    },
    dunning: [...dunning.values()],
    planChange: planChange.view(),
    queued: queue.length,
    quarantined: counters.quarantined,
    applied: counters.applied,
    duplicatesDropped: counters.duplicatesDropped,
    staleDropped: counters.staleDropped,
    lastEventId,
    recentEventIds: recent.length,
  }));

  function dunningSummary(): string {
    const open = [...dunning.values()].filter((d) => !['recovered', 'exhausted', 'canceled'].includes(d.state));
    if (open.length === 0) return 'none';
    return open[open.length - 1]!.state;
  }

  function publish(): void {
    const status = subscription?.status ?? 'none';
    const planId = subscription?.planId ?? 'none';
    const dunningState = dunningSummary();
    if (status !== published.status || planId !== published.planId || dunningState !== published.dunning) {
      upsertSearchAttributes([
        { key: SubscriptionStatusKey, value: status },
        { key: PlanIdKey, value: planId },
        { key: DunningStateKey, value: dunningState },
      ]);
      published.status = status;
      published.planId = planId;
      published.dunning = dunningState;
    }
    const plan = subscription ? `${subscription.status} on ${subscription.planId ?? subscription.priceId ?? 'unknown plan'}` : 'no subscription';
    const dun = dunningState === 'none' ? '' : `; dunning: ${dunningState}`;
    setCurrentDetails(`waiting for Stripe events (${plan}${dun}); applied ${counters.applied}, duplicates dropped ${counters.duplicatesDropped}`);
  }

  function remember(eventId: string): void {
    recent.push(eventId);
    if (recent.length > RECENT_EVENT_IDS_LIMIT) recent.splice(0, recent.length - RECENT_EVENT_IDS_LIMIT);
  }

  /** Applies one event; `first` is the result of an apply already made (a batch that stopped at a tie). */
  async function applyEvent(event: BillingEvent, first?: ApplyEventResult): Promise<void> {
    let result = first ?? (await store.applyBillingEvent(event, {}));
    if (result.outcome === 'tie' && event.data.kind === 'subscription') {
      // Two events in the same second: the payload cannot tell which is newer, so ask Stripe.
      try {
        const snapshot = await stripeRead.fetchSubscription({ subscriptionId: event.data.subscriptionId, customerId });
        result = snapshot
          ? await store.applySubscriptionSnapshot({ snapshot, eventId: event.eventId, eventType: event.type, eventCreated: event.created })
          : await store.applyBillingEvent(event, { tieBreak: 'precedence' });
      } catch (err) {
        if (!(err instanceof ActivityFailure)) throw err;
        log.warn('re-fetch failed; settling same-second tie by status precedence', { eventId: event.eventId });
        result = await store.applyBillingEvent(event, { tieBreak: 'precedence' });
      }
    }
    await afterApply(event, result);
  }

  /** Applies the events at the head of the queue in one local-activity transaction, then their effects in order. */
  async function applyEventBatch(events: BillingEvent[]): Promise<number> {
    inFlight = events.map((e) => e.eventId);
    const results = await dbLocal.applyBillingEvents(events);
    for (let i = 0; i < results.length; i++) {
      const result = results[i]!;
      if (result.outcome === 'tie') {
        // Settle this event on its own; the events after it go back to the head of the queue.
        await applyEvent(events[i]!, result);
        queue.unshift(...events.slice(i + 1).map((event) => ({ kind: 'event' as const, event })));
        inFlight = [];
        return i + 1;
      }
      await afterApply(events[i]!, result);
    }
    inFlight = [];
    return events.length;
  }

  /** Takes the run of events at the head of the queue (up to APPLY_BATCH_MAX). */
  function takeEventRun(): BillingEvent[] {
    const events: BillingEvent[] = [];
    while (events.length < APPLY_BATCH_MAX && queue[0]?.kind === 'event') events.push((queue.shift() as { event: BillingEvent }).event);
    return events;
  }

  async function afterApply(event: BillingEvent, result: ApplyEventResult): Promise<void> {
    if (result.outcome === 'duplicate') counters.duplicatesDropped++;
    else if (result.outcome === 'stale') counters.staleDropped++;
    else counters.applied++;
    subscription = result.subscription;
    lastEventId = event.eventId;
    remember(event.eventId);
    if (result.outcome !== 'duplicate') {
      await routeToDunning(event);
      await planChange.onEventApplied(event);
    }
  }

  // ---- effects as data (EFFECTS_PATCH) ----------------------------------------------------------

  /** Applies the events at the head of the queue in one transaction, then each event's effects, in order. */
  async function applyBatchWithEffects(events: BillingEvent[]): Promise<number> {
    inFlight = events.map((e) => e.eventId);
    const results = await dbLocal.applyBillingEvents(events);
    for (let i = 0; i < results.length; i++) {
      const result = results[i]!;
      if (result.outcome === 'tie') {
        await afterApplyWithEffects(events[i]!, await settleTie(events[i]!));
        // The events after the tie were not attempted: back to the head of the queue, in order.
        queue.unshift(...events.slice(i + 1).map((event) => ({ kind: 'event' as const, event })));
        inFlight = [];
        return i + 1;
      }
      await afterApplyWithEffects(events[i]!, result);
    }
    inFlight = [];
    return events.length;
  }

  /** Two subscription events in the same second: the payload cannot tell which is newer, so ask Stripe. */
  async function settleTie(event: BillingEvent): Promise<ApplyEventResult> {
    if (event.data.kind !== 'subscription') return dbLocal.applyBillingEvent(event, { tieBreak: 'precedence' });
    try {
      const snapshot = await stripeRead.fetchSubscription({ subscriptionId: event.data.subscriptionId, customerId });
      if (snapshot) {
        const result = await dbLocal.applySubscriptionSnapshot({ snapshot, customerId, eventId: event.eventId, eventType: event.type, eventCreated: event.created });
        if (result.outcome !== 'refused') return result;
      }
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.warn('re-fetch failed; settling same-second tie by status precedence', { eventId: event.eventId });
    }
    return dbLocal.applyBillingEvent(event, { tieBreak: 'precedence' });
  }

  /**
   * Counts the outcome and runs the event's effects — the ones recorded with it, also when this apply
   * found it applied already (a re-run after a commit). A quarantined event is not remembered, so a
   * replay after a fix is applied.
   */
  async function afterApplyWithEffects(event: BillingEvent, result: ApplyEventResult): Promise<void> {
    subscription = result.subscription;
    lastEventId = event.eventId;
    if (result.outcome === 'quarantined') {
      counters.quarantined++;
      log.warn('event quarantined; the customer\'s later events go on', { eventId: event.eventId, type: event.type, error: result.error });
      return;
    }
    if (result.outcome === 'duplicate') counters.duplicatesDropped++;
    else if (result.outcome === 'stale') counters.staleDropped++;
    else counters.applied++;
    remember(event.eventId);
    await runEffects(result.effects ?? []);
    // State-based: confirms a plan change when the applied state shows it, whichever apply wrote it.
    await planChange.onEventApplied(event);
  }

  /** Runs effects in order; each is idempotent by its key (child workflow id, the child's event-id dedup). */
  async function runEffects(effects: Effect[]): Promise<void> {
    for (const effect of effects) {
      switch (effect.kind) {
        case 'start_dunning':
          await startDunningCycle(effect);
          break;
        case 'signal_dunning':
          await signalDunning(effect.invoiceId, effect.event);
          break;
        case 'notify':
          await notifyCustomer(effect.notice, effect.invoiceId);
          break;
        case 'void_invoice':
          await voidInvoice(effect.invoiceId, effect.reason);
          break;
        case 'resume_subscription':
          await resumePausedSubscription(effect.subscriptionId, effect.paymentMethodId);
          break;
        case 'end_dunning': {
          await signalDunning(effect.invoiceId, effect.event);
          const view = dunning.get(effect.invoiceId);
          if (view && !isTerminalView(view)) dunning.set(effect.invoiceId, { ...view, state: effect.reason === 'paid' ? 'recovered' : 'canceled', nextAttemptAt: null });
          break;
        }
      }
    }
    if (effects.length > 0) publish();
  }

  /** A notice outside dunning (a declined upgrade, a trial ending): the ledger's dedup key makes it once. */
  async function notifyCustomer(kind: 'upgrade_declined' | 'trial_ending', invoiceId: string): Promise<void> {
    try {
      await notices.sendDunningNotice({
        customerId,
        invoiceId,
        kind,
        attempt: 0,
        atMs: Date.now(),
        policy: DEFAULT_DUNNING_POLICY,
        payload: { maxAttempts: 0, declineCode: null, nextAttemptAt: null, hostedInvoiceUrl: null },
      });
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.warn('notice not recorded', { invoiceId, kind, error: err.message });
    }
  }

  /** Voids an expired upgrade's proration invoice; a failure is logged (the invoice stays open for ops), never blocks the queue for long. */
  async function voidInvoice(invoiceId: string, reason: string): Promise<void> {
    try {
      await stripeWrite.voidInvoice({ invoiceId, reason });
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.error('could not void the proration invoice of an expired plan change', { invoiceId, reason, error: err.message });
    }
  }

  /**
   * Resumes a subscription paused for want of a payment method, now that there is one. A failure is
   * logged: the subscription stays paused (visible in the read model) and the next card event retries.
   */
  async function resumePausedSubscription(subscriptionId: string, paymentMethodId: string | null): Promise<void> {
    try {
      const result = await stripeWrite.resumePausedSubscription({ subscriptionId, paymentMethodId });
      log.info('paused subscription resumed with a payment method', { subscriptionId, outcome: result.outcome, status: result.status });
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.error('could not resume the paused subscription', { subscriptionId, error: err.message });
    }
  }

  async function startDunningCycle(effect: StartDunningEffect): Promise<void> {
    const { invoiceId, subscriptionId, failure } = effect;
    try {
      await startChild('dunningWorkflow', {
        workflowId: dunningWorkflowId(invoiceId),
        args: [{ invoiceId, customerId, subscriptionId, firstFailure: failure }],
        // The cycle must outlive this run's continue-as-new.
        parentClosePolicy: ParentClosePolicy.ABANDON,
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
      });
    } catch (err) {
      // Started already (this effect re-run after a crash, or before a continue-as-new): the same cycle.
      if (!(err instanceof WorkflowExecutionAlreadyStartedError || err instanceof ChildWorkflowFailure)) throw err;
      log.info('dunning cycle already started', { invoiceId });
    }
    if (!dunning.has(invoiceId)) {
      dunning.set(invoiceId, { invoiceId, state: 'retrying', attempt: 0, maxAttempts: 0, nextAttemptAt: null, lastDeclineCode: failure.declineCode });
    }
  }

  /** Records the dunning reports queued at the head of the queue, in one transaction. */
  async function recordReports(): Promise<number> {
    const reports: DunningReport[] = [];
    while (reports.length < APPLY_BATCH_MAX && queue[0]?.kind === 'dunning_report') reports.push((queue.shift() as { report: DunningReport }).report);
    await dbLocal.recordDunningReports({ customerId, reports });
    return reports.length;
  }

  async function runCommands(): Promise<void> {
    for (let c = commands.shift(); c; c = commands.shift()) {
      try {
        c.resolve(await c.run());
      } catch (err) {
        c.reject(err);
      }
    }
  }

  async function routeToDunning(event: BillingEvent): Promise<void> {
    const d = event.data;
    if (d.kind === 'invoice') {
      if (event.type === 'invoice.payment_failed' && d.subscriptionId) {
        await startOrSignalDunning(d.invoiceId, d.subscriptionId, {
          kind: 'payment_failed',
          eventId: event.eventId,
          declineCode: d.declineCode ?? d.failureCode,
          at: event.created,
        });
      } else if (event.type === 'invoice.payment_action_required' && d.subscriptionId) {
        await startOrSignalDunning(d.invoiceId, d.subscriptionId, {
          kind: 'payment_failed',
          eventId: event.eventId,
          declineCode: 'authentication_required',
          at: event.created,
        });
      } else if ((event.type === 'invoice.paid' || event.type === 'invoice.payment_succeeded') && dunning.has(d.invoiceId)) {
        await signalDunning(d.invoiceId, { kind: 'paid', eventId: event.eventId, at: event.created });
      }
    } else if (
      (d.kind === 'payment_method' && !d.detached && event.type === 'payment_method.attached') ||
      (d.kind === 'customer' && d.defaultPaymentMethodChanged && d.defaultPaymentMethodId)
    ) {
      const pm = d.kind === 'payment_method' ? d.paymentMethodId : d.defaultPaymentMethodId;
      for (const view of openCycles()) {
        await signalDunning(view.invoiceId, { kind: 'payment_method_updated', eventId: event.eventId, paymentMethodId: pm, at: event.created });
      }
    } else if (d.kind === 'subscription' && (d.deleted || d.status === 'canceled')) {
      for (const view of openCycles()) {
        await signalDunning(view.invoiceId, { kind: 'subscription_ended', eventId: event.eventId, at: event.created });
      }
    }
  }

  function isTerminalView(v: DunningView): boolean {
    return ['recovered', 'exhausted', 'canceled'].includes(v.state);
  }

  function viewOfReport(r: DunningReport): DunningView {
    return {
      invoiceId: r.invoiceId,
      state: r.state,
      attempt: r.attemptsMade,
      maxAttempts: r.maxAttempts,
      nextAttemptAt: r.nextAttemptAtMs === null ? null : Math.floor(r.nextAttemptAtMs / 1000),
      lastDeclineCode: r.lastDeclineCode,
    };
  }

  function openCycles(): DunningView[] {
    return [...dunning.values()].filter((v) => !['recovered', 'exhausted', 'canceled'].includes(v.state));
  }

  async function startOrSignalDunning(
    invoiceId: string,
    subscriptionId: string,
    failure: { kind: 'payment_failed'; eventId: string; declineCode: string | null; at: number },
  ): Promise<void> {
    const existing = dunning.get(invoiceId);
    if (existing && !['recovered', 'exhausted', 'canceled'].includes(existing.state)) {
      await signalDunning(invoiceId, failure); // one cycle per invoice: join it
      return;
    }
    if (existing) return; // a finished cycle is not reopened by a late redelivery
    try {
      await startChild('dunningWorkflow', {
        workflowId: dunningWorkflowId(invoiceId),
        args: [{ invoiceId, customerId, subscriptionId, firstFailure: { eventId: failure.eventId, declineCode: failure.declineCode, at: failure.at } }],
        // The cycle must outlive this run's continue-as-new.
        parentClosePolicy: ParentClosePolicy.ABANDON,
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
      });
      dunning.set(invoiceId, { invoiceId, state: 'retrying', attempt: 0, maxAttempts: 0, nextAttemptAt: null, lastDeclineCode: failure.declineCode });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError || err instanceof ChildWorkflowFailure) {
        // Started by an earlier run (before continue-as-new): it is the same cycle.
        dunning.set(invoiceId, existing ?? { invoiceId, state: 'retrying', attempt: 0, maxAttempts: 0, nextAttemptAt: null, lastDeclineCode: failure.declineCode });
        await signalDunning(invoiceId, failure);
      } else {
        throw err;
      }
    }
    publish();
  }

  async function signalDunning(invoiceId: string, event: DunningEvent): Promise<void> {
    try {
      await getExternalWorkflowHandle(dunningWorkflowId(invoiceId)).signal(dunningEventSignal, event);
    } catch (err) {
      // The cycle already finished: nothing to tell it.
      log.info('dunning cycle not running; signal dropped', { invoiceId, kind: event.kind, error: String(err) });
    }
  }

  async function applyReconcile(request: ReconcileRequest): Promise<void> {
    if (request.subscription && effectsPatched) {
      // Refused when the object belongs to another customer (never written); its drift stays flagged.
      const result = await store.applySubscriptionSnapshot({ snapshot: request.subscription, customerId, eventId: null, eventType: null, eventCreated: null });
      subscription = result.subscription;
      await runEffects(result.effects ?? []);
      await store.markDriftRepaired({ runId: request.runId, objectId: request.subscriptionId, repaired: result.outcome === 'applied' || result.outcome === 'stale' });
      counters.applied++;
      return;
    }
    if (request.subscription) {
      const result = await store.applySubscriptionSnapshot({ snapshot: request.subscription, eventId: null, eventType: null, eventCreated: null });
      subscription = result.subscription;
    } else {
      await store.flagSubscriptionForReview({ subscriptionId: request.subscriptionId, reason: `not found in Stripe (reconciliation ${request.runId})` });
    }
    await store.markDriftRepaired({ runId: request.runId, objectId: request.subscriptionId, repaired: request.subscription !== null });
    counters.applied++;
  }

  // Rebuild the view from Postgres (fresh start or continue-as-new).
  subscription = await store.loadLocalSubscription(customerId);
  publish();
  await planChange.init(catalogPatched, batched);

  for (;;) {
    await condition(() => queue.length > 0 || commands.length > 0 || shouldContinueAsNew());
    if (commands.length > 0) {
      await runCommands();
      publish();
      continue;
    }
    if (shouldContinueAsNew()) {
      // Let in-flight update handlers (plan changes) finish first; unprocessed events travel along.
      if (effectsPatched) {
        // Handlers may be waiting on this loop for their writes: run those while they finish.
        while (!allHandlersFinished()) {
          await condition(() => commands.length > 0 || allHandlersFinished());
          await runCommands();
        }
      } else {
        await condition(allHandlersFinished);
      }
      await continueAsNew<typeof customerWorkflow>({
        customerId,
        recentEventIds: recent,
        pending: queue,
        counters,
        dunning: [...dunning.values()].slice(-50),
        planChange: planChange.carry(),
        continueAsNewAfter: input.continueAsNewAfter,
      });
    }
    if (effectsPatched && queue[0]?.kind === 'event') {
      processedThisRun += await applyBatchWithEffects(takeEventRun());
      publish();
      continue;
    }
    if (queue[0]?.kind === 'dunning_report') {
      // Not counted toward continueAsNewAfter (a test knob that counts applied events and repairs).
      await recordReports();
      publish();
      continue;
    }
    if (batched && queue[0]?.kind === 'event') {
      processedThisRun += await applyEventBatch(takeEventRun());
      publish();
      continue;
    }
    const item = queue.shift();
    if (!item) continue;
    if (item.kind === 'event') await applyEvent(item.event);
    else if (item.kind === 'reconcile') await applyReconcile(item.request);
    processedThisRun++;
    publish();
  }

  function shouldContinueAsNew(): boolean {
    if (input.continueAsNewAfter !== undefined && processedThisRun >= input.continueAsNewAfter) return true;
    return workflowInfo().continueAsNewSuggested;
  }
}

/** Re-exported so callers can tell a rejected update from other failures. */
export { ApplicationFailure };
