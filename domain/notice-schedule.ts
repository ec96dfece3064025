/**
 * When a customer notice may go out. Pure: the notice activities call these with the workflow's time.
 * - The per-cycle cap (maxNoticesPerCycle) limits the reminders of one failed invoice; a reminder past it
 *   is not sent ('suppressed'). The final notice and the recovery notice are never capped.
 * - The per-customer cooldown (noticeMinIntervalMs after the previous notice goes out) DEFERS a notice;
 *   the final notice and the recovery notice are exempt (they must not lag the action they report).
 * - Quiet hours in the customer's timezone defer every notice to the end of the window.
 * - A reminder about an invoice that has since been paid, voided or written off is superseded.
 */
import type { DunningPolicy, NoticeKind } from './dunning-policy';
import { quietHoursEnd, type QuietHours } from './quiet-hours';

/** Kinds that the cycle cap and the cooldown never hold back. */
const UNCAPPED: ReadonlySet<string> = new Set<NoticeKind>(['recovered', 'final_notice']);

/** Whether a notice of `kind` is over the cycle cap, given the notices already told in its cycle. */
export function overCycleCap(kind: NoticeKind, noticesInCycle: number, policy: Pick<DunningPolicy, 'maxNoticesPerCycle'>): boolean {
  return !UNCAPPED.has(kind) && noticesInCycle >= policy.maxNoticesPerCycle;
}

export interface NoticeDueInput {
  nowMs: number;
  kind: NoticeKind;
  /** When the customer's previous notice (recorded before this one) went or goes out; null if none. */
  previousOutAtMs: number | null;
  minIntervalMs: number;
  quiet: QuietHours | null;
  timeZone: string;
}

export type DeferReason = 'cooldown' | 'quiet_hours';

/** The earliest time the notice may go out, and what held it back (null: it may go now). */
export function noticeDueAt(input: NoticeDueInput): { dueAtMs: number; deferredBy: DeferReason | null } {
  let dueAtMs = input.nowMs;
  let deferredBy: DeferReason | null = null;
  if (!UNCAPPED.has(input.kind) && input.previousOutAtMs !== null && input.previousOutAtMs + input.minIntervalMs > dueAtMs) {
    dueAtMs = input.previousOutAtMs + input.minIntervalMs;
    deferredBy = 'cooldown';
  }
  const quietEnd = quietHoursEnd(dueAtMs, input.timeZone, input.quiet);
  if (quietEnd !== null && quietEnd > dueAtMs) {
    dueAtMs = quietEnd;
    deferredBy = 'quiet_hours';
  }
  return { dueAtMs, deferredBy };
}

/** Reminders that lose their point once the invoice is closed; 'recovered' and 'final_notice' report an outcome and stay. */
const REMINDERS: ReadonlySet<string> = new Set<NoticeKind>([
  'payment_failed',
  'update_payment_method',
  'authenticate_payment',
  'final_attempt_ahead',
  'upgrade_declined',
]);

/** Whether a notice still waiting is obsolete because its invoice is closed (paid, void, uncollectible). */
export function isSuperseded(kind: string, invoiceStatus: string | null): boolean {
  return REMINDERS.has(kind) && (invoiceStatus === 'paid' || invoiceStatus === 'void' || invoiceStatus === 'uncollectible');
}
