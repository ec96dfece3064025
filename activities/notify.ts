/**
 * Customer notices. A notice is first a row in the `notifications` ledger (unique dedup key), decided
 * under a per-customer lock: over the cycle cap it is 'suppressed', otherwise 'queued' with the time it
 * may go out (the cooldown and quiet hours defer it; see domain/notice-schedule.ts). The outbox relay
 * then starts its workflow `notice:<dedup key>` (workflows/notice.ts), which waits in a durable timer
 * until it is due, drops it if its invoice got paid meanwhile, and sends it over SMTP: at most one
 * email per dedup key, since a send whose outcome is unknown is never repeated.
 */
import { ApplicationFailure, log } from '@temporalio/activity';
import { noticeDedupKey, type DunningPolicy, type NoticeKind } from '../domain/dunning-policy';
import { isSuperseded, noticeDueAt, overCycleCap, type DeferReason } from '../domain/notice-schedule';
import { renderNotice, templateFor } from '../domain/notice-templates';
import { parseQuietHours } from '../domain/quiet-hours';
import { cardUpdateUrl } from '../lib/card-update-link';
import { emailEnabled, type Config } from '../lib/config';
import type { Sql, TxSql } from '../lib/db';
import { createMailer, MailDeliveryError, messageIdFor, type Mailer } from '../lib/mailer';

