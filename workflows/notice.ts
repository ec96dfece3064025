/**
 * One customer notice: workflow `notice:<dedup key>`, started by the outbox relay once the notice is in
 * the ledger. It waits in a durable timer while the notice is deferred (quiet hours in the customer's
 * timezone, the per-customer cooldown), re-plans when it wakes (the invoice may have been paid: then
 * the notice is superseded and nothing is sent), and sends the email once. Temporal UI shows what it
 * waits for; cancelling the workflow withdraws the notice.
 */
import { ActivityFailure, proxyActivities, setCurrentDetails, sleep, log } from '@temporalio/workflow';
import type { NotifyActivities } from '../activities/notify';
import { postgresActivities } from './postgres-activities';

/** SMTP refusals retry for about 2 hours (8 attempts), then the notice is given up, visibly. */
const { sendNotice } = proxyActivities<Pick<NotifyActivities, 'sendNotice'>>({
  startToCloseTimeout: '2 minutes',
  retry: {
    initialInterval: '30 seconds',
    backoffCoefficient: 2,
    maximumInterval: '30 minutes',
    maximumAttempts: 8,
    nonRetryableErrorTypes: ['EmailDisabled', 'NoticeNotFound'],
  },
});

export interface NoticeWorkflowInput {
  /** The notice's ledger row id. */
  id: number;
}

export interface NoticeWorkflowResult {
  id: number;
  outcome: string;
  /** How many times it waited (quiet hours, cooldown) before it was sent or dropped. */
  waits: number;
}

/** At most this many waits: each is a real deferral, so more means a bug — give up loudly rather than loop. */
const MAX_WAITS = 50;

export async function noticeWorkflow(input: NoticeWorkflowInput): Promise<NoticeWorkflowResult> {
  const { id } = input;
  let waits = 0;
  for (;;) {
    const plan = await postgresActivities.planNotice({ id, nowMs: Date.now() });
    if (plan.action === 'done') return { id, outcome: plan.status, waits };
    if (plan.action === 'send') break;
    if (++waits > MAX_WAITS) {
      await postgresActivities.giveUpNotice({ id, error: `deferred ${MAX_WAITS} times` });
      return { id, outcome: 'given_up', waits };
    }
    setCurrentDetails(`notice ${id}: held by ${plan.reason.replace('_', ' ')} until ${new Date(plan.untilMs).toISOString()}`);
    await sleep(Math.max(1, plan.untilMs - Date.now()));
  }
  setCurrentDetails(`notice ${id}: sending`);
  try {
    const sent = await sendNotice({ id });
    return { id, outcome: sent.status, waits };
  } catch (err) {
    if (!(err instanceof ActivityFailure)) throw err;
    const error = err.cause instanceof Error ? err.cause.message : err.message;
    log.warn('notice not sent: retries exhausted', { id, error });
    await postgresActivities.giveUpNotice({ id, error });
    return { id, outcome: 'given_up', waits };
  }
}
