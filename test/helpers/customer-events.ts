/**
 * Slim events as the webhook normalizer produces them, and the customer workflow started with one, for
 * tests that drive the customer workflow by signal (plan changes, seats) rather than through the inbox.
 */
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { BillingEvent, SubscriptionData } from '../../domain/billing-event';
import { customerWorkflowId } from '../../domain/ids';
import type { CustomerWorkflowInput } from '../../workflows/customer';
import { stripeEventSignal } from '../../workflows/contracts';
import { uniqueId } from './services';

/** A subscription event; `data` overrides an active subscription with a 30-day period from `created`. */
export function slimSubscriptionEvent(input: {
  customerId: string;
  subscriptionId: string;
  created: number;
  type?: string;
  data?: Partial<SubscriptionData>;
}): BillingEvent {
  return {
    eventId: `evt_${uniqueId()}`,
    type: input.type ?? 'customer.subscription.updated',
    created: input.created,
    customerId: input.customerId,
    objectId: input.subscriptionId,
    livemode: false,
    data: {
      kind: 'subscription',
      subscriptionId: input.subscriptionId,
      status: 'active',
      priceId: null,
      currentPeriodStart: input.created,
      currentPeriodEnd: input.created + 30 * 86_400,
      cancelAtPeriodEnd: false,
      canceledAt: null,
      trialEnd: null,
      deleted: false,
      ...input.data,
    },
  };
}

/** customer.created: a customer with no subscription. */
export function customerCreatedEvent(customerId: string, created: number): BillingEvent {
  return {
    eventId: `evt_${uniqueId()}`,
    type: 'customer.created',
    created,
    customerId,
    objectId: customerId,
    livemode: false,
    data: { kind: 'customer', email: `${customerId}@example.com`, name: null, defaultPaymentMethodId: null, deleted: false, defaultPaymentMethodChanged: false },
  };
}

/** Starts the customer workflow `customer:<id>` with its first event, as the dispatcher does (signalWithStart). */
export function startCustomerWorkflow(
  client: Client,
  opts: { taskQueue: string; customerId: string; event: BillingEvent; input?: Omit<CustomerWorkflowInput, 'customerId'> },
): Promise<WorkflowHandle> {
  return client.workflow.signalWithStart('customerWorkflow', {
    workflowId: customerWorkflowId(opts.customerId),
    taskQueue: opts.taskQueue,
    args: [{ customerId: opts.customerId, ...opts.input }],
    signal: stripeEventSignal,
    signalArgs: [opts.event],
  });
}
