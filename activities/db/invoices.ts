/** The `invoices` rows: the reducer's facts and the guarded upsert. */
import type { BillingEvent, InvoiceData, PaymentIntentData } from '../../domain/billing-event';
import type { InvoiceFact } from '../../domain/billing/state';
import { invoiceStatusRank } from '../../domain/subscription-state';
import type { TxSql } from '../../lib/db';
import { toTs, toUnix } from './shared';

/** The stored invoice's status and watermark, locked for the transaction. */
export async function loadInvoiceFact(tx: TxSql, invoiceId: string): Promise<InvoiceFact | null> {
  const [row] = await tx<{ subscription_id: string | null; status: string | null; status_rank: number; stripe_updated_at: Date; watermark_event_id: string | null }[]>`
    SELECT subscription_id, status, status_rank, stripe_updated_at, watermark_event_id FROM invoices WHERE id = ${invoiceId} FOR UPDATE`;
  if (!row) return null;
  return {
    id: invoiceId,
    subscriptionId: row.subscription_id,
    status: row.status,
    statusRank: row.status_rank,
    watermark: { created: toUnix(row.stripe_updated_at) ?? 0, eventId: row.watermark_event_id },
  };
}

/** The invoice a PaymentIntent paid (the payload's link on old API versions, else the local join), locked. */
export async function loadInvoiceOfPaymentIntent(tx: TxSql, customerId: string, paymentIntentId: string, invoiceId: string | null): Promise<InvoiceFact | null> {
  if (invoiceId) return loadInvoiceFact(tx, invoiceId);
  const [row] = await tx<{ id: string }[]>`
    SELECT id FROM invoices WHERE payment_intent_id = ${paymentIntentId} AND customer_id = ${customerId} ORDER BY created_at DESC LIMIT 1`;
  return row ? loadInvoiceFact(tx, row.id) : null;
}

/** Open proration invoices of a plan change on `subscriptionId` (voided when its payment window expires). */
export async function loadOpenUpgradeInvoices(tx: TxSql, customerId: string, subscriptionId: string): Promise<string[]> {
  const rows = await tx<{ id: string }[]>`
    SELECT id FROM invoices
    WHERE customer_id = ${customerId} AND subscription_id = ${subscriptionId} AND status = 'open' AND billing_reason = 'subscription_update'
    ORDER BY id`;
  return rows.map((r) => r.id);
}

/**
 * Records a PaymentIntent's decline data on its invoice (when the invoice is known locally), unless a
 * charge of the PaymentIntent succeeded: a succeeded intent never fails again, so that decline is old.
 */
export async function writePaymentIntentDecline(tx: TxSql, e: BillingEvent, d: PaymentIntentData): Promise<void> {
  const fact = await loadInvoiceOfPaymentIntent(tx, e.customerId, d.paymentIntentId, d.invoiceId);
  if (!fact) return;
  await tx`
    UPDATE invoices SET
      payment_intent_id = COALESCE(payment_intent_id, ${d.paymentIntentId}),
      last_decline_code = COALESCE(${d.declineCode ?? d.failureCode}, last_decline_code),
      last_advice_code = COALESCE(${d.adviceCode}, last_advice_code),
      updated_at = now()
    WHERE id = ${fact.id} AND customer_id = ${e.customerId}
      AND NOT EXISTS (SELECT 1 FROM charges WHERE payment_intent_id = ${d.paymentIntentId} AND customer_id = ${e.customerId})`;
}

/** A PaymentIntent succeeded: the decline recorded on its invoice is cleared, as Stripe clears `last_payment_error`. */
export async function clearPaymentIntentDecline(tx: TxSql, e: BillingEvent, d: PaymentIntentData): Promise<void> {
  const fact = await loadInvoiceOfPaymentIntent(tx, e.customerId, d.paymentIntentId, d.invoiceId);
  if (!fact) return;
  await tx`
    UPDATE invoices SET
      payment_intent_id = COALESCE(payment_intent_id, ${d.paymentIntentId}),
      last_decline_code = NULL,
      last_advice_code = NULL,
      updated_at = now()
    WHERE id = ${fact.id} AND customer_id = ${e.customerId}`;
}

/** Upserts an invoice event; the WHERE repeats the reducer's rule (newer, or same second and not backwards; never back to draft). */
export async function writeInvoice(tx: TxSql, e: BillingEvent, d: InvoiceData): Promise<void> {
  const rank = invoiceStatusRank(d.status);
  await tx`
    INSERT INTO invoices (
      id, customer_id, subscription_id, status, amount_due, amount_paid, currency, attempt_count,
      next_payment_attempt, billing_reason, hosted_invoice_url, payment_intent_id, last_decline_code,
      period_end, paid_at, stripe_updated_at, status_rank, watermark_event_id)
    VALUES (
      ${d.invoiceId}, ${e.customerId}, ${d.subscriptionId}, ${d.status}, ${d.amountDue}, ${d.amountPaid},
      ${d.currency}, ${d.attemptCount}, ${toTs(d.nextPaymentAttempt)}, ${d.billingReason},
      ${d.hostedInvoiceUrl}, ${d.paymentIntentId}, ${d.declineCode ?? d.failureCode}, ${toTs(d.periodEnd)},
      ${d.status === 'paid' ? toTs(e.created) : null}, ${toTs(e.created)}, ${rank}, ${e.eventId})
    ON CONFLICT (id) DO UPDATE SET
      subscription_id = COALESCE(excluded.subscription_id, invoices.subscription_id),
      status = excluded.status,
      amount_due = excluded.amount_due,
      amount_paid = excluded.amount_paid,
      attempt_count = GREATEST(invoices.attempt_count, excluded.attempt_count),
      next_payment_attempt = excluded.next_payment_attempt,
      billing_reason = COALESCE(excluded.billing_reason, invoices.billing_reason),
      hosted_invoice_url = COALESCE(excluded.hosted_invoice_url, invoices.hosted_invoice_url),
      payment_intent_id = COALESCE(excluded.payment_intent_id, invoices.payment_intent_id),
      last_decline_code = COALESCE(excluded.last_decline_code, invoices.last_decline_code),
      period_end = COALESCE(excluded.period_end, invoices.period_end),
      paid_at = COALESCE(invoices.paid_at, excluded.paid_at),
      stripe_updated_at = excluded.stripe_updated_at,
      status_rank = excluded.status_rank,
      watermark_event_id = excluded.watermark_event_id,
      updated_at = now()
    WHERE (excluded.stripe_updated_at > invoices.stripe_updated_at
       OR (excluded.stripe_updated_at = invoices.stripe_updated_at AND excluded.status_rank >= invoices.status_rank))
      AND (excluded.status IS DISTINCT FROM 'draft' OR invoices.status IS NULL OR invoices.status = 'draft')
      AND invoices.customer_id = excluded.customer_id`;
}
