/**
 * The apply transaction: for each event, under the customer's advisory lock, read the facts, run the
 * reducer (domain/billing/reducer.ts), then write the rows, the cycle changes, applied_events and the
 * effects together. Re-applying an applied event returns the effects recorded for it, so a re-run
 * after a commit (a crash, a timeout, a failed read) runs them again; each effect is idempotent by key.
 * A data error quarantines only the event that caused it (a savepoint per event).
 */
import { trace } from '@opentelemetry/api';
import { BillingEventSchema, type BillingEvent } from '../../domain/billing-event';
import type { Effect } from '../../domain/billing/effects';
import { reduceBillingEvent, reduceSubscriptionSnapshot, type ReduceOptions, type Reduction } from '../../domain/billing/reducer';
import type { BillingSlice, LocalSubscription } from '../../domain/billing/state';
import type { SubscriptionSnapshot } from '../../domain/messages';
import type { Sql, TxSql } from '../../lib/db';
import { inStoredTrace } from '../../lib/tracing';
import { logEvent } from '../event-log';
import { ensureCustomer, loadCustomerWatermark, refreshAccessState, writeCustomer } from './customers';
import { applyCycleChanges, loadCycleFacts } from './dunning-cycles';
import { claimEvent, markDelivered, setOutcome, storeEffects } from './applied';
import { appEventsOfApplied, loadCustomerView, recordViewChange } from './app-events';
import { DataError, describeError, isDataError, quarantineEvent } from './failure-policy';
import {
  clearPaymentIntentDecline,
  loadInvoiceFact,
  loadInvoiceOfPaymentIntent,
  loadOpenUpgradeInvoices,
  writeInvoice,
  writePaymentIntentDecline,
} from './invoices';
import { writeCharge, writeChargeRefund, writeCheckoutSession, writeDispute, writeFraudWarning, writeIntentCharge, writePaymentMethod, writeStripeEntitlements } from './records';
import { countInActivity } from '../metrics';
import { lockCustomer } from './shared';
import { loadCurrentSubscription, loadPausedTrialIds, loadSubscriptionFact, loadUsablePaymentMethodId, writeSubscription } from './subscriptions';

/** Test-only fault hooks of the apply path (chaos, simulation). */
export interface ApplyFaults {
  /** Called after the apply transaction committed; true makes the activity fail as if the worker died then. */
  afterCommit?: (eventIds: readonly string[]) => boolean;
}

export interface ApplyDeps {
  sql: Sql;
  /** Retries in the configured dunning schedule (a new cycle row's max_attempts until the child reports). */
  dunningMaxAttempts: number;
  faults?: ApplyFaults;
  /** Record events for the app (app_webhooks) in the apply transaction: APP_WEBHOOK_URL is set. */
  appEvents?: boolean;
}

export type ApplyOutcome = 'applied' | 'duplicate' | 'stale' | 'tie' | 'noop' | 'quarantined' | 'refused';

/** What applying one event did. */
export interface ApplyEventResult {
  outcome: ApplyOutcome;
  /** For a duplicate: the outcome recorded when it was first applied. */
  firstOutcome?: string | null;
  /** The effects of the event (recorded ones for a duplicate); the workflow runs them, idempotently. */
  effects?: Effect[];
  /** For a quarantined event: why. */
  error?: string;
  subscription: LocalSubscription | null;
}

export interface ApplyEventOptions extends ReduceOptions {}

class TieDetected extends Error {}

type OneResult = Omit<ApplyEventResult, 'subscription'>;

