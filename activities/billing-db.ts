/**
 * Postgres activities of the customer workflow. Each state change is written in ONE transaction
 * together with applied_events(event_id): a conflict there means "already applied" and is a no-op.
 */
import type { BillingEvent, SubscriptionData } from '../domain/billing-event';
import type { SubscriptionSnapshot } from '../domain/messages';
import {
  accessStateFor,
  compareWatermark,
  invoiceStatusRank,
  subscriptionStatusPrecedence,
} from '../domain/subscription-state';
import type { SubscriptionStatus } from '../domain/billing-event';
import type { Sql, TxSql } from '../lib/db';
import { logEvent } from './event-log';

export interface BillingDbDeps {
  sql: Sql;
}

/** The local subscription as the workflow needs it for search attributes and validators. */
export interface LocalSubscription {
  id: string;
  status: SubscriptionStatus;
  planId: string | null;
  priceId: string | null;
  currentPeriodEnd: number | null;
  cancelAtPeriodEnd: boolean;
  pendingPlanId: string | null;
}

export interface ApplyEventResult {
  outcome: 'applied' | 'duplicate' | 'stale' | 'tie' | 'noop';
  subscription: LocalSubscription | null;
}

export interface ApplyEventOptions {
  /** After a failed re-fetch: settle a same-second tie by status precedence instead of asking Stripe. */
  tieBreak?: 'precedence';
}

type Tx = TxSql;

class TieDetected extends Error {}

class BatchTie extends Error {
  constructor(readonly index: number) {
    super(`same-second tie at batch index ${index}`);
  }
}

const toTs = (s: number | null): Date | null => (s === null ? null : new Date(s * 1000));
const toUnix = (d: Date | null): number | null => (d === null ? null : Math.floor(d.getTime() / 1000));

/** Sets customers.access_state from the current subscription, held at 'grace' while a dunning cycle is open. */
export async function refreshAccessState(tx: TxSql, customerId: string): Promise<void> {
  const [row] = await tx<{ status: SubscriptionStatus | null; in_dunning: boolean }[]>`
    SELECT
      (SELECT status FROM subscriptions WHERE customer_id = ${customerId}
       ORDER BY (status NOT IN ('canceled', 'incomplete_expired')) DESC, stripe_updated_at DESC, updated_at DESC
       LIMIT 1) AS status,
      EXISTS (SELECT 1 FROM dunning_cycles WHERE customer_id = ${customerId} AND ended_at IS NULL) AS in_dunning`;
  let access = accessStateFor(row?.status ?? null);
  if (row?.in_dunning && (access === 'active' || access === 'grace')) access = 'grace';
  await tx`UPDATE customers SET access_state = ${access}, updated_at = now() WHERE id = ${customerId} AND access_state <> ${access}`;
}

