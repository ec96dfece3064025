/** Custom search attribute keys shown and filterable in the Temporal UI. */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

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