/** Creates the apply activities' core (composed into createBillingDbActivities). */
export function createApply({ sql, dunningMaxAttempts, faults, appEvents = false }: ApplyDeps) {
  /** The app's view of the customer before the transaction's writes (null: app events are off). */
  const viewBefore = (tx: TxSql, customerId: string) => (appEvents ? loadCustomerView(tx, customerId) : Promise.resolve(null));

  /** Records the app events of applied events: their view change (caused by the last applied one) and their effects'. */
  async function recordAppEventsOf(tx: TxSql, customerId: string, before: Awaited<ReturnType<typeof viewBefore>>, applied: { event: BillingEvent; r: OneResult }[]) {
    if (!before) return;
    const fresh = applied.filter((a) => a.r.outcome === 'applied');
    const cause = fresh.length > 0 ? fresh[fresh.length - 1]!.event.eventId : null;
    await recordViewChange(tx, customerId, before, cause, fresh.flatMap((a) => appEventsOfApplied(a.event, a.r.effects ?? [])));
  }

  /** Reads the facts the reducer needs for one event (rows locked for the transaction). */
  async function sliceFor(tx: TxSql, event: BillingEvent): Promise<BillingSlice> {
    const d = event.data;
    const invoice =
      d.kind === 'invoice'
        ? await loadInvoiceFact(tx, d.invoiceId)
        : d.kind === 'payment_intent'
          ? await loadInvoiceOfPaymentIntent(tx, event.customerId, d.paymentIntentId, d.invoiceId)
          : null;
    const subscriptionId = d.kind === 'subscription' ? d.subscriptionId : d.kind === 'invoice' ? (d.subscriptionId ?? invoice?.subscriptionId ?? null) : null;
    return {
      customerId: event.customerId,
      subscription: subscriptionId ? await loadSubscriptionFact(tx, subscriptionId) : null,
      invoice,
      customerWatermark: d.kind === 'customer' ? await loadCustomerWatermark(tx, event.customerId) : null,
      cycles: await loadCycleFacts(tx, event.customerId),
      openUpgradeInvoices:
        d.kind === 'subscription' && event.type === 'customer.subscription.pending_update_expired'
          ? await loadOpenUpgradeInvoices(tx, event.customerId, d.subscriptionId)
          : [],
      pausedTrialIds: bringsPaymentMethod(event) ? await loadPausedTrialIds(tx, event.customerId) : [],
      usablePaymentMethodId: d.kind === 'subscription' && d.status === 'paused' ? await loadUsablePaymentMethodId(tx, event.customerId) : null,
    };
  }

  /** Events after which the customer may have a payment method it lacked (the reducer decides whether it does). */
  function bringsPaymentMethod(e: BillingEvent): boolean {
    return e.type === 'customer.updated' || e.type === 'payment_method.attached' || e.type === 'setup_intent.succeeded';
  }

  async function writeRows(tx: TxSql, e: BillingEvent): Promise<void> {
    const d = e.data;
    switch (d.kind) {
      case 'subscription':
        return writeSubscription(tx, e.customerId, d, { created: e.created, eventId: e.eventId });
      case 'invoice':
        return writeInvoice(tx, e, d);
      case 'customer':
        return writeCustomer(tx, e.customerId, d, e);
      case 'checkout_session':
        return writeCheckoutSession(tx, e, d);
      case 'payment_method':
        return writePaymentMethod(tx, e, d);
      case 'dispute':
        return writeDispute(tx, e, d);
      case 'charge':
        return writeCharge(tx, e, d);
      case 'charge_refund':
        return writeChargeRefund(tx, e, d);
      case 'payment_intent':
        if (e.type !== 'payment_intent.succeeded') return writePaymentIntentDecline(tx, e, d);
        // The charge row also marks the intent succeeded for a decline delivered late (writePaymentIntentDecline).
        await writeIntentCharge(tx, e, d);
        return clearPaymentIntentDecline(tx, e, d);
      case 'setup_intent':
        return; // nothing stored: the reducer hands the new payment method to open cycles
      case 'fraud_warning':
        return writeFraudWarning(tx, e, d);
      case 'entitlement_summary':
        return writeStripeEntitlements(tx, e, d);
    }
  }

  /** Applies one event inside the caller's transaction. Throws TieDetected (nothing written) on a same-second tie. */
  async function applyInTx(tx: TxSql, event: BillingEvent, opts: ApplyEventOptions): Promise<OneResult> {
    const parsed = BillingEventSchema.safeParse(event);
    if (!parsed.success) throw new DataError(`event does not parse: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const already = await claimEvent(tx, event, 'applied');
    if (already) return already;
    await ensureCustomer(tx, event.customerId);
    const reduction: Reduction = reduceBillingEvent(await sliceFor(tx, event), event, opts);
    if (reduction.verdict === 'tie') throw new TieDetected();
    if (reduction.verdict === 'applied') await writeRows(tx, event);
    await applyCycleChanges(tx, event.customerId, reduction.cycles, dunningMaxAttempts);
    await storeEffects(tx, event.eventId, event.customerId, reduction.effects);
    if (reduction.verdict !== 'applied') await setOutcome(tx, event.eventId, reduction.verdict);
    await markDelivered(tx, event.eventId);
    return { outcome: reduction.verdict, effects: reduction.effects };
  }

  /**
   * Applies `event` in a savepoint: a data error rolls back only this event and quarantines it; a tie
   * rolls it back and is reported. Other errors abort the transaction (retried by the caller).
   */
  async function applyGuarded(tx: TxSql, event: BillingEvent, opts: ApplyEventOptions): Promise<OneResult> {
    try {
      return await tx.savepoint((sp) => applyInTx(sp, event, opts));
    } catch (err) {
      if (err instanceof TieDetected) return { outcome: 'tie', effects: [] };
      if (!isDataError(err)) throw err;
      const error = describeError(err);
      await quarantineEvent(tx, event.eventId, error);
      countInActivity('eventsQuarantined');
      logEvent('warn', 'event quarantined: data error', { eventId: event.eventId, customerId: event.customerId, type: event.type, error });
      return { outcome: 'quarantined', effects: [], error };
    }
  }

  /**
   * Tracing on (the activity runs in the OTel interceptor's span; none when off, and nothing more is done):
   * the transaction gets an `apply` span in the first delivery's stored trace, linked to the others' and to
   * the Temporal span when that belongs to an older trace (a long-lived customer workflow).
   */
  async function traced<T extends OneResult | OneResult[]>(events: BillingEvent[], run: () => Promise<T>): Promise<T> {
    if (!trace.getActiveSpan()) return run();
    const ids = events.map((e) => e.eventId);
    const rows = await sql<{ event_id: string; trace_context: string | null }[]>`
      SELECT event_id, trace_context FROM webhook_events WHERE event_id = ANY(${ids}::text[])`;
    const stored = new Map(rows.map((r) => [r.event_id, r.trace_context]));
    const attributes = { 'billing.customer.id': events[0]!.customerId, 'billing.event.count': ids.length, 'billing.event.ids': ids };
    return inStoredTrace(trace.getTracer('billing-engine'), 'apply', ids.map((id) => ({ eventId: id, traceparent: stored.get(id) ?? null })), attributes, async (span) => {
      const results = await run();
      span.setAttribute('billing.outcomes', (Array.isArray(results) ? results : [results]).map((r) => r.outcome));
      return results;
    });
  }

  function afterCommit(eventIds: readonly string[]): void {
    if (faults?.afterCommit?.(eventIds)) throw new Error(`injected fault after commit of ${eventIds.join(', ')}`);
  }

  function logApplied(event: BillingEvent, r: OneResult): void {
    logEvent(r.outcome === 'quarantined' ? 'warn' : 'info', 'event applied', {
      eventId: event.eventId,
      customerId: event.customerId,
      type: event.type,
      outcome: r.outcome,
      effects: (r.effects ?? []).map((e) => `${e.kind}:${e.target}`),
    });
  }

  return {
    /** Applies one normalized event exactly once; its effects come back with it (the recorded ones on a re-run). */
    async applyBillingEvent(event: BillingEvent, opts: ApplyEventOptions = {}): Promise<ApplyEventResult> {
      const result = await traced([event], () => sql.begin(async (tx) => {
        await lockCustomer(tx, event.customerId);
        const before = await viewBefore(tx, event.customerId);
        const r = await applyGuarded(tx, event, opts);
        await refreshAccessState(tx, event.customerId);
        await recordAppEventsOf(tx, event.customerId, before, [{ event, r }]);
        return r;
      }));
      afterCommit([event.eventId]);
      logApplied(event, result);
      return { ...result, subscription: await loadCurrentSubscription(sql, event.customerId) };
    },

    /**
     * Applies a run of ONE customer's events in order, in one transaction. If event k ties with the
     * stored watermark (same second), the events before k are committed, k is reported `tie` and the
     * rest are not attempted: the workflow settles the tie and resubmits them.
     */
    async applyBillingEvents(events: BillingEvent[]): Promise<ApplyEventResult[]> {
      if (events.length === 0) return [];
      const customerId = events[0]!.customerId;
      if (events.some((e) => e.customerId !== customerId)) throw new Error('applyBillingEvents: a batch holds one customer');
      const results = await traced(events, () => sql.begin(async (tx) => {
        await lockCustomer(tx, customerId);
        const before = await viewBefore(tx, customerId);
        const out: ApplyEventResult[] = [];
        for (const event of events) {
          const r = await applyGuarded(tx, event, {});
          out.push({ ...r, subscription: await loadCurrentSubscription(tx, customerId) });
          if (r.outcome === 'tie') break;
        }
        await refreshAccessState(tx, customerId);
        await recordAppEventsOf(tx, customerId, before, out.map((r, i) => ({ event: events[i]!, r })));
        return out;
      }));
      afterCommit(events.slice(0, results.length).map((e) => e.eventId));
      results.forEach((r, i) => logApplied(events[i]!, r));
      return results;
    },

    /**
     * Writes a subscription object read from Stripe (the truth at fetch time) for the workflow of
     * `customerId`. An object of another customer is refused, never written. With an eventId it
     * settles a same-second tie for that event exactly once.
     */
    async applySubscriptionSnapshot(input: {
      snapshot: SubscriptionSnapshot;
      /** The customer of the calling workflow (required on the effects path; old runs omit it). */
      customerId?: string;
      eventId: string | null;
      eventType: string | null;
      eventCreated: number | null;
    }): Promise<ApplyEventResult> {
      const { snapshot, eventId } = input;
      const owner = input.customerId ?? snapshot.customerId;
      if (snapshot.customerId !== owner) {
        countInActivity('refetchRefused');
        logEvent('warn', 'refused a Stripe object of another customer', {
          eventId: eventId ?? 'none',
          customerId: owner,
          objectCustomerId: snapshot.customerId,
          subscriptionId: snapshot.subscriptionId,
        });
        return { outcome: 'refused', effects: [], subscription: await loadCurrentSubscription(sql, owner) };
      }
      const result = await sql.begin(async (tx): Promise<OneResult> => {
        await lockCustomer(tx, owner);
        const before = await viewBefore(tx, owner);
        try {
          const r = await tx.savepoint((sp) => writeSnapshot(sp));
          if (r.outcome === 'applied') await recordViewChange(tx, owner, before, eventId ?? `refetch:${snapshot.subscriptionId}:${snapshot.fetchedAt}`);
          return r;
        } catch (err) {
          if (!isDataError(err)) throw err;
          // A Stripe object that cannot be stored must not block the customer's queue: set aside, visible.
          const error = describeError(err);
          if (eventId) await quarantineEvent(tx, eventId, error);
          countInActivity('eventsQuarantined');
          logEvent('warn', 'Stripe object not stored: data error', { eventId: eventId ?? 'none', customerId: owner, subscriptionId: snapshot.subscriptionId, error });
          return { outcome: 'quarantined', effects: [], error };
        }
      });
      async function writeSnapshot(tx: TxSql): Promise<OneResult> {
        if (eventId) {
          const already = await claimEvent(tx, { eventId, customerId: owner, type: input.eventType ?? 'refetch' }, 'refetched');
          if (already) return already;
          await markDelivered(tx, eventId);
        }
        await ensureCustomer(tx, owner);
        const watermark = Math.max(snapshot.fetchedAt, input.eventCreated ?? 0);
        const slice: BillingSlice = {
          customerId: owner,
          subscription: await loadSubscriptionFact(tx, snapshot.subscriptionId),
          invoice: null,
          customerWatermark: null,
          cycles: await loadCycleFacts(tx, owner),
        };
        const reduction = reduceSubscriptionSnapshot(slice, snapshot, watermark, eventId);
        if (reduction.verdict === 'applied') await writeSubscription(tx, owner, snapshot, { created: watermark, eventId });
        await applyCycleChanges(tx, owner, reduction.cycles, dunningMaxAttempts);
        if (eventId) await storeEffects(tx, eventId, owner, reduction.effects);
        await refreshAccessState(tx, owner);
        return { outcome: reduction.verdict === 'applied' ? 'applied' : 'stale', effects: reduction.effects };
      }
      if (eventId) {
        afterCommit([eventId]);
        logEvent('info', 'event applied from a Stripe re-fetch', { eventId, customerId: owner, type: input.eventType, outcome: result.outcome });
      }
      return { ...result, subscription: await loadCurrentSubscription(sql, owner) };
    },
  };
}
