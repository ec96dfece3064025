/** Rows an event records without a watermark: checkout sessions, payment methods, disputes, charges. */
import type {
  BillingEvent,
  ChargeData,
  ChargeRefundData,
  CheckoutSessionData,
  DisputeData,
  EntitlementSummaryData,
  FraudWarningData,
  PaymentIntentData,
  PaymentMethodData,
} from '../../domain/billing-event';
import type { TxSql } from '../../lib/db';
import { toTs } from './shared';

export async function writeCheckoutSession(tx: TxSql, e: BillingEvent, d: CheckoutSessionData): Promise<void> {
  const status = e.type === 'checkout.session.expired' ? 'expired' : 'complete';
  const res = await tx`
    UPDATE checkout_sessions SET
      status = ${status},
      subscription_id = COALESCE(${d.subscriptionId}, subscription_id),
      completed_at = CASE WHEN ${status} = 'complete' THEN COALESCE(completed_at, ${toTs(e.created)}) ELSE completed_at END,
      expired_at = CASE WHEN ${status} = 'expired' THEN COALESCE(expired_at, ${toTs(e.created)}) ELSE expired_at END
    WHERE id = ${d.sessionId} AND status <> 'complete'
    RETURNING id`;
  if (res.length === 0 && d.planId) {
    // A session created outside this API (e.g. a Payment Link) whose plan we know.
    await tx`
      INSERT INTO checkout_sessions (id, customer_id, plan_id, status, subscription_id, completed_at, expired_at)
      SELECT ${d.sessionId}, ${e.customerId}, p.id, ${status}, ${d.subscriptionId},
             ${status === 'complete' ? toTs(e.created) : null}, ${status === 'expired' ? toTs(e.created) : null}
      FROM plans p WHERE p.id = ${d.planId}
      ON CONFLICT (id) DO NOTHING`;
  }
}

export async function writePaymentMethod(tx: TxSql, e: BillingEvent, d: PaymentMethodData): Promise<void> {
  await tx`
    INSERT INTO payment_methods (id, customer_id, type, card_brand, card_last4, attached)
    VALUES (${d.paymentMethodId}, ${e.customerId}, ${d.type}, ${d.cardBrand}, ${d.cardLast4}, ${!d.detached})
    ON CONFLICT (id) DO UPDATE SET attached = excluded.attached, card_brand = excluded.card_brand,
      card_last4 = excluded.card_last4, updated_at = now()
    WHERE payment_methods.customer_id = excluded.customer_id`;
}

export async function writeDispute(tx: TxSql, e: BillingEvent, d: DisputeData): Promise<void> {
  await tx`
    INSERT INTO disputes (id, customer_id, charge_id, amount, currency, reason, status)
    VALUES (${d.disputeId}, ${e.customerId}, ${d.chargeId}, ${d.amount}, ${d.currency}, ${d.reason}, ${d.status})
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason, updated_at = now()
    WHERE disputes.customer_id = excluded.customer_id
      -- A late 'created' never reopens a dispute that was already closed.
      AND (disputes.status IS NULL OR disputes.status NOT IN ('won', 'lost', 'warning_closed')
           OR excluded.status IN ('won', 'lost', 'warning_closed'))`;
}

export async function writeFraudWarning(tx: TxSql, e: BillingEvent, d: FraudWarningData): Promise<void> {
  await tx`
    INSERT INTO fraud_warnings (id, customer_id, charge_id, actionable, fraud_type)
    VALUES (${d.warningId}, ${e.customerId}, ${d.chargeId}, ${d.actionable}, ${d.fraudType})
    ON CONFLICT (id) DO NOTHING`;
}

/**
 * Records a succeeded charge for the event's customer. A charge of another customer is never moved; a
 * refund already recorded stays (a late charge.succeeded carries amount_refunded 0).
 */
export async function writeCharge(tx: TxSql, e: BillingEvent, d: ChargeData): Promise<void> {
  await tx`
    INSERT INTO charges (id, customer_id, invoice_id, payment_intent_id, amount, currency)
    VALUES (${d.chargeId}, ${e.customerId}, ${d.invoiceId}, ${d.paymentIntentId}, ${d.amount}, ${d.currency})
    ON CONFLICT (id) DO UPDATE SET
      invoice_id = COALESCE(charges.invoice_id, excluded.invoice_id),
      payment_intent_id = COALESCE(charges.payment_intent_id, excluded.payment_intent_id),
      amount = excluded.amount, currency = excluded.currency, updated_at = now()
    WHERE charges.customer_id = excluded.customer_id`;
}

/**
 * Records the charge a succeeded PaymentIntent settled with (`latest_charge`), if charge.succeeded did
 * not already: the charge's own event stays the authority on its amount.
 */
export async function writeIntentCharge(tx: TxSql, e: BillingEvent, d: PaymentIntentData): Promise<void> {
  if (!d.latestChargeId || d.amountReceived == null || !d.currency) return;
  await tx`
    INSERT INTO charges (id, customer_id, payment_intent_id, amount, currency)
    VALUES (${d.latestChargeId}, ${e.customerId}, ${d.paymentIntentId}, ${d.amountReceived}, ${d.currency})
    ON CONFLICT (id) DO UPDATE SET payment_intent_id = excluded.payment_intent_id, updated_at = now()
    WHERE charges.customer_id = excluded.customer_id AND charges.payment_intent_id IS NULL`;
}

export async function writeChargeRefund(tx: TxSql, e: BillingEvent, d: ChargeRefundData): Promise<void> {
  await tx`
    INSERT INTO charges (id, customer_id, invoice_id, amount, amount_refunded, currency, refunded)
    VALUES (${d.chargeId}, ${e.customerId}, ${d.invoiceId}, ${d.amount}, ${d.amountRefunded}, ${d.currency}, ${d.refunded})
    ON CONFLICT (id) DO UPDATE SET amount_refunded = GREATEST(charges.amount_refunded, excluded.amount_refunded),
      refunded = charges.refunded OR excluded.refunded, updated_at = now()
    WHERE charges.customer_id = excluded.customer_id`;
  if (d.invoiceId) {
    await tx`
      UPDATE invoices SET amount_refunded = GREATEST(amount_refunded, ${d.amountRefunded}), updated_at = now()
      WHERE id = ${d.invoiceId} AND customer_id = ${e.customerId}`;
  }
}

/**
 * Replaces the customer's active Stripe entitlement lookup keys (the summary is the whole set), unless a
 * newer summary was stored: watermarked by the event's `created`, a same-second later delivery wins.
 */
export async function writeStripeEntitlements(tx: TxSql, e: BillingEvent, d: EntitlementSummaryData): Promise<void> {
  await tx`
    INSERT INTO stripe_entitlements (customer_id, lookup_keys, stripe_updated_at, watermark_event_id)
    VALUES (${e.customerId}, ${d.lookupKeys}::text[], ${toTs(e.created)}, ${e.eventId})
    ON CONFLICT (customer_id) DO UPDATE SET
      lookup_keys = excluded.lookup_keys, stripe_updated_at = excluded.stripe_updated_at,
      watermark_event_id = excluded.watermark_event_id, updated_at = now()
    WHERE excluded.stripe_updated_at >= stripe_entitlements.stripe_updated_at`;
}
