/**
 * Activities of the dunning workflow: the configured policy, off-session invoice retries, the final
 * action in Stripe. Card declines come back as outcomes (the workflow decides what a decline means);
 * only transport failures are retried. The `dunning_cycles` / `dunning_attempts` writers here serve
 * cycles started before the dunning-reports-to-parent patch only; newer cycles report to their
 * customer workflow, which records them (activities/db/dunning-cycles.ts).
 */
import { ApplicationFailure } from '@temporalio/common';
import Stripe from 'stripe';
import type { DunningCycleState } from '../domain/dunning-cycle';
import {
  DEFAULT_DUNNING_POLICY,
  validateDunningPolicy,
  parseRetrySchedule,
  type DeclineClass,
  type DunningPolicy,
} from '../domain/dunning-policy';
import type { SubscriptionSnapshot } from '../domain/messages';
import { subscriptionSnapshotFromStripe } from '../domain/stripe-objects';
import { refreshAccessState } from './billing-db';
import { lockCustomer } from './db/shared';
import type { Config } from '../lib/config';
import type { Sql } from '../lib/db';
import { isStripeNotFound, mapStripeError } from './errors';

/** Dependencies of the dunning activities (`now` for the snapshot time in tests). */
export interface DunningDeps {
  sql: Sql;
  stripe: Pick<Stripe, 'invoices' | 'subscriptions' | 'invoicePayments'>;
  config: Pick<Config, 'DUNNING_RETRY_DAYS' | 'DUNNING_FINAL_ACTION'>;
  now?: () => number;
}

/** Result of one off-session retry. 'invoice_closed': the invoice was voided or written off meanwhile. */
export interface RetryPaymentResult {
  outcome: 'succeeded' | 'failed' | 'requires_action' | 'invoice_closed' | 'error';
  declineCode: string | null;
  /** Stripe's advice on the decline (do_not_try_again, try_again_later, confirm_card_data). */
  adviceCode?: string | null;
}

/** Decline data of an invoice's latest failed payment (the PaymentIntent's last_payment_error). */
export interface InvoiceDecline {
  paymentIntentId: string;
  declineCode: string | null;
  adviceCode: string | null;
  networkDeclineCode: string | null;
  failureCode: string | null;
}

/** What triggered an attempt (`dunning_attempts.trigger`). */
export type AttemptTrigger = 'schedule' | 'payment_method' | 'manual';

/** Idempotency key of retry `attempt` of an invoice: a business id, so every activity retry reuses it. */
export const dunningAttemptKey = (invoiceId: string, attempt: number): string => `dunning:${invoiceId}:${attempt}`;

/** Stripe error codes meaning the payment needs the customer to authenticate (3DS). */
const AUTHENTICATION_CODES = new Set(['authentication_required', 'invoice_payment_intent_requires_action']);

const toTs = (ms: number | null): Date | null => (ms === null ? null : new Date(ms));

