/**
 * Customer notices. Every notice is first a row in the `notifications` ledger (unique dedup key),
 * decided under a per-customer lock against the caps of `mayNotify`; only then is it handed to a
 * `Notifier`. The default notifier leaves the row `queued` in the outbox and logs it.
 */
import { log } from '@temporalio/activity';
import { mayNotify, noticeDedupKey, type DunningPolicy, type NoticeKind } from '../domain/dunning-policy';
import type { Sql } from '../lib/db';

/** What a customer is told; the payload is what a template needs (no card data). */
export interface Notice {
  /** Ledger row id. */
  id: number;
  /** Unique per invoice, kind and attempt: pass it to the provider as its idempotency key. */
  dedupKey: string;
  customerId: string;
  invoiceId: string;
  kind: NoticeKind;
  payload: NoticePayload;
}

/** Template data of a dunning notice. */
export interface NoticePayload {
  attempt: number;
  maxAttempts: number;
  declineCode: string | null;
  /** ISO time of the next automatic retry, when one is scheduled. */
  nextAttemptAt: string | null;
  /** Stripe's hosted invoice page: where the customer pays or completes 3DS authentication. */
  hostedInvoiceUrl: string | null;
}

/** Delivery channel for notices (email, in-app, a queue). */
export interface Notifier {
  /**
   * Delivers one notice that the ledger has just accepted; called at most once per dedup key.
   * Return 'sent' when a provider took it (the row becomes `sent`), or 'queued' to leave the row in
   * the outbox for a relay. Throwing leaves the row `queued`; the notice is not retried from here.
   */
  deliver(notice: Notice): Promise<'sent' | 'queued'>;
}

/** The default notifier: the ledger row is the outbox entry; it is logged and left `queued`. */
export function createOutboxNotifier(): Notifier {
  return {
    async deliver(notice) {
      log.info('notice queued in outbox', { dedupKey: notice.dedupKey, customerId: notice.customerId, kind: notice.kind });
      return 'queued';
    },
  };
}

/** Dependencies of the notice activities; `notifier` defaults to the outbox. */
export interface NotifyDeps {
  sql: Sql;
  notifier?: Notifier;
}

/** Input of sendDunningNotice. */
export interface SendNoticeInput {
  customerId: string;
  invoiceId: string;
  kind: NoticeKind;
  /** Retries made when the notice was decided: part of the dedup key. */
  attempt: number;
  /** Workflow time of the decision (ms): the caps are measured in it, so a replay decides the same. */
  atMs: number;
  policy: DunningPolicy;
  payload: Omit<NoticePayload, 'attempt'>;
}

/** What happened to a notice: accepted (queued / sent), held back by a cap, or already in the ledger. */
export type SendNoticeResult =
  | { status: 'queued' | 'sent'; dedupKey: string }
  | { status: 'suppressed'; dedupKey: string; reason: 'cooldown' | 'cycle_cap' }
  | { status: 'duplicate'; dedupKey: string; previous: string };

/** Statuses that count against the caps: the customer was (or is about to be) told. */
const COUNTED = ['queued', 'sent'];

/** Creates the notice activities. */
export function createNotifyActivities({ sql, notifier = createOutboxNotifier() }: NotifyDeps) {
  return {
    /** Records a dunning notice in the ledger (at most once per dedup key), enforcing the caps, then delivers it. */
    async sendDunningNotice(input: SendNoticeInput): Promise<SendNoticeResult> {
      const dedupKey = noticeDedupKey({ invoiceId: input.invoiceId, kind: input.kind, attempt: input.attempt });
      const payload: NoticePayload = { attempt: input.attempt, ...input.payload };
      const decided = await sql.begin(async (tx) => {
        // Serializes the cap check per customer: two cycles of one customer cannot both pass it.
        await tx`SELECT pg_advisory_xact_lock(hashtext(${`notify:${input.customerId}`}))`;
        const existing = await tx<{ status: string }[]>`SELECT status FROM notifications WHERE dedup_key = ${dedupKey}`;
        if (existing[0]) return { kind: 'duplicate' as const, previous: existing[0].status };

        const [stats] = await tx<{ in_cycle: number; last_at: Date | null }[]>`
          SELECT count(*) FILTER (WHERE invoice_id = ${input.invoiceId})::int AS in_cycle, max(created_at) AS last_at
          FROM notifications
          WHERE customer_id = ${input.customerId} AND status IN ${tx(COUNTED)}`;
        const verdict = mayNotify({
          nowMs: input.atMs,
          lastNoticeAtMs: stats?.last_at ? stats.last_at.getTime() : null,
          noticesSentThisCycle: stats?.in_cycle ?? 0,
          policy: input.policy,
          kind: input.kind,
        });
        const status = verdict.allowed ? 'queued' : 'suppressed';
        const stored = verdict.allowed ? payload : { ...payload, suppressedBy: verdict.reason };
        const [row] = await tx<{ id: number }[]>`
          INSERT INTO notifications (dedup_key, customer_id, invoice_id, kind, status, payload, created_at)
          VALUES (${dedupKey}, ${input.customerId}, ${input.invoiceId}, ${input.kind}, ${status},
                  ${tx.json(stored as never)}, ${new Date(input.atMs)})
          RETURNING id`;
        return verdict.allowed
          ? { kind: 'accepted' as const, id: row!.id }
          : { kind: 'suppressed' as const, reason: verdict.reason };
      });

      if (decided.kind === 'duplicate') return { status: 'duplicate', dedupKey, previous: decided.previous };
      if (decided.kind === 'suppressed') {
        log.info('notice suppressed by cap', { dedupKey, customerId: input.customerId, reason: decided.reason });
        return { status: 'suppressed', dedupKey, reason: decided.reason };
      }
      const notice: Notice = { id: decided.id, dedupKey, customerId: input.customerId, invoiceId: input.invoiceId, kind: input.kind, payload };
      let delivered: 'sent' | 'queued';
      try {
        delivered = await notifier.deliver(notice);
      } catch (err) {
        // The row stays queued in the outbox; delivering again here could send twice.
        log.warn('notifier failed; notice left queued', { dedupKey, error: err instanceof Error ? err.message : String(err) });
        return { status: 'queued', dedupKey };
      }
      if (delivered === 'sent') {
        await sql`UPDATE notifications SET status = 'sent', sent_at = now() WHERE id = ${decided.id} AND status = 'queued'`;
      }
      return { status: delivered, dedupKey };
    },

    /** Cancels the invoice's notices still waiting in the outbox; reports how many were canceled and how many went out. */
    async cancelQueuedNotices(input: { invoiceId: string }): Promise<{ canceled: number; sent: number }> {
      const canceled = await sql`
        UPDATE notifications SET status = 'canceled'
        WHERE invoice_id = ${input.invoiceId} AND status = 'queued'
        RETURNING id`;
      const [sent] = await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM notifications WHERE invoice_id = ${input.invoiceId} AND status = 'sent'`;
      return { canceled: canceled.length, sent: sent?.n ?? 0 };
    },
  };
}

/** The notice activities, as registered. */
export type NotifyActivities = ReturnType<typeof createNotifyActivities>;
