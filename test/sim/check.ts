/**
 * Compares what the engine ended with (an `Observed` read from Postgres and Temporal) against the
 * model's `Expected`, per customer. Pure: every difference becomes one violation line.
 */
import type { History } from './lifecycle';
import type { Expected } from './model';

/** A notice row. */
export interface ObservedNotice {
  dedupKey: string;
  invoiceId: string | null;
  kind: string;
  status: string;
}

/** One customer's rows (and dunning workflows) after the run. */
export interface Observed {
  /** webhook_events.status by event id (absent: no row). */
  events: Map<string, string>;
  /** applied_events.outcome by event id. */
  appliedEvents: Map<string, string>;
  subscriptions: Map<string, { status: string; priceId: string | null; cancelAtPeriodEnd: boolean }>;
  invoices: Map<string, { status: string | null }>;
  cycles: Map<string, { subscriptionId: string | null; ended: boolean; state: string }>;
  notices: ObservedNotice[];
  customer: { accessState: string; defaultPm: string | null; email: string | null } | null;
  charges: Map<string, { amountRefunded: number }>;
  disputes: Set<string>;
  /** Status of `dunning:<invoiceId>` for every invoice with a failure event ('NOT_FOUND' when absent). */
  dunningWorkflows: Map<string, string>;
}

/** One difference between the engine and the model. */
export interface Violation {
  customerId: string;
  /** A short category, e.g. 'cycle', 'notice', 'stuck'. */
  kind: string;
  message: string;
}

const NOTICE_KEY = /^invoice:(.+):([a-z_]+):(\d+)$/;

/** Every way `o` differs from `x` for history `h`. */
export function checkCustomer(h: History, x: Expected, o: Observed): Violation[] {
  const out: Violation[] = [];
  const v = (kind: string, message: string) => out.push({ customerId: h.customerId, kind, message });

  // Delivery log: nothing stuck, nothing lost, the poison set aside without blocking the rest.
  for (const e of h.events) {
    const want = x.events.get(e.id);
    const got = o.events.get(e.id);
    if (got === undefined) v('lost', `${e.id} (${e.type}) has no webhook_events row`);
    else if (got === 'received' || got === 'dispatched') v('stuck', `${e.id} (${e.type}${want === 'poison' ? ', the poison' : ''}) is still '${got}'`);
    else if (want === 'poison') {
      // Sanitizing a NUL is fine. An unwritable value is set aside (or refused at the ingest); it may end
      // 'applied' only as stale, when a re-run (after a crash) finds a newer event of its object applied.
      const outcome = o.appliedEvents.get(e.id);
      const ok = e.poison === 'nul_name' ? got === 'quarantined' || got === 'applied' : got === 'quarantined' || got === 'failed' || (got === 'applied' && outcome === 'stale');
      if (!ok) v('poison', `poison ${e.id} (${e.poison}) is '${got}'${outcome ? ` (applied_events: ${outcome})` : ''}, expected ${e.poison === 'nul_name' ? 'quarantined or applied' : "quarantined, failed, or applied as 'stale'"}`);
    } else if (got !== want) v('event-status', `${e.id} (${e.type}) is '${got}', expected '${want}'`);
    if (want === 'applied' && !o.appliedEvents.has(e.id)) v('applied-events', `${e.id} (${e.type}) has no applied_events row`);
    if (want === 'ignored' && o.appliedEvents.has(e.id)) v('applied-events', `ignored ${e.id} (${e.type}) has an applied_events row`);
  }

  for (const [id, s] of x.subscriptions) {
    const got = o.subscriptions.get(id);
    if (!got) v('subscription', `${id}: no row, expected ${s.status}`);
    else if (got.status !== s.status || got.priceId !== s.priceId || got.cancelAtPeriodEnd !== s.cancelAtPeriodEnd) {
      v('subscription', `${id}: ${got.status}/${got.priceId}/cap=${got.cancelAtPeriodEnd}, expected ${s.status}/${s.priceId}/cap=${s.cancelAtPeriodEnd} (newest event @${s.watermark})`);
    }
  }
  for (const id of o.subscriptions.keys()) if (!x.subscriptions.has(id)) v('subscription', `${id}: unexpected row`);

  for (const [id, inv] of x.invoices) {
    const got = o.invoices.get(id);
    if (!got) v('invoice', `${id}: no row, expected ${inv.status}`);
    else if (got.status !== inv.status) v('invoice', `${id}: ${got.status}, expected ${inv.status}`);
  }
  for (const id of o.invoices.keys()) if (!x.invoices.has(id)) v('invoice', `${id}: unexpected row`);

  // Dunning cycles: exactly the ones the contract opens, open iff the model says so.
  for (const [id, c] of x.cycles) {
    const got = o.cycles.get(id);
    if (!got) v('cycle', `${id}: no cycle row, expected one ${c.open ? 'open' : 'closed'} (opened by ${c.openedBy}${c.endedBy ? `, ended by ${c.endedBy}` : ''})`);
    else if (got.ended === c.open) v('cycle', `${id}: cycle ${got.ended ? `ended (${got.state})` : `open (${got.state})`}, expected ${c.open ? 'open' : `ended by ${c.endedBy}`}`);
  }
  for (const [id, got] of o.cycles) {
    if (!x.cycles.has(id)) v('cycle', `${id}: unexpected cycle row (${got.ended ? 'ended' : 'open'}, ${got.state})${x.failedWithoutCycle.has(id) ? ': its failure was stale or its subscription had ended' : ''}`);
  }
  for (const [id, c] of x.cycles) {
    const wf = o.dunningWorkflows.get(id) ?? 'NOT_FOUND';
    const want = c.open ? 'RUNNING' : 'COMPLETED';
    if (wf !== want) v('dunning-workflow', `dunning:${id} is ${wf}, expected ${want}`);
  }
  for (const id of x.failedWithoutCycle) {
    const wf = o.dunningWorkflows.get(id) ?? 'NOT_FOUND';
    if (wf !== 'NOT_FOUND') v('dunning-workflow', `dunning:${id} is ${wf}, expected none (no cycle)`);
  }

  // Notices: at most once, only for cycles, never left queued once the invoice's cycle ended.
  const cyclesEver = x.cycles.size;
  const byInvoice = new Map<string, ObservedNotice[]>();
  for (const n of o.notices) {
    const m = NOTICE_KEY.exec(n.dedupKey);
    if (!m) {
      v('notice', `unexpected dedup key ${n.dedupKey}`);
      continue;
    }
    const invoiceId = m[1]!;
    byInvoice.set(invoiceId, [...(byInvoice.get(invoiceId) ?? []), n]);
    if (!x.cycles.has(invoiceId)) v('notice', `${n.dedupKey} (${n.status}) for an invoice without a cycle`);
  }
  for (const [id, c] of x.cycles) {
    const notices = byInvoice.get(id) ?? [];
    const first = notices.filter((n) => n.dedupKey.endsWith(':0') && n.kind !== 'recovered');
    const told = first.filter((n) => n.status === 'queued' || n.status === 'sent');
    if (c.open) {
      if (first.length === 0) v('notice', `${id}: open cycle without its first notice`);
      if (told.length > 1) v('notice', `${id}: first notice told ${told.length} times (${told.map((n) => n.dedupKey).join(', ')})`);
      // With one cycle ever, no other notice of the customer can hold this one back (the cooldown).
      if (cyclesEver === 1 && told.length !== 1) v('notice', `${id}: the only cycle's first notice is ${first.map((n) => `${n.dedupKey}=${n.status}`).join(', ') || 'missing'}, expected queued`);
    } else {
      const queued = notices.filter((n) => n.status === 'queued');
      if (queued.length > 0) v('notice', `${id}: cycle ended (${x.invoices.get(id)?.status ?? '?'}) but ${queued.map((n) => n.dedupKey).join(', ')} still queued`);
    }
  }

  if (!o.customer) v('customer', 'no customers row');
  else {
    if (o.customer.accessState !== x.accessState) v('access', `access_state ${o.customer.accessState}, expected ${x.accessState}`);
    if (o.customer.defaultPm !== x.customer.defaultPm) v('customer', `default_payment_method_id ${o.customer.defaultPm}, expected ${x.customer.defaultPm}`);
    if (o.customer.email !== x.customer.email) v('customer', `email ${o.customer.email}, expected ${x.customer.email}`);
  }
  for (const [id, c] of x.charges) {
    const got = o.charges.get(id);
    if (!got || got.amountRefunded !== c.amountRefunded) v('charge', `${id}: refunded ${got?.amountRefunded ?? 'no row'}, expected ${c.amountRefunded}`);
  }
  for (const id of x.disputes) if (!o.disputes.has(id)) v('dispute', `${id}: no disputes row`);
  return out;
}

