/**
 * Signal-with-start of a customer workflow from an activity: how a dunning cycle reaches its customer
 * workflow (the single writer) when a plain workflow-to-workflow signal finds it not running.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from '@temporalio/client';
import type { Config } from '../lib/config';
import { customerWorkflowId } from '../domain/ids';
import { type DunningReport, type ReconcileRequest } from '../domain/messages';
import { dunningReportSignal, reconcileSignal } from '../workflows/contracts';
import { BillingWorkflowKindKey, StripeCustomerIdKey } from '../workflows/contracts';

export interface CustomerSignalDeps {
  temporalClient?: Client | undefined;
  config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>;
}

/** Creates the customer-signal activity. */
export function createCustomerSignalActivities({ temporalClient, config }: CustomerSignalDeps) {
  return {
    /** Delivers a dunning report or a subscription snapshot to the customer workflow, starting it if needed. */
    async signalCustomerWorkflow(
      input: { customerId: string; report: DunningReport } | { customerId: string; reconcile: ReconcileRequest },
    ): Promise<void> {
      if (!temporalClient) throw ApplicationFailure.nonRetryable('no Temporal client configured for the worker activities', 'ConfigurationError');
      const common = {
        workflowId: customerWorkflowId(input.customerId),
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [{ customerId: input.customerId }] as [{ customerId: string }],
        typedSearchAttributes: [
          { key: StripeCustomerIdKey, value: input.customerId },
          { key: BillingWorkflowKindKey, value: 'customer' },
        ],
      };
      if ('report' in input) {
        await temporalClient.workflow.signalWithStart('customerWorkflow', { ...common, signal: dunningReportSignal, signalArgs: [input.report] });
      } else {
        await temporalClient.workflow.signalWithStart('customerWorkflow', { ...common, signal: reconcileSignal, signalArgs: [input.reconcile] });
      }
    },
  };
}
