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
import type { Activities } from '../activities';
import type { BillingEvent } from '../domain/billing-event';
import { dunningWorkflowId } from '../domain/ids';
import {
  dunningEventSignal,
  dunningProgressSignal,
  reconcileSignal,
  stateQuery,
  stripeEventSignal,
  type CustomerWorkflowState,
  type DunningEvent,
  type DunningView,
  type ReconcileRequest,
} from '../domain/messages';
import { DunningStateKey, PlanIdKey, SubscriptionStatusKey } from '../domain/search-attributes';
import type { ApplyEventResult, LocalSubscription } from '../activities/billing-db';
import { PLAN_CHANGE_CATALOG_PATCH, installPlanChangeHandlers, type PlanChangeCarry } from './plan-change';
import { localPostgresActivities, postgresActivities } from './postgres-activities';

/**
 * Runs after LOCAL_APPLY_PATCH call the Postgres activities as local activities (in the workflow task,
 * no activity task round trip through the server) and apply events queued together in one batch; runs
 * started before it keep the regular activities.
 */
const db = postgresActivities;
const dbLocal = localPostgresActivities;

/** patched() id of the batched local-activity apply path (workflows/customer.ts). */
export const LOCAL_APPLY_PATCH = 'customer-local-batch-apply';

/** At most this many queued events are applied in one transaction. */
export const APPLY_BATCH_MAX = 100;

const stripeRead = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '5 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 6 },
});

/** How many applied event ids the workflow remembers for dedup (Stripe retries for up to 3 days). */
export const RECENT_EVENT_IDS_LIMIT = 2000;

/** Input of customerWorkflow; everything but customerId is carried over continue-as-new. */
export interface CustomerWorkflowInput {
  customerId: string;
  recentEventIds?: string[];
  pending?: QueueItem[];
  counters?: { applied: number; duplicatesDropped: number; staleDropped: number };
  dunning?: DunningView[];
  planChange?: PlanChangeCarry;
  /** Tests: continue-as-new after this many applied items instead of waiting for the server's hint. */
  continueAsNewAfter?: number;
}

type QueueItem = { kind: 'event'; event: BillingEvent } | { kind: 'reconcile'; request: ReconcileRequest };

/** The per-customer entity workflow. */
export async function customerWorkflow(input: CustomerWorkflowInput): Promise<void> {
  const { customerId } = input;
  const recent: string[] = [...(input.recentEventIds ?? [])];
  const queue: QueueItem[] = [...(input.pending ?? [])];
  const counters = { applied: 0, duplicatesDropped: 0, staleDropped: 0, ...input.counters };
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
  const store = batched ? dbLocal : db;
  /** Events taken off the queue whose apply has not finished (batched runs only). */
  let inFlight: string[] = [];

  const isKnown = (eventId: string) =>
    recent.includes(eventId) ||
    (batched && inFlight.includes(eventId)) ||
    queue.some((q) => q.kind === 'event' && q.event.eventId === eventId);

  setHandler(stripeEventSignal, (event) => {
    if (!event || typeof event.eventId !== 'string' || event.customerId !== customerId) {
      log.warn('dropping malformed or misrouted event', { eventId: event?.eventId, customerId });
      return;
    }
    if (isKnown(event.eventId)) {
      counters.duplicatesDropped++;
      return;
    }
    queue.push({ kind: 'event', event });
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

  const planChange = installPlanChangeHandlers({
    customerId,
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
    },
    dunning: [...dunning.values()],
    planChange: planChange.view(),
    queued: queue.length,
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
    await condition(() => queue.length > 0 || shouldContinueAsNew());
    if (shouldContinueAsNew()) {
      // Let in-flight update handlers (plan changes) finish first; unprocessed events travel along.
      await condition(allHandlersFinished);
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
    if (batched && queue[0]?.kind === 'event') {
      processedThisRun += await applyEventBatch(takeEventRun());
      publish();
      continue;
    }
    const item = queue.shift();
    if (!item) continue;
    if (item.kind === 'event') await applyEvent(item.event);
    else await applyReconcile(item.request);
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
