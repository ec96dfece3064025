/** Activity log lines about one Stripe event, carrying the three correlation ids. */
import { Context, log } from '@temporalio/activity';

/** The ids every log line about an event carries (workflowId is read from the activity context). */
export interface EventLogFields {
  eventId: string;
  customerId: string;
  [key: string]: unknown;
}

/**
 * Logs through the activity logger (the worker routes it into pino with activity and workflow
 * metadata). Outside an activity (a direct call in a script or test) there is no logger: no-op.
 */
export function logEvent(level: 'info' | 'warn', message: string, fields: EventLogFields): void {
  let workflowId: string | null;
  try {
    const info = Context.current().info;
    workflowId = info.workflowExecution?.workflowId ?? null;
  } catch {
    return;
  }
  log[level](message, { ...fields, workflowId });
}
