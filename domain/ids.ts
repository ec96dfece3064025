/** Workflow ids and task-queue-independent names derived from business keys. */

/** `customer:<cus_id>`: the one long-running workflow that owns a customer's billing state. */
export const customerWorkflowId = (customerId: string): string => `customer:${customerId}`;

/** `dunning:<in_id>`: one recovery cycle per failed invoice. */
export const dunningWorkflowId = (invoiceId: string): string => `dunning:${invoiceId}`;

/** `reconciliation:<suffix>`: one reconciliation run. */
export const reconciliationWorkflowId = (suffix: string): string => `reconciliation:${suffix}`;

/** The Temporal Schedule that starts the daily reconciliation. */
export const RECONCILIATION_SCHEDULE_ID = 'reconciliation-daily';

/** Extracts the customer id from a `customer:<id>` workflow id, or null. */
export function customerIdFromWorkflowId(workflowId: string): string | null {
  return workflowId.startsWith('customer:') ? workflowId.slice('customer:'.length) : null;
}

/** The delivery workflow of an app webhook: its first, and one per admin replay. */
export function appWebhookWorkflowId(id: string, replays: number): string {
  return replays > 0 ? `app-webhook:${id}:replay-${replays}` : `app-webhook:${id}`;
}