/** Creates the dunning activities. */
export function createDunningActivities({ sql, stripe, config, now = () => Date.now() }: DunningDeps) {

  function snapshotOf(sub: unknown): SubscriptionSnapshot | null {
    return subscriptionSnapshotFromStripe(sub, Math.floor(now() / 1000));
  }

  return {
    /** The dunning policy from configuration (DUNNING_RETRY_DAYS, DUNNING_FINAL_ACTION). */
    async getDunningPolicy(): Promise<DunningPolicy> {
      try {
        const checked = validateDunningPolicy({
          ...DEFAULT_DUNNING_POLICY,
          retryDaysAfterFailure: parseRetrySchedule(config.DUNNING_RETRY_DAYS),
          finalAction: config.DUNNING_FINAL_ACTION,
        });
        if (!checked.ok) throw new Error(checked.error);
        return checked.policy;
      } catch (err) {
        // A bad setting does not heal by retrying: fail fast and let the workflow fall back loudly.
        throw ApplicationFailure.create({
          message: `invalid dunning configuration: ${err instanceof Error ? err.message : String(err)}`,
          type: 'InvalidDunningConfig',
          nonRetryable: true,
          cause: err instanceof Error ? err : undefined,
        });
      }
    },

    /** Opens the invoice's cycle, or joins the one already recorded; the customer enters 'grace'. */
    async openDunningCycle(input: {
      invoiceId: string;
      customerId: string;
      subscriptionId: string | null;
      workflowId: string;
      maxAttempts: number;
      declineCode: string | null;
      declineClass: DeclineClass;
      atMs: number;
    }): Promise<{ created: boolean }> {
      return sql.begin(async (tx) => {
        await lockCustomer(tx, input.customerId);
        await tx`INSERT INTO customers (id) VALUES (${input.customerId}) ON CONFLICT (id) DO NOTHING`;
        const [row] = await tx<{ created: boolean }[]>`
          INSERT INTO dunning_cycles (
            invoice_id, customer_id, subscription_id, workflow_id, state, attempts_made, max_attempts,
            first_decline_code, last_decline_code, decline_class, started_at)
          VALUES (
            ${input.invoiceId}, ${input.customerId}, ${input.subscriptionId}, ${input.workflowId}, 'retrying', 0,
            ${input.maxAttempts}, ${input.declineCode}, ${input.declineCode}, ${input.declineClass}, ${new Date(input.atMs)})
          ON CONFLICT (invoice_id) DO UPDATE SET updated_at = now()
          RETURNING (xmax = 0) AS created`;
        await refreshAccessState(tx, input.customerId);
        return { created: row?.created ?? false };
      });
    },

    /** Records the cycle's current state; with `endedAtMs` closes it and re-derives the customer's access. */
    async recordDunningProgress(input: {
      invoiceId: string;
      customerId: string;
      state: DunningCycleState;
      attemptsMade: number;
      nextAttemptAtMs: number | null;
      lastDeclineCode: string | null;
      declineClass: DeclineClass;
      finalAction: DunningPolicy['finalAction'] | null;
      endedAtMs: number | null;
    }): Promise<void> {
      await sql.begin(async (tx) => {
        await lockCustomer(tx, input.customerId);
        // A closed cycle is history: a late or repeated write never reopens it.
        await tx`
          UPDATE dunning_cycles SET
            state = ${input.state},
            attempts_made = GREATEST(attempts_made, ${input.attemptsMade}),
            next_attempt_at = ${toTs(input.nextAttemptAtMs)},
            last_decline_code = COALESCE(${input.lastDeclineCode}, last_decline_code),
            decline_class = ${input.declineClass},
            final_action = COALESCE(${input.finalAction}, final_action),
            ended_at = ${toTs(input.endedAtMs)},
            updated_at = now()
          WHERE invoice_id = ${input.invoiceId} AND ended_at IS NULL`;
        if (input.endedAtMs !== null) await refreshAccessState(tx, input.customerId);
      });
    },

    /** Records one attempt and its outcome (idempotent per invoice and attempt). */
    async recordDunningAttempt(input: {
      invoiceId: string;
      attempt: number;
      trigger: AttemptTrigger;
      outcome: RetryPaymentResult['outcome'];
      declineCode: string | null;
      atMs: number;
    }): Promise<void> {
      const outcome = input.outcome === 'invoice_closed' ? 'error' : input.outcome;
      await sql.begin(async (tx) => {
        await tx`
          INSERT INTO dunning_attempts (invoice_id, attempt, trigger, outcome, decline_code, idempotency_key, attempted_at)
          VALUES (${input.invoiceId}, ${input.attempt}, ${input.trigger}, ${outcome}, ${input.declineCode},
                  ${dunningAttemptKey(input.invoiceId, input.attempt)}, ${new Date(input.atMs)})
          ON CONFLICT (invoice_id, attempt) DO UPDATE SET outcome = excluded.outcome, decline_code = excluded.decline_code`;
        await tx`
          UPDATE dunning_cycles SET attempts_made = GREATEST(attempts_made, ${input.attempt}), updated_at = now()
          WHERE invoice_id = ${input.invoiceId}`;
      });
    },

    /**
     * Retries the invoice off-session with the customer's saved payment method. Declines and
     * authentication requests are outcomes; network errors, 5xx and 429 are thrown retryable.
     */
    async retryInvoicePayment(input: {
      invoiceId: string;
      attempt: number;
      /** A new payment method the customer just added: it becomes the subscription's default and pays the invoice. */
      paymentMethodId?: string | null;
      subscriptionId?: string | null;
    }): Promise<RetryPaymentResult> {
      const { invoiceId, paymentMethodId } = input;
      try {
        if (paymentMethodId && input.subscriptionId) {
          // Later renewals must use it too, not the card that just failed.
          await stripe.subscriptions.update(
            input.subscriptionId,
            { default_payment_method: paymentMethodId },
            { idempotencyKey: `${dunningAttemptKey(invoiceId, input.attempt)}:default-payment-method` },
          );
        }
        const invoice = await stripe.invoices.pay(
          invoiceId,
          paymentMethodId ? { off_session: true, payment_method: paymentMethodId } : { off_session: true },
          { idempotencyKey: dunningAttemptKey(invoiceId, input.attempt) },
        );
        if (invoice.status === 'paid') return { outcome: 'succeeded', declineCode: null };
        if (invoice.status === 'void' || invoice.status === 'uncollectible') return { outcome: 'invoice_closed', declineCode: null };
        // Answered 200 but not paid (localstripe does this for declines and 3DS): a failure without a code.
        const error = invoice.last_finalization_error;
        return { outcome: 'failed', declineCode: error?.decline_code ?? error?.code ?? null };
      } catch (err) {
        if (!(err instanceof Stripe.errors.StripeError)) throw err;
        const code = err.decline_code ?? err.code ?? null;
        if (AUTHENTICATION_CODES.has(err.code ?? '') || AUTHENTICATION_CODES.has(err.decline_code ?? '')) {
          return { outcome: 'requires_action', declineCode: 'authentication_required' };
        }
        if (err instanceof Stripe.errors.StripeCardError) return { outcome: 'failed', declineCode: code, adviceCode: err.advice_code ?? null };
        if (err instanceof Stripe.errors.StripeInvalidRequestError) {
          // Not payable any more: paid meanwhile (another attempt, the customer), voided, or written off.
          const invoice = await stripe.invoices.retrieve(invoiceId).catch(() => null);
          if (invoice?.status === 'paid') return { outcome: 'succeeded', declineCode: null };
          if (invoice && invoice.status !== 'open' && invoice.status !== 'draft') return { outcome: 'invoice_closed', declineCode: null };
          return { outcome: 'error', declineCode: code };
        }
        return mapStripeError(err, `pay invoice ${invoiceId} (attempt ${input.attempt})`);
      }
    },

    /** The invoice's hosted payment page (for authentication and payment links): local copy first, else Stripe. */
    async invoicePaymentLink(input: { invoiceId: string }): Promise<string | null> {
      const [row] = await sql<{ hosted_invoice_url: string | null }[]>`
        SELECT hosted_invoice_url FROM invoices WHERE id = ${input.invoiceId}`;
      if (row?.hosted_invoice_url) return row.hosted_invoice_url;
      try {
        const invoice = await stripe.invoices.retrieve(input.invoiceId);
        return invoice.hosted_invoice_url ?? null;
      } catch (err) {
        if (isStripeNotFound(err)) return null;
        return mapStripeError(err, `retrieve invoice ${input.invoiceId}`);
      }
    },

    /**
     * Applies the policy's final action in Stripe and returns the subscription as Stripe now has it.
     * - cancel: `subscriptions.cancel` (no proration, no final invoice).
     * - mark_uncollectible: `invoices.markUncollectible`; the subscription continues, local access is
     *   suspended by the uncollectible invoice until it is paid. (The retired 'mark_unpaid' maps here.)
     * - leave_past_due: nothing changes; the subscription is read back.
     */
    async applyDunningFinalAction(input: {
      invoiceId: string;
      subscriptionId: string;
      finalAction: DunningPolicy['finalAction'] | 'mark_unpaid';
    }): Promise<{ snapshot: SubscriptionSnapshot | null }> {
      const { subscriptionId, invoiceId } = input;
      const idempotencyKey = `dunning:${invoiceId}:final`;
      const finalAction = input.finalAction === 'mark_unpaid' ? 'mark_uncollectible' : input.finalAction;
      try {
        switch (finalAction) {
          case 'cancel':
            return {
              snapshot: snapshotOf(
                await stripe.subscriptions.cancel(
                  subscriptionId,
                  { prorate: false, invoice_now: false, cancellation_details: { comment: `dunning exhausted for ${invoiceId}` } },
                  { idempotencyKey },
                ),
              ),
            };
          case 'mark_uncollectible':
            await stripe.invoices.markUncollectible(invoiceId, {}, { idempotencyKey });
            return { snapshot: snapshotOf(await stripe.subscriptions.retrieve(subscriptionId)) };
          case 'leave_past_due':
            return { snapshot: snapshotOf(await stripe.subscriptions.retrieve(subscriptionId)) };
        }
      } catch (err) {
        if (isStripeNotFound(err)) return { snapshot: null };
        if (err instanceof Stripe.errors.StripeInvalidRequestError) {
          // Typically already canceled or the invoice already closed: nothing left to do, report what Stripe has.
          const sub = await stripe.subscriptions.retrieve(subscriptionId).catch(() => null);
          if (sub && (sub.status === 'canceled' || finalAction !== 'cancel')) return { snapshot: snapshotOf(sub) };
        }
        return mapStripeError(err, `final action ${finalAction} on ${subscriptionId}`);
      }
    },

    /**
     * The decline data of the invoice's latest failed payment, from the source: the invoice payments
     * (basil+ invoices carry no charge or payment_intent, and webhooks are never expanded) and the
     * PaymentIntent's `last_payment_error`. Null when Stripe has no failed payment for it.
     */
    async fetchInvoiceDecline(input: { invoiceId: string }): Promise<InvoiceDecline | null> {
      try {
        const page = await stripe.invoicePayments.list({ invoice: input.invoiceId, limit: 10, expand: ['data.payment.payment_intent'] });
        const withErrors = page.data
          .map((p) => ({ created: p.created, pi: p.payment?.payment_intent }))
          .filter((p): p is { created: number; pi: Stripe.PaymentIntent } => typeof p.pi === 'object' && p.pi !== null && p.pi.last_payment_error != null)
          .sort((a, b) => b.created - a.created);
        const latest = withErrors[0];
        if (!latest) return null;
        const e = latest.pi.last_payment_error!;
        return {
          paymentIntentId: latest.pi.id,
          declineCode: e.decline_code ?? null,
          adviceCode: e.advice_code ?? null,
          networkDeclineCode: e.network_decline_code ?? null,
          failureCode: e.code ?? null,
        };
      } catch (err) {
        if (isStripeNotFound(err)) return null;
        return mapStripeError(err, `list payments of invoice ${input.invoiceId}`);
      }
    },

    /** The invoice's status at Stripe now (the final action re-reads it first); null when Stripe does not know it. */
    async fetchInvoiceStatus(input: { invoiceId: string }): Promise<{ status: string | null } | null> {
      try {
        const invoice = await stripe.invoices.retrieve(input.invoiceId);
        return { status: invoice.status ?? null };
      } catch (err) {
        if (isStripeNotFound(err)) return null;
        return mapStripeError(err, `retrieve invoice ${input.invoiceId}`);
      }
    },

    /** Voids an open invoice (an expired upgrade's proration invoice); an invoice already closed is left as it is. */
    async voidInvoice(input: { invoiceId: string; reason: string }): Promise<{ status: string | null }> {
      try {
        const invoice = await stripe.invoices.voidInvoice(input.invoiceId, {}, { idempotencyKey: `void:${input.invoiceId}` });
        return { status: invoice.status ?? null };
      } catch (err) {
        if (isStripeNotFound(err)) return { status: null };
        if (err instanceof Stripe.errors.StripeInvalidRequestError) {
          const invoice = await stripe.invoices.retrieve(input.invoiceId).catch(() => null);
          if (invoice && invoice.status !== 'open') return { status: invoice.status ?? null };
        }
        return mapStripeError(err, `void invoice ${input.invoiceId} (${input.reason})`);
      }
    },
  };
}

/** The dunning activities, as registered. */
export type DunningActivities = ReturnType<typeof createDunningActivities>;
