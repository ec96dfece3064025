/**
 * The app_webhooks outbox: events for the app, written in the transaction of the state change they
 * report. The id derives from the source key, so writing the same fact twice (a re-run of the apply,
 * an activity retry) is one row, and the app dedups on the id it receives.
 */
import { createHash } from 'node:crypto';
import { viewTransitions, type AppEventDraft, type CustomerView } from '../../domain/app-events';
import type { BillingEvent } from '../../domain/billing-event';
import type { Effect } from '../../domain/billing/effects';
import type { AccessState } from '../../domain/subscription-state';
import type { TxSql } from '../../lib/db';
import { loadCurrentSubscription } from './subscriptions';

/** The id of the app event produced by `sourceKey`: `aevt_` + 24 hex of its SHA-256. */
export function appEventId(sourceKey: string): string {
  return `aevt_${createHash('sha256').update(sourceKey).digest('hex').slice(0, 24)}`;
}

/** Inserts the events (once per source key); returns how many rows were new. */
export async function recordAppEvents(tx: TxSql, drafts: readonly AppEventDraft[]): Promise<number> {
  let added = 0;
  for (const d of drafts) {
    const rows = await tx`
      INSERT INTO app_webhooks (id, source_key, customer_id, type, data)
      VALUES (${appEventId(d.sourceKey)}, ${d.sourceKey}, ${d.customerId}, ${d.type}, ${tx.json(d.data as never)})
      ON CONFLICT (source_key) DO NOTHING
      RETURNING id`;
    added += rows.length;
  }
  return added;
}

/** The app's view of a customer (access state, current subscription), read under the customer's lock. */
export async function loadCustomerView(tx: TxSql, customerId: string): Promise<CustomerView> {
  const [row] = await tx<{ access_state: AccessState }[]>`SELECT access_state FROM customers WHERE id = ${customerId}`;
  const sub = await loadCurrentSubscription(tx, customerId);
  return {
    accessState: row?.access_state ?? 'none',
    subscription: sub
      ? {
          id: sub.id,
          status: sub.status,
          planId: sub.planId,
          cancelAtPeriodEnd: sub.cancelAtPeriodEnd,
          currentPeriodEnd: sub.currentPeriodEnd,
          pendingPlanId: sub.pendingPlanId,
          quantity: sub.quantity ?? 1,
        }
      : null,
  };
}

/**
 * Records the app events of a transaction of `customerId`: the change of its view since `before`
 * (caused by `cause`), then `extra` (events an effect implies). Call after refreshAccessState.
 */
export async function recordViewChange(
  tx: TxSql,
  customerId: string,
  before: CustomerView | null,
  cause: string | null,
  extra: readonly AppEventDraft[] = [],
): Promise<void> {
  if (!before) return;
  const drafts = cause ? viewTransitions(customerId, before, await loadCustomerView(tx, customerId), cause) : [];
  if (drafts.length + extra.length > 0) await recordAppEvents(tx, [...drafts, ...extra]);
}

/** The app events that an applied event's effects and type imply (dunning started or recovered, checkout completed). */
export function appEventsOfApplied(event: BillingEvent, effects: readonly Effect[]): AppEventDraft[] {
  const customerId = event.customerId;
  const out: AppEventDraft[] = [];
  for (const e of effects) {
    if (e.kind === 'start_dunning') {
      out.push({
        sourceKey: `dunning.started:${e.invoiceId}`,
        type: 'dunning.started',
        customerId,
        data: { customerId, invoiceId: e.invoiceId, subscriptionId: e.subscriptionId, declineCode: e.failure.declineCode },
      });
    } else if (e.kind === 'end_dunning' && e.reason === 'paid') {
      out.push({
        sourceKey: `dunning.recovered:${e.invoiceId}`,
        type: 'dunning.recovered',
        customerId,
        data: { customerId, invoiceId: e.invoiceId },
      });
    }
  }
  const d = event.data;
  if (d.kind === 'checkout_session' && event.type === 'checkout.session.completed') {
    out.push({
      sourceKey: `checkout.completed:${d.sessionId}`,
      type: 'checkout.completed',
      customerId,
      data: { customerId, sessionId: d.sessionId, subscriptionId: d.subscriptionId, planId: d.planId, paymentStatus: d.paymentStatus },
    });
  }
  return out;
}
