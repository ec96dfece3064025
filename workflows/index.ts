/** The worker's workflowsPath: every workflow type this worker runs. */
export { appWebhookWorkflow } from './app-webhook';
export { customerWorkflow } from './customer';
export { dunningWorkflow } from './dunning';
export { noticeWorkflow } from './notice';
export { reconciliationWorkflow } from './reconciliation';
export { retentionWorkflow } from './retention';