/** Creates the database activities. */
export function createBillingDbActivities({ sql }: BillingDbDeps) {
  async function currentSubscription(tx: Tx | Sql, customerId: string): Promise<LocalSubscription | null> {
    // The customer's "current" subscription: a live one if any, else the most recently updated.
    const rows = await tx<
      {
        id: string;
        status: SubscriptionStatus;
        plan_id: string | null;
        price_id: string | null;
        current_period_end: Date | null;
        cancel_at_period_end: boolean;
        pending_plan_id: string | null;
      }[]
    >`
      SELECT id, status, plan_id, price_id, current_period_end, cancel_at_period_end, pending_plan_id
      FROM subscriptions
      WHERE customer_id = ${customerId}
      ORDER BY (status NOT IN ('canceled', 'incomplete_expired')) DESC, stripe_updated_at DESC, updated_at DESC
      LIMIT 1`;
    const r = rows[0];
    if (!r) return null;
    return {
      id: r.id,
      status: r.status,
      planId: r.plan_id,
      priceId: r.price_id,
      currentPeriodEnd: toUnix(r.current_period_end),
      cancelAtPeriodEnd: r.cancel_at_period_end,
      pendingPlanId: r.pending_plan_id,
    };
  }

  async function ensureCustomer(tx: Tx, customerId: string): Promise<void> {
    await tx`INSERT INTO customers (id) VALUES (${customerId}) ON CONFLICT (id) DO NOTHING`;
  }

  async function writeSubscription(
    tx: Tx,
    customerId: string,
    s: {
      subscriptionId: string;
      status: SubscriptionStatus;
      priceId: string | null;
      currentPeriodStart: number | null;
      currentPeriodEnd: number | null;
      cancelAtPeriodEnd: boolean;
      canceledAt: number | null;
      trialEnd: number | null;
    },
    watermark: { created: number; eventId: string | null },
  ): Promise<void> {
    // plan_id follows the price; a scheduled downgrade is cleared once Stripe shows the new plan.
    await tx`
      INSERT INTO subscriptions (
        id, customer_id, status, plan_id, price_id, current_period_start, current_period_end,
        cancel_at_period_end, canceled_at, trial_end, stripe_updated_at, watermark_event_id)
      VALUES (
        ${s.subscriptionId}, ${customerId}, ${s.status},
        (SELECT id FROM plans WHERE stripe_price_id = ${s.priceId}), ${s.priceId},
        ${toTs(s.currentPeriodStart)}, ${toTs(s.currentPeriodEnd)}, ${s.cancelAtPeriodEnd},
        ${toTs(s.canceledAt)}, ${toTs(s.trialEnd)}, ${toTs(watermark.created)}, ${watermark.eventId})
      ON CONFLICT (id) DO UPDATE SET
        customer_id = excluded.customer_id,
        status = excluded.status,
        plan_id = excluded.plan_id,
        price_id = excluded.price_id,
        current_period_start = excluded.current_period_start,
        current_period_end = excluded.current_period_end,
        cancel_at_period_end = excluded.cancel_at_period_end,
        canceled_at = excluded.canceled_at,
        trial_end = excluded.trial_end,
        pending_plan_id = CASE
          WHEN subscriptions.pending_plan_id IS NOT DISTINCT FROM excluded.plan_id THEN NULL
          WHEN excluded.status IN ('canceled', 'incomplete_expired') THEN NULL
          ELSE subscriptions.pending_plan_id END,
        pending_plan_effective_at = CASE
          WHEN subscriptions.pending_plan_id IS NOT DISTINCT FROM excluded.plan_id THEN NULL
          WHEN excluded.status IN ('canceled', 'incomplete_expired') THEN NULL
          ELSE subscriptions.pending_plan_effective_at END,
        needs_review = false,
        review_reason = NULL,
        stripe_updated_at = GREATEST(subscriptions.stripe_updated_at, excluded.stripe_updated_at),
        watermark_event_id = excluded.watermark_event_id,
        updated_at = now()
      -- A snapshot read before a newer event was applied must not roll that event back.
      WHERE subscriptions.stripe_updated_at <= excluded.stripe_updated_at`;
  }

  async function applySubscriptionEvent(tx: Tx, e: BillingEvent, d: SubscriptionData, opts: ApplyEventOptions): Promise<'applied' | 'stale'> {
    const rows = await tx<{ stripe_updated_at: Date; watermark_event_id: string | null; status: SubscriptionStatus }[]>`
      SELECT stripe_updated_at, watermark_event_id, status FROM subscriptions WHERE id = ${d.subscriptionId} FOR UPDATE`;
    const cur = rows[0];
    const verdict = compareWatermark(
      { created: e.created, eventId: e.eventId },
      { created: cur ? toUnix(cur.stripe_updated_at) : null, eventId: cur?.watermark_event_id ?? null },
    );
    if (verdict === 'stale') return 'stale';
    if (verdict === 'tie' && cur) {
      if (opts.tieBreak !== 'precedence') throw new TieDetected();
      if (subscriptionStatusPrecedence(d.status) < subscriptionStatusPrecedence(cur.status)) return 'stale';
    }
    await writeSubscription(tx, e.customerId, d, { created: e.created, eventId: e.eventId });
    return 'applied';
  }

  return {
    /** Applies one normalized event exactly once, guarded by the per-object watermark. */
    async applyBillingEvent(event: BillingEvent, opts: ApplyEventOptions = {}): Promise<ApplyEventResult> {
      try {
        const outcome = await sql.begin(async (tx) => {
          const result = await applyInTx(tx, event, opts);
          await refreshAccessState(tx, event.customerId);
          return result;
        });
        logApplied(event, outcome);
        return { outcome, subscription: await currentSubscription(sql, event.customerId) };
      } catch (err) {
        if (err instanceof TieDetected) return { outcome: 'tie', subscription: await currentSubscription(sql, event.customerId) };
        throw err;
      }
    },

    /**
     * Applies a run of one customer's events in order, in ONE transaction (one commit for the batch),
     * each exactly once under the same rules as applyBillingEvent. Returns one result per event applied;
     * if event k ties with the stored watermark (same second), events before k are committed, the result
     * for k is `tie` and the rest are not attempted: the workflow settles the tie and resubmits them.
     */
    async applyBillingEvents(events: BillingEvent[]): Promise<ApplyEventResult[]> {
      if (events.length === 0) return [];
      const customerId = events[0]!.customerId;
      if (events.some((e) => e.customerId !== customerId)) throw new Error('applyBillingEvents: a batch holds one customer');
      const applyFirst = (n: number) =>
        sql.begin(async (tx) => {
          const out: { outcome: ApplyEventResult['outcome']; subscription: LocalSubscription | null }[] = [];
          for (let i = 0; i < n; i++) {
            let outcome: Awaited<ReturnType<typeof applyInTx>>;
            try {
              outcome = await applyInTx(tx, events[i]!, {});
            } catch (err) {
              if (err instanceof TieDetected) throw new BatchTie(i);
              throw err;
            }
            out.push({ outcome, subscription: await currentSubscription(tx, customerId) });
          }
          await refreshAccessState(tx, customerId);
          return out;
        });
      let results: ApplyEventResult[];
      try {
        results = await applyFirst(events.length);
      } catch (err) {
        if (!(err instanceof BatchTie)) throw err;
        // The whole transaction rolled back: commit the events before the tie, report the tie.
        results = err.index > 0 ? await applyFirst(err.index) : [];
        results.push({ outcome: 'tie', subscription: await currentSubscription(sql, customerId) });
      }
      results.forEach((r, i) => r.outcome !== 'tie' && logApplied(events[i]!, r.outcome));
      return results;
    },

    /**
     * Writes a subscription object fetched from Stripe (the truth at fetch time). With an eventId it
     * settles a same-second tie for that event exactly once.
     */
    async applySubscriptionSnapshot(input: {
      snapshot: SubscriptionSnapshot;
      eventId: string | null;
      eventType: string | null;
      eventCreated: number | null;
    }): Promise<ApplyEventResult> {
      const { snapshot, eventId } = input;
      const outcome = await sql.begin(async (tx) => {
        if (eventId) {
          const inserted = await tx`
            INSERT INTO applied_events (event_id, customer_id, type, outcome)
            VALUES (${eventId}, ${snapshot.customerId}, ${input.eventType ?? 'refetch'}, 'refetched')
            ON CONFLICT (event_id) DO NOTHING RETURNING event_id`;
          if (inserted.length === 0) return 'duplicate' as const;
          await tx`
            UPDATE webhook_events SET status = 'applied', applied_at = now(), last_error = NULL
            WHERE event_id = ${eventId} AND status <> 'applied'`;
        }
        await ensureCustomer(tx, snapshot.customerId);
        const watermark = Math.max(snapshot.fetchedAt, input.eventCreated ?? 0);
        await writeSubscription(tx, snapshot.customerId, snapshot, { created: watermark, eventId });
        await refreshAccessState(tx, snapshot.customerId);
        return 'applied' as const;
      });
      if (eventId) logEvent('info', 'event applied from a Stripe re-fetch', { eventId, customerId: snapshot.customerId, type: input.eventType, outcome });
      return { outcome, subscription: await currentSubscription(sql, snapshot.customerId) };
    },

    /** Flags a local subscription that Stripe no longer knows, for a human to look at. */
    async flagSubscriptionForReview(input: { subscriptionId: string; reason: string }): Promise<void> {
      await sql`
        UPDATE subscriptions SET needs_review = true, review_reason = ${input.reason}, updated_at = now()
        WHERE id = ${input.subscriptionId}`;
    },

    /** Marks the drift rows of one object in one reconciliation run as repaired (or flagged). */
    async markDriftRepaired(input: { runId: string; objectId: string; repaired: boolean }): Promise<void> {
      await sql`
        UPDATE reconciliation_drift
        SET repair_status = ${input.repaired ? 'repaired' : 'flagged'}, repaired_at = now()
        WHERE run_id = ${input.runId} AND object_id = ${input.objectId} AND repair_status = 'pending'`;
    },

    /** Reads the customer's current local subscription. */
    async loadLocalSubscription(customerId: string): Promise<LocalSubscription | null> {
      return currentSubscription(sql, customerId);
    },
  };

  /** The body of applying one event inside a transaction (the caller refreshes the access state). */
  async function applyInTx(tx: Tx, event: BillingEvent, opts: ApplyEventOptions): Promise<'applied' | 'duplicate' | 'stale' | 'noop'> {
    const inserted = await tx`
      INSERT INTO applied_events (event_id, customer_id, type, outcome)
      VALUES (${event.eventId}, ${event.customerId}, ${event.type}, 'applied')
      ON CONFLICT (event_id) DO NOTHING
      RETURNING event_id`;
    if (inserted.length === 0) return 'duplicate';
    await ensureCustomer(tx, event.customerId);
    const result = await applyByKind(tx, event, opts);
    if (result !== 'applied') {
      await tx`UPDATE applied_events SET outcome = ${result} WHERE event_id = ${event.eventId}`;
    }
    await tx`
      UPDATE webhook_events SET status = 'applied', applied_at = now(), last_error = NULL
      WHERE event_id = ${event.eventId} AND status <> 'applied'`;
    return result;
  }

  function logApplied(event: BillingEvent, outcome: string): void {
    logEvent('info', 'event applied', { eventId: event.eventId, customerId: event.customerId, type: event.type, outcome });
  }

  async function applyByKind(tx: Tx, e: BillingEvent, opts: ApplyEventOptions): Promise<'applied' | 'stale' | 'noop'> {
    const d = e.data;
    switch (d.kind) {
      case 'subscription':
        return applySubscriptionEvent(tx, e, d, opts);

      case 'invoice': {
        if (e.type === 'invoice.upcoming') return 'noop'; // a forecast, not an invoice yet
        const rank = invoiceStatusRank(d.status);
        const res = await tx`
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
          -- same-second events: a status never moves backwards (paid beats open)
          WHERE excluded.stripe_updated_at > invoices.stripe_updated_at
             OR (excluded.stripe_updated_at = invoices.stripe_updated_at AND excluded.status_rank >= invoices.status_rank)
          RETURNING id`;
        return res.length > 0 ? 'applied' : 'stale';
      }

      case 'customer': {
        const res = await tx`
          UPDATE customers SET
            email = ${d.email}, name = ${d.name}, default_payment_method_id = ${d.defaultPaymentMethodId},
            deleted = ${d.deleted}, stripe_updated_at = ${toTs(e.created)}, watermark_event_id = ${e.eventId},
            updated_at = now()
          WHERE id = ${e.customerId}
            AND (stripe_updated_at IS NULL OR stripe_updated_at <= ${toTs(e.created)})
          RETURNING id`;
        return res.length > 0 ? 'applied' : 'stale';
      }

      case 'checkout_session': {
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
        return 'applied';
      }

      case 'payment_method': {
        await tx`
          INSERT INTO payment_methods (id, customer_id, type, card_brand, card_last4, attached)
          VALUES (${d.paymentMethodId}, ${e.customerId}, ${d.type}, ${d.cardBrand}, ${d.cardLast4}, ${!d.detached})
          ON CONFLICT (id) DO UPDATE SET attached = excluded.attached, card_brand = excluded.card_brand,
            card_last4 = excluded.card_last4, updated_at = now()`;
        return 'applied';
      }

      case 'dispute': {
        await tx`
          INSERT INTO disputes (id, customer_id, charge_id, amount, currency, reason, status)
          VALUES (${d.disputeId}, ${e.customerId}, ${d.chargeId}, ${d.amount}, ${d.currency}, ${d.reason}, ${d.status})
          ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason, updated_at = now()`;
        return 'applied';
      }

      case 'charge_refund': {
        await tx`
          INSERT INTO charges (id, customer_id, invoice_id, amount, amount_refunded, currency, refunded)
          VALUES (${d.chargeId}, ${e.customerId}, ${d.invoiceId}, ${d.amount}, ${d.amountRefunded}, ${d.currency}, ${d.refunded})
          ON CONFLICT (id) DO UPDATE SET amount_refunded = GREATEST(charges.amount_refunded, excluded.amount_refunded),
            refunded = charges.refunded OR excluded.refunded, updated_at = now()`;
        if (d.invoiceId) {
          await tx`
            UPDATE invoices SET amount_refunded = GREATEST(amount_refunded, ${d.amountRefunded}), updated_at = now()
            WHERE id = ${d.invoiceId}`;
        }
        return 'applied';
      }
    }
  }
}

export type BillingDbActivities = ReturnType<typeof createBillingDbActivities>;
