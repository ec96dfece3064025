/** The worker's workflowsPath: every workflow type this worker runs. */
export { customerWorkflow } from './customer';
export { dunningWorkflow } from './dunning';
export { reconciliationWorkflow } from './reconciliation';
