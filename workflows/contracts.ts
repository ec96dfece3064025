/**
 * What the API and the workflows share on the wire: signal, query and update definitions and the
 * custom search attribute keys. Wire names are camelCase and never renamed: running workflows depend on them.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { BillingEvent } from '../domain/billing-event';
import type { CancelSubscriptionRequest, ChangePlanRequest, ChangePlanResult, ChangeQuantityRequest, ChangeQuantityResult, CustomerWorkflowState, DunningEvent, DunningReport, DunningView, ReconcileRequest, SubscriptionActionResult } from '../domain/messages';

// ---- custom search attributes (shown and filterable in the Temporal UI) ----------------------------
export const StripeCustomerIdKey = defineSearchAttributeKey('StripeCustomerId', SearchAttributeType.KEYWORD);
export const SubscriptionStatusKey = defineSearchAttributeKey('SubscriptionStatus', SearchAttributeType.KEYWORD);
export const PlanIdKey = defineSearchAttributeKey('PlanId', SearchAttributeType.KEYWORD);
export const DunningStateKey = defineSearchAttributeKey('DunningState', SearchAttributeType.KEYWORD);
export const BillingWorkflowKindKey = defineSearchAttributeKey('BillingWorkflowKind', SearchAttributeType.KEYWORD);

/** Name → type, for registering the attributes in a namespace. */
export const CUSTOM_SEARCH_ATTRIBUTES = {
  StripeCustomerId: 'KEYWORD',
  SubscriptionStatus: 'KEYWORD',
  PlanId: 'KEYWORD',
  DunningState: 'KEYWORD',
  BillingWorkflowKind: 'KEYWORD',
} as const;

// ---- customer workflow ----------------------------------------------------------------------------
/** One event (admin replay before the dispatcher, and signals already in running workflows' histories). */
export const stripeEventSignal = defineSignal<[BillingEvent]>('stripeEvent');
/** One customer's events in delivery order, coalesced by the API's dispatcher (bounded by count and bytes). */
export const stripeEventsSignal = defineSignal<[BillingEvent[]]>('stripeEvents');
export const reconcileSignal = defineSignal<[ReconcileRequest]>('reconcile');
export const stateQuery = defineQuery<CustomerWorkflowState>('state');
export const changePlanUpdate = defineUpdate<ChangePlanResult, [ChangePlanRequest]>('changePlan');
/** Seats: an increase now (prorated, invoiced), a decrease at the renewal or now (request.decreaseAt). */
export const changeQuantityUpdate = defineUpdate<ChangeQuantityResult, [ChangeQuantityRequest]>('changeQuantity');
export const cancelPendingPlanChangeUpdate = defineUpdate<ChangePlanResult | null, [{ requestId: string }]>('cancelPendingPlanChange');
export const cancelSubscriptionUpdate = defineUpdate<SubscriptionActionResult, [CancelSubscriptionRequest]>('cancelSubscription');
export const resumeSubscriptionUpdate = defineUpdate<SubscriptionActionResult, [{ requestId: string }]>('resumeSubscription');
/** Reloads the plan catalog the customer workflow validates against (after a deploy added plans). */
export const refreshPlanCatalogUpdate = defineUpdate<{ plans: number }, []>('refreshPlanCatalog');
export const dunningEventSignal = defineSignal<[DunningEvent]>('dunningEvent');

// ---- dunning workflow -----------------------------------------------------------------------------
export const dunningStateQuery = defineQuery<DunningView>('dunningState');
/** Dunning child → customer workflow: the cycle's latest view (drives the DunningState search attribute). */
export const dunningProgressSignal = defineSignal<[DunningView]>('dunningProgress');
/** Dunning child → customer workflow: a report to record (runs after the dunning-reports-to-parent patch). */
export const dunningReportSignal = defineSignal<[DunningReport]>('dunningReport');
