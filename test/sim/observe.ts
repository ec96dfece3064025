/** Reads what the engine ended with for a set of simulated customers: Postgres rows and dunning workflows. */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { dunningWorkflowId } from '../../domain/ids';
import type { Sql } from '../../lib/db';
import type { Observed } from './check';
import type { History } from './lifecycle';

const FINAL_STATUSES = ['applied', 'ignored', 'quarantined', 'failed'];

/** How many of these events still wait in the delivery log (not applied, ignored, quarantined or failed). */
export async function pendingEventCount(sql: Sql, eventIds: readonly string[]): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM webhook_events
    WHERE event_id IN ${sql(eventIds as string[])} AND status::text NOT IN ${sql(FINAL_STATUSES)}`;
  return row?.n ?? 0;
}

function group<T extends { customer_id: string }>(rows: readonly T[]): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const r of rows) out.set(r.customer_id, [...(out.get(r.customer_id) ?? []), r]);
  return out;
}

/** Describes `ids` with at most `concurrency` calls in flight. */
async function workflowStatuses(client: Client, invoiceIds: string[], concurrency = 32): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < invoiceIds.length) {
        const id = invoiceIds[next++]!;
        try {
          const d = await client.workflow.getHandle(dunningWorkflowId(id)).describe();
          out.set(id, d.status.name);
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
          out.set(id, 'NOT_FOUND');
        }
      }
    }),
  );
  return out;
}

/** Everything `checkCustomer` compares, for each history's customer. */
export async function observe(sql: Sql, client: Client, histories: readonly History[]): Promise<Map<string, Observed>> {
  const customers = histories.map((h) => h.customerId);
  const eventIds = histories.flatMap((h) => h.events.map((e) => e.id));
  const [events, applied, subs, invoices, cycles, notices, customerRows, charges, disputes] = await Promise.all([
    sql<{ event_id: string; status: string }[]>`SELECT event_id, status::text AS status FROM webhook_events WHERE event_id IN ${sql(eventIds)}`,
    sql<{ event_id: string; outcome: string }[]>`SELECT event_id, outcome FROM applied_events WHERE event_id IN ${sql(eventIds)}`,
    sql<{ customer_id: string; id: string; status: string; price_id: string | null; cancel_at_period_end: boolean }[]>`
      SELECT customer_id, id, status::text AS status, price_id, cancel_at_period_end FROM subscriptions WHERE customer_id IN ${sql(customers)}`,
    sql<{ customer_id: string; id: string; status: string | null }[]>`SELECT customer_id, id, status FROM invoices WHERE customer_id IN ${sql(customers)}`,
    sql<{ customer_id: string; invoice_id: string; subscription_id: string | null; ended: boolean; state: string }[]>`
      SELECT customer_id, invoice_id, subscription_id, ended_at IS NOT NULL AS ended, state FROM dunning_cycles WHERE customer_id IN ${sql(customers)}`,
    sql<{ customer_id: string; dedup_key: string; invoice_id: string | null; kind: string; status: string }[]>`
      SELECT customer_id, dedup_key, invoice_id, kind, status FROM notifications WHERE customer_id IN ${sql(customers)}`,
    sql<{ id: string; access_state: string; default_payment_method_id: string | null; email: string | null }[]>`
      SELECT id, access_state, default_payment_method_id, email FROM customers WHERE id IN ${sql(customers)}`,
    sql<{ customer_id: string; id: string; amount_refunded: number }[]>`SELECT customer_id, id, amount_refunded FROM charges WHERE customer_id IN ${sql(customers)}`,
    sql<{ customer_id: string; id: string }[]>`SELECT customer_id, id FROM disputes WHERE customer_id IN ${sql(customers)}`,
  ]);
  const failedInvoices = [
    ...new Set(
      histories.flatMap((h) =>
        h.events.filter((e) => e.type === 'invoice.payment_failed' || e.type === 'invoice.payment_action_required').map((e) => e.object.id),
      ),
    ),
  ];
  const workflows = await workflowStatuses(client, failedInvoices);

  const eventStatus = new Map(events.map((r) => [r.event_id, r.status]));
  const appliedOutcome = new Map(applied.map((r) => [r.event_id, r.outcome]));
  const [subsBy, invoicesBy, cyclesBy, noticesBy, chargesBy, disputesBy] = [group(subs), group(invoices), group(cycles), group(notices), group(charges), group(disputes)];
  const customerBy = new Map(customerRows.map((r) => [r.id, r]));

  const out = new Map<string, Observed>();
  for (const h of histories) {
    const c = h.customerId;
    const ids = new Set(h.events.map((e) => e.id));
    const c0 = customerBy.get(c);
    out.set(c, {
      events: new Map([...ids].filter((id) => eventStatus.has(id)).map((id) => [id, eventStatus.get(id)!])),
      appliedEvents: new Map([...ids].filter((id) => appliedOutcome.has(id)).map((id) => [id, appliedOutcome.get(id)!])),
      subscriptions: new Map(
        (subsBy.get(c) ?? []).map((r) => [r.id, { status: r.status, priceId: r.price_id, cancelAtPeriodEnd: r.cancel_at_period_end }]),
      ),
      invoices: new Map((invoicesBy.get(c) ?? []).map((r) => [r.id, { status: r.status }])),
      cycles: new Map((cyclesBy.get(c) ?? []).map((r) => [r.invoice_id, { subscriptionId: r.subscription_id, ended: r.ended, state: r.state }])),
      notices: (noticesBy.get(c) ?? []).map((r) => ({ dedupKey: r.dedup_key, invoiceId: r.invoice_id, kind: r.kind, status: r.status })),
      customer: c0 ? { accessState: c0.access_state, defaultPm: c0.default_payment_method_id, email: c0.email } : null,
      charges: new Map((chargesBy.get(c) ?? []).map((r) => [r.id, { amountRefunded: Number(r.amount_refunded) }])),
      disputes: new Set((disputesBy.get(c) ?? []).map((r) => r.id)),
      dunningWorkflows: new Map(
        h.events.filter((e) => e.object.kind === 'invoice' && workflows.has(e.object.id)).map((e) => [e.object.id, workflows.get(e.object.id)!]),
      ),
    });
  }
  return out;
}
