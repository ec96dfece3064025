/**
 * The Postgres activities as the workflows call them: one set of options, as regular activities (an
 * activity task through the server) or as local activities (run inside the workflow task). A Postgres
 * outage must not fail a workflow — or a change Stripe already made — so both retry until it is back.
 */
import { proxyActivities, proxyLocalActivities, type ActivityOptions } from '@temporalio/workflow';
import type { Activities } from '../activities';

const options = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '30 seconds' },
} satisfies ActivityOptions;

/** Regular activities: runs started before the customer-local-batch-apply patch, and the dunning workflow. */
export const postgresActivities = proxyActivities<Activities>(options);

/** Local activities: customer runs after the customer-local-batch-apply patch. */
export const localPostgresActivities = proxyLocalActivities<Activities>(options);