/** What the engine should show if it were the model (a checker sanity check: no violations). */
export function observedFromModel(h: History, x: Expected): Observed {
  const statusOf = (id: string) => {
    const s = x.events.get(id);
    return s === 'poison' ? 'quarantined' : (s ?? 'missing');
  };
  const notices: ObservedNotice[] = [...x.cycles.values()].map((c) => ({
    dedupKey: `invoice:${c.invoiceId}:payment_failed:0`,
    invoiceId: c.invoiceId,
    kind: 'payment_failed',
    status: c.open ? 'queued' : 'canceled',
  }));
  return {
    events: new Map(h.events.map((e) => [e.id, statusOf(e.id)])),
    appliedEvents: new Map([...x.events].filter(([, s]) => s === 'applied').map(([id]) => [id, 'applied'])),
    subscriptions: new Map([...x.subscriptions].map(([id, s]) => [id, { status: s.status, priceId: s.priceId, cancelAtPeriodEnd: s.cancelAtPeriodEnd }])),
    invoices: new Map([...x.invoices].map(([id, i]) => [id, { status: i.status }])),
    cycles: new Map([...x.cycles].map(([id, c]) => [id, { subscriptionId: c.subId, ended: !c.open, state: c.open ? 'retrying' : 'recovered' }])),
    notices,
    customer: { accessState: x.accessState, defaultPm: x.customer.defaultPm, email: x.customer.email },
    charges: new Map(x.charges),
    disputes: new Set(x.disputes),
    dunningWorkflows: new Map([...x.cycles].map(([id, c]) => [id, c.open ? 'RUNNING' : 'COMPLETED'])),
  };
}