/** Template data of a notice, stored with it (no card data). */
export interface NoticePayload {
  attempt: number;
  maxAttempts: number;
  declineCode: string | null;
  /** ISO time of the next automatic retry, when one is scheduled. */
  nextAttemptAt: string | null;
  /** Stripe's hosted invoice page: where the customer pays or completes 3DS authentication. */
  hostedInvoiceUrl: string | null;
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

/** What happened to a notice: queued (now or for later), held back by the cycle cap, or already in the ledger. */
export type SendNoticeResult =
  | { status: 'queued'; dedupKey: string; dueAt: string; deferredBy: DeferReason | null }
  | { status: 'suppressed'; dedupKey: string; reason: 'cycle_cap' }
  | { status: 'duplicate'; dedupKey: string; previous: string };

/** What the notice workflow does next. */
export type NoticePlan =
  | { action: 'send' }
  | { action: 'wait'; untilMs: number; reason: DeferReason }
  | { action: 'done'; status: string };

/** Outcome of one send. */
export type SendOutcome = { status: 'sent'; messageId: string } | { status: 'given_up' | 'canceled' | 'already_sent'; reason: string };

/** Ledger statuses that count as told (or about to be): the cap and the cooldown count them. */
const TOLD = ['queued', 'sending', 'sent', 'failed'];

export interface NotifyDeps {
  sql: Sql;
  config: Pick<
    Config,
    | 'SMTP_URL'
    | 'NOTIFY_FROM'
    | 'NOTIFY_QUIET_HOURS'
    | 'NOTIFY_TIMEZONE'
    | 'LINK_SIGNING_SECRET'
    | 'STRIPE_WEBHOOK_SECRET'
    | 'PUBLIC_BASE_URL'
    | 'PORT'
  >;
  /** The SMTP sender; default: one built from SMTP_URL / NOTIFY_FROM when both are set. */
  mailer?: Mailer;
}

interface NoticeRow {
  id: number;
  dedup_key: string;
  customer_id: string;
  invoice_id: string | null;
  kind: NoticeKind;
  status: string;
  payload: NoticePayload & { noticeMinIntervalMs?: number; finalAction?: string | null };
}

/** Creates the notice activities. */
export function createNotifyActivities({ sql, config, mailer: given }: NotifyDeps) {
  const quiet = parseQuietHours(config.NOTIFY_QUIET_HOURS);
  let mailer: Mailer | null = given ?? null;
  const mailerOrNull = (): Mailer | null => {
    if (!mailer && emailEnabled(config)) mailer = createMailer({ url: config.SMTP_URL!, from: config.NOTIFY_FROM! });
    return mailer;
  };

  /** The customer's timezone (Stripe metadata), else NOTIFY_TIMEZONE. */
  async function timeZoneOf(db: Sql | TxSql, customerId: string): Promise<string> {
    const [row] = await db<{ timezone: string | null }[]>`SELECT timezone FROM customers WHERE id = ${customerId}`;
    return row?.timezone ?? config.NOTIFY_TIMEZONE;
  }

  /**
   * When the customer's notices recorded before `beforeId` go or went out (their latest due time: a
   * notice goes out when due, and due times are workflow time, like the `nowMs` they are compared with).
   */
  async function previousOutAt(db: Sql | TxSql, customerId: string, beforeId: number | null): Promise<number | null> {
    const [row] = await db<{ at: Date | null }[]>`
      SELECT max(COALESCE(due_at, created_at)) AS at FROM notifications
      WHERE customer_id = ${customerId} AND status IN ${db(TOLD)} AND (${beforeId}::bigint IS NULL OR id < ${beforeId})`;
    return row?.at ? row.at.getTime() : null;
  }

  return {
    /**
     * Records a notice in the ledger (at most once per dedup key): suppressed past the cycle cap, else
     * queued with the time it may go out. Its workflow, started by the outbox relay, sends it then.
     */
    async sendDunningNotice(input: SendNoticeInput): Promise<SendNoticeResult> {
      const dedupKey = noticeDedupKey({ invoiceId: input.invoiceId, kind: input.kind, attempt: input.attempt });
      const payload = {
        attempt: input.attempt,
        ...input.payload,
        noticeMinIntervalMs: input.policy.noticeMinIntervalMs,
        finalAction: input.policy.finalAction,
      };
      const result = await sql.begin(async (tx): Promise<SendNoticeResult> => {
        // Serializes the decision per customer: two cycles of one customer cannot both pass the caps.
        await tx`SELECT pg_advisory_xact_lock(hashtext(${`notify:${input.customerId}`}))`;
        const [existing] = await tx<{ status: string }[]>`SELECT status FROM notifications WHERE dedup_key = ${dedupKey}`;
        if (existing) return { status: 'duplicate', dedupKey, previous: existing.status };

        const [stats] = await tx<{ in_cycle: number }[]>`
          SELECT count(*)::int AS in_cycle FROM notifications
          WHERE customer_id = ${input.customerId} AND invoice_id = ${input.invoiceId} AND status IN ${tx(TOLD)}`;
        if (overCycleCap(input.kind, stats?.in_cycle ?? 0, input.policy)) {
          await tx`
            INSERT INTO notifications (dedup_key, customer_id, invoice_id, kind, status, payload, created_at, ended_at)
            VALUES (${dedupKey}, ${input.customerId}, ${input.invoiceId}, ${input.kind}, 'suppressed',
                    ${tx.json({ ...payload, suppressedBy: 'cycle_cap' } as never)}, ${new Date(input.atMs)}, ${new Date(input.atMs)})`;
          return { status: 'suppressed', dedupKey, reason: 'cycle_cap' };
        }
        const due = noticeDueAt({
          nowMs: input.atMs,
          kind: input.kind,
          previousOutAtMs: await previousOutAt(tx, input.customerId, null),
          minIntervalMs: input.policy.noticeMinIntervalMs,
          quiet,
          timeZone: await timeZoneOf(tx, input.customerId),
        });
        await tx`
          INSERT INTO notifications (dedup_key, customer_id, invoice_id, kind, status, payload, created_at, due_at, deferred_by)
          VALUES (${dedupKey}, ${input.customerId}, ${input.invoiceId}, ${input.kind}, 'queued',
                  ${tx.json(payload as never)}, ${new Date(input.atMs)}, ${new Date(due.dueAtMs)}, ${due.deferredBy})`;
        return { status: 'queued', dedupKey, dueAt: new Date(due.dueAtMs).toISOString(), deferredBy: due.deferredBy };
      });
      if (result.status === 'suppressed') log.info('notice over the cycle cap: not sent', { dedupKey, customerId: input.customerId });
      return result;
    },

    /** Cancels the invoice's notices that have not gone out; reports how many were canceled and how many went out. */
    async cancelQueuedNotices(input: { invoiceId: string }): Promise<{ canceled: number; sent: number }> {
      const canceled = await sql`
        UPDATE notifications SET status = 'canceled', ended_at = now(), last_error = COALESCE(last_error, 'superseded: the cycle ended')
        WHERE invoice_id = ${input.invoiceId} AND status IN ('queued', 'failed')
        RETURNING id`;
      const [sent] = await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM notifications WHERE invoice_id = ${input.invoiceId} AND status IN ('sent', 'sending')`;
      return { canceled: canceled.length, sent: sent?.n ?? 0 };
    },

    /**
     * What the notice's workflow does next, at workflow time `nowMs`: wait (cooldown, quiet hours),
     * send, or nothing (gone out, canceled, superseded by its invoice closing).
     */
    async planNotice(input: { id: number; nowMs: number }): Promise<NoticePlan> {
      const [row] = await sql<(NoticeRow & { invoice_status: string | null; timezone: string | null })[]>`
        SELECT n.id, n.dedup_key, n.customer_id, n.invoice_id, n.kind, n.status, n.payload, i.status AS invoice_status, c.timezone
        FROM notifications n
        LEFT JOIN invoices i ON i.id = n.invoice_id
        LEFT JOIN customers c ON c.id = n.customer_id
        WHERE n.id = ${input.id}`;
      if (!row) throw ApplicationFailure.nonRetryable(`notice ${input.id} is not in the ledger`, 'NoticeNotFound');
      if (row.status !== 'queued' && row.status !== 'failed') return { action: 'done', status: row.status };
      if (isSuperseded(row.kind, row.invoice_status)) {
        await sql`
          UPDATE notifications SET status = 'canceled', ended_at = now(), last_error = ${`superseded: invoice ${row.invoice_status}`}
          WHERE id = ${row.id} AND status IN ('queued', 'failed')`;
        log.info('notice superseded: its invoice is closed', { dedupKey: row.dedup_key, invoiceStatus: row.invoice_status });
        return { action: 'done', status: 'canceled' };
      }
      const due = noticeDueAt({
        nowMs: input.nowMs,
        kind: row.kind,
        previousOutAtMs: await previousOutAt(sql, row.customer_id, row.id),
        minIntervalMs: row.payload.noticeMinIntervalMs ?? 0,
        quiet,
        timeZone: row.timezone ?? config.NOTIFY_TIMEZONE,
      });
      if (due.deferredBy === null || due.dueAtMs <= input.nowMs) return { action: 'send' };
      await sql`
        UPDATE notifications SET due_at = ${new Date(due.dueAtMs)}, deferred_by = ${due.deferredBy}
        WHERE id = ${row.id} AND status IN ('queued', 'failed')`;
      return { action: 'wait', untilMs: due.dueAtMs, reason: due.deferredBy };
    },

    /**
     * Sends the notice's email once. The row is claimed ('sending') before the SMTP conversation; a
     * definite refusal sets it 'failed' and throws (retried); a permanent refusal, or an outcome that
     * cannot be known (the connection dropped after the message was sent, or an earlier attempt died
     * mid-send), gives up rather than risk a second email.
     */
    async sendNotice(input: { id: number }): Promise<SendOutcome> {
      const m = mailerOrNull();
      if (!m) throw ApplicationFailure.nonRetryable('email is not configured (SMTP_URL, NOTIFY_FROM)', 'EmailDisabled');
      const [claimed] = await sql<(NoticeRow & { attempts: number })[]>`
        UPDATE notifications SET status = 'sending', attempts = attempts + 1, last_attempt_at = now()
        WHERE id = ${input.id} AND status IN ('queued', 'failed')
        RETURNING id, dedup_key, customer_id, invoice_id, kind, status, payload, attempts`;
      if (!claimed) {
        const [row] = await sql<{ status: string }[]>`SELECT status FROM notifications WHERE id = ${input.id}`;
        if (!row) throw ApplicationFailure.nonRetryable(`notice ${input.id} is not in the ledger`, 'NoticeNotFound');
        if (row.status === 'sending') {
          const reason = 'outcome unknown: an earlier attempt stopped mid-send; not resent (at most one email per notice)';
          await giveUp(input.id, reason, 'sending');
          return { status: 'given_up', reason };
        }
        if (row.status === 'sent') return { status: 'already_sent', reason: 'sent before' };
        return { status: 'canceled', reason: `notice is ${row.status}` };
      }
      const email = await composeEmail(claimed);
      if (!email.to) {
        const reason = 'the customer has no email address';
        await giveUp(claimed.id, reason, 'sending');
        return { status: 'given_up', reason };
      }
      const messageId = messageIdFor(claimed.dedup_key, config.NOTIFY_FROM!);
      try {
        const sent = await m.send({ ...email.rendered, to: email.to, messageId, headers: { 'X-Billing-Notice': claimed.dedup_key } });
        await sql`
          UPDATE notifications SET status = 'sent', sent_at = now(), ended_at = now(), message_id = ${sent.messageId},
                 recipient = ${email.to}, last_error = NULL, channel = 'email'
          WHERE id = ${claimed.id}`;
        log.info('notice sent', { dedupKey: claimed.dedup_key, customerId: claimed.customer_id, kind: claimed.kind, messageId: sent.messageId });
        return { status: 'sent', messageId: sent.messageId };
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        if (err instanceof MailDeliveryError && err.definite && !err.permanent) {
          await sql`UPDATE notifications SET status = 'failed', last_error = ${message.slice(0, 500)} WHERE id = ${claimed.id} AND status = 'sending'`;
          throw ApplicationFailure.retryable(`SMTP refused the notice (attempt ${claimed.attempts}): ${message}`, 'NoticeSendFailed');
        }
        const reason =
          err instanceof MailDeliveryError && err.definite
            ? `refused permanently: ${message}`
            : `outcome unknown: ${message}; not resent (at most one email per notice)`;
        await giveUp(claimed.id, reason, 'sending');
        log.warn('notice given up', { dedupKey: claimed.dedup_key, reason });
        return { status: 'given_up', reason };
      }
    },

    /** Gives up a notice whose retries ran out (called by its workflow). */
    async giveUpNotice(input: { id: number; error: string }): Promise<void> {
      await giveUp(input.id, `retries exhausted: ${input.error}`, null);
    },
  };

  async function giveUp(id: number, reason: string, onlyFrom: string | null): Promise<void> {
    await sql`
      UPDATE notifications SET status = 'given_up', ended_at = now(), last_error = ${reason.slice(0, 500)}
      WHERE id = ${id} AND status IN ${sql(onlyFrom ? [onlyFrom] : ['queued', 'sending', 'failed'])}`;
  }

  /** The email of a notice: template by kind, with plan, amount, invoice link and card-update link. */
  async function composeEmail(row: NoticeRow) {
    const [d] = await sql<
      {
        email: string | null;
        name: string | null;
        timezone: string | null;
        amount_due: string | null;
        currency: string | null;
        hosted_invoice_url: string | null;
        plan_name: string | null;
        trial_end: Date | null;
        trial_missing_payment_method: 'cancel' | 'pause' | 'create_invoice' | null;
        has_payment_method: boolean;
      }[]
    >`
      SELECT c.email, c.name, c.timezone, i.amount_due, i.currency, i.hosted_invoice_url, p.name AS plan_name, s.trial_end,
        s.trial_missing_payment_method,
        (c.default_payment_method_id IS NOT NULL OR EXISTS (
          SELECT 1 FROM payment_methods pm WHERE pm.customer_id = c.id AND pm.attached)) AS has_payment_method
      FROM customers c
      LEFT JOIN invoices i ON i.id = ${row.invoice_id}
      LEFT JOIN LATERAL (
        SELECT plan_id, trial_end, trial_missing_payment_method FROM subscriptions
        WHERE customer_id = c.id AND (i.subscription_id IS NULL OR id = i.subscription_id)
        ORDER BY (id = i.subscription_id) DESC NULLS LAST, updated_at DESC LIMIT 1) s ON true
      LEFT JOIN plans p ON p.id = s.plan_id
      WHERE c.id = ${row.customer_id}`;
    const p = row.payload;
    const rendered = renderNotice(templateFor(row.kind, p.finalAction ?? null), {
      customerName: d?.name ?? null,
      planName: d?.plan_name ?? null,
      amountMinor: d?.amount_due == null ? null : Number(d.amount_due),
      currency: d?.currency ?? null,
      invoiceId: row.invoice_id,
      invoiceUrl: p.hostedInvoiceUrl ?? d?.hosted_invoice_url ?? null,
      cardUpdateUrl: cardUpdateUrl(row.customer_id, config),
      nextAttemptAt: p.nextAttemptAt ?? null,
      attempt: p.attempt ?? 0,
      maxAttempts: p.maxAttempts ?? 0,
      declineCode: p.declineCode ?? null,
      trialEndsAt: d?.trial_end ? d.trial_end.toISOString() : null,
      hasPaymentMethod: d ? d.has_payment_method : null,
      trialEndBehavior: d?.trial_missing_payment_method ?? null,
      timeZone: d?.timezone ?? config.NOTIFY_TIMEZONE,
    });
    return { to: d?.email ?? null, rendered };
  }
}

/** The notice activities, as registered. */
export type NotifyActivities = ReturnType<typeof createNotifyActivities>;
