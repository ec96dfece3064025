/**
 * appWebhookWorkflow `app-webhook:<id>` (admin replays: `app-webhook:<id>:replay-<n>`), started by the
 * worker's outbox relay for an app_webhooks row: delivers it with retries and exponential backoff
 * (2 s doubling to 1 h) for up to 3 days, then marks the row given up.
 */
import { ActivityFailure, log, proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { AppWebhookActivities } from '../activities/app-webhooks';

// The attempt's own limit sits above the longest APP_WEBHOOK_TIMEOUT_MS (60 s) plus two row updates,
// so a slow app is cut off by the fetch timeout (and the attempt recorded), not by Temporal.
const delivery = proxyActivities<AppWebhookActivities>({
  startToCloseTimeout: '75 seconds',
  scheduleToCloseTimeout: '3 days',
  retry: {
    initialInterval: '2 seconds',
    backoffCoefficient: 2,
    maximumInterval: '1 hour',
    nonRetryableErrorTypes: ['AppWebhookNotFound', 'AppWebhooksDisabled'],
  },
});

// Bookkeeping in Postgres: an outage stalls the give-up instead of losing it.
const bookkeeping = proxyActivities<AppWebhookActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** Input of appWebhookWorkflow: the app_webhooks id. */
export interface AppWebhookInput {
  id: string;
}

/** How a delivery run ended. */
export interface AppWebhookResult {
  id: string;
  outcome: 'delivered' | 'already_delivered' | 'given_up';
}

/** Delivers one app event (idempotent: a delivered row is not posted again unless an admin replay reset it). */
export async function appWebhookWorkflow(input: AppWebhookInput): Promise<AppWebhookResult> {
  setCurrentDetails(`delivering app webhook ${input.id}`);
  try {
    const res = await delivery.deliverAppWebhook({ id: input.id });
    setCurrentDetails(`${res.status}${res.statusCode !== undefined ? ` (HTTP ${res.statusCode})` : ''}`);
    log.info('app webhook done', { id: input.id, outcome: res.status, statusCode: res.statusCode });
    return { id: input.id, outcome: res.status };
  } catch (err) {
    if (!(err instanceof ActivityFailure)) throw err;
    const error = `gave up: ${failureChain(err)}`;
    setCurrentDetails(error);
    log.warn('app webhook given up', { id: input.id, error });
    await bookkeeping.giveUpAppWebhook({ id: input.id, error });
    return { id: input.id, outcome: 'given_up' };
  }
}

/** The messages of a failure and its causes (a timeout's cause is the last attempt's failure). */
function failureChain(err: Error): string {
  const parts: string[] = [];
  for (let e: unknown = err.cause; e instanceof Error && parts.length < 4; e = e.cause) if (e.message) parts.push(e.message);
  return (parts.join(': ') || err.message).slice(0, 500);
}
