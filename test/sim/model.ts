/**
 * The reference model: what the engine must end with after applying a history's events in their
 * delivery order (first deliveries; a redelivery is a no-op). Written from the contract, not from
 * the engine's code: watermarks per object, the dunning cycle rules, the access state table.
 */
import { isHandledEventType } from '../../domain/events';
import { isEndedStatus, type History, type InvoiceStatus, type SimEvent, type SubStatus } from './lifecycle';

export type AccessState = 'none' | 'active' | 'grace' | 'restricted' | 'suspended';

export interface ExpectedSubscription {
  status: SubStatus;
  priceId: string;
  cancelAtPeriodEnd: boolean;
  /** `created` of the event whose state is stored. */
  watermark: number;
}

export interface ExpectedInvoice {
  status: InvoiceStatus;
  subId: string;
  watermark: number;
  rank: number;
}

export interface ExpectedCycle {
  invoiceId: string;
  subId: string;
  open: boolean;
  openedBy: string;
  endedBy: string | null;
}

/** The expected webhook_events status of an event ('poison': set aside without effect; see checkCustomer). */
export type ExpectedEventStatus = 'applied' | 'ignored' | 'poison';

export interface Expected {
  customerId: string;
  events: Map<string, ExpectedEventStatus>;
  subscriptions: Map<string, ExpectedSubscription>;
  invoices: Map<string, ExpectedInvoice>;
  /** Every cycle ever opened, by invoice id. */
  cycles: Map<string, ExpectedCycle>;
  /** Invoices with a failure event that opened no cycle (no row, no dunning workflow). */
  failedWithoutCycle: Set<string>;
  customer: { email: string | null; defaultPm: string | null; watermark: number | null };
  charges: Map<string, { amountRefunded: number }>;
  disputes: Set<string>;
  accessState: AccessState;
  /** One line per first delivery: what the model decided (for failure reports). */
  trail: string[];
}

/** Invoice status order for same-second events: a status never moves backwards. */
export function invoiceRank(status: string): number {
  switch (status) {
    case 'paid':
    case 'void':
      return 3;
    case 'uncollectible':
      return 2;
    case 'open':
      return 1;
    default:
      return 0;
  }
}

const TERMINAL_INVOICE: ReadonlySet<string> = new Set(['paid', 'void', 'uncollectible']);
const FAILURE_TYPES: ReadonlySet<string> = new Set(['invoice.payment_failed', 'invoice.payment_action_required']);

/** What the app grants for the customer's current subscription status (null: none). */
export function accessFor(status: SubStatus | null): AccessState {
  switch (status) {
    case null:
      return 'none';
    case 'active':
    case 'trialing':
      return 'active';
    case 'past_due':
      return 'grace';
    case 'incomplete':
      return 'restricted';
    case 'canceled':
    case 'incomplete_expired':
      return 'suspended';
  }
}

/** Runs the model over `h.events` taken in `order` (indices of first deliveries). */
export function expectOutcome(h: History, order: readonly number[]): Expected {
  const x: Expected = {
    customerId: h.customerId,
    events: new Map(),
    subscriptions: new Map(),
    invoices: new Map(),
    cycles: new Map(),
    failedWithoutCycle: new Set(),
    customer: { email: null, defaultPm: null, watermark: null },
    charges: new Map(),
    disputes: new Set(),
    accessState: 'none',
    trail: [],
  };
  const seen = new Set<string>();
  for (const [position, index] of order.entries()) {
    const e = h.events[index];
    if (!e) throw new Error(`delivery of event #${index}, which the history does not have`);
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    x.trail.push(`${String(position).padStart(3)} ${describeEvent(e)} → ${applyOne(x, e)}`);
  }
  for (const e of h.events) if (!seen.has(e.id)) throw new Error(`${e.id} was never delivered`);
  x.accessState = finalAccess(x);
  return x;
}

function applyOne(x: Expected, e: SimEvent): string {
  if (e.poison) {
    x.events.set(e.id, 'poison');
    return `poison ${e.poison} (set aside, no effect)`;
  }
  if (!isHandledEventType(e.type)) {
    x.events.set(e.id, 'ignored');
    return 'ignored (type not handled)';
  }
  x.events.set(e.id, 'applied');
  const o = e.object;
  switch (o.kind) {
    case 'customer': {
      const stored = x.customer.watermark;
      if (stored !== null && e.created === stored) throw new Error(`model: same-second customer events (${e.id}); the renderer must not emit them`);
      if (stored !== null && e.created < stored) return 'stale';
      x.customer = { email: o.email, defaultPm: o.defaultPm, watermark: e.created };
      return `applied (default pm ${o.defaultPm ?? 'none'})`;
    }
    case 'payment_method':
      return 'applied';
    case 'charge': {
      const prev = x.charges.get(o.id)?.amountRefunded ?? 0;
      x.charges.set(o.id, { amountRefunded: Math.max(prev, o.amountRefunded) });
      return `applied (refunded ${o.amountRefunded})`;
    }
    case 'dispute':
      x.disputes.add(o.id);
      return 'applied';
    case 'subscription': {
      const stored = x.subscriptions.get(o.id);
      if (stored && e.created === stored.watermark) throw new Error(`model: same-second events of ${o.id} (${e.id}); the renderer must not emit them`);
      if (stored && e.created < stored.watermark) return `stale (stored ${stored.status} @${stored.watermark})`;
      x.subscriptions.set(o.id, { status: o.status, priceId: o.priceId, cancelAtPeriodEnd: o.cancelAtPeriodEnd, watermark: e.created });
      if (!isEndedStatus(o.status)) return `applied (${o.status})`;
      const ended = [...x.cycles.values()].filter((c) => c.open && c.subId === o.id);
      for (const c of ended) {
        c.open = false;
        c.endedBy = e.id;
      }
      return `applied (${o.status})${ended.length ? `; ends cycles ${ended.map((c) => c.invoiceId).join(', ')}` : ''}`;
    }
    case 'invoice': {
      const rank = invoiceRank(o.status);
      const stored = x.invoices.get(o.id);
      // Stripe never returns a finalized invoice to draft: a late invoice.created is stale whatever its second.
      const backToDraft = stored !== undefined && o.status === 'draft' && stored.status !== 'draft';
      if (stored && (backToDraft || e.created < stored.watermark || (e.created === stored.watermark && rank < stored.rank))) {
        if (FAILURE_TYPES.has(e.type) && !x.cycles.has(o.id)) x.failedWithoutCycle.add(o.id);
        return `stale (stored ${stored.status} @${stored.watermark})`;
      }
      x.invoices.set(o.id, { status: o.status, subId: o.subId, watermark: e.created, rank });
      const cycle = x.cycles.get(o.id);
      if (TERMINAL_INVOICE.has(o.status)) {
        if (cycle?.open) {
          cycle.open = false;
          cycle.endedBy = e.id;
          return `applied (${o.status}); ends its cycle`;
        }
        return `applied (${o.status})`;
      }
      if (!FAILURE_TYPES.has(e.type)) return `applied (${o.status})`;
      if (cycle) return `applied (${o.status}); cycle already ${cycle.open ? 'open' : 'closed (never reopened)'}`;
      const sub = x.subscriptions.get(o.subId);
      if (sub && isEndedStatus(sub.status)) {
        x.failedWithoutCycle.add(o.id);
        return `applied (${o.status}); no cycle: ${o.subId} already ${sub.status}`;
      }
      x.cycles.set(o.id, { invoiceId: o.id, subId: o.subId, open: true, openedBy: e.id, endedBy: null });
      x.failedWithoutCycle.delete(o.id);
      return `applied (${o.status}); OPENS a cycle`;
    }
  }
}

/** The customer's current subscription (a live one first, then the newest) → access, held at grace in dunning. */
function finalAccess(x: Expected): AccessState {
  const subs = [...x.subscriptions.values()].sort(
    (a, b) => Number(!isEndedStatus(b.status)) - Number(!isEndedStatus(a.status)) || b.watermark - a.watermark,
  );
  const current = subs[0] ?? null;
  let access = accessFor(current?.status ?? null);
  const inDunning = [...x.cycles.values()].some((c) => c.open);
  if (inDunning && (access === 'active' || access === 'grace')) access = 'grace';
  // The documented overrides: an open dispute restricts; a written-off invoice of the current subscription suspends.
  if (x.disputes.size > 0 && (access === 'active' || access === 'grace')) access = 'restricted';
  const currentId = current ? [...x.subscriptions.entries()].find(([, s]) => s === current)?.[0] : undefined;
  const writtenOff = [...x.invoices.values()].some((i) => i.status === 'uncollectible' && i.subId === currentId);
  if (writtenOff && (access === 'active' || access === 'grace' || access === 'restricted')) access = 'suspended';
  return access;
}

/** One line for reports: `evt_… @created type object-summary`. */
export function describeEvent(e: SimEvent): string {
  const o = e.object;
  const what =
    o.kind === 'subscription'
      ? `${o.id} ${o.status} ${o.priceId}${o.cancelAtPeriodEnd ? ' cancel_at_period_end' : ''}`
      : o.kind === 'invoice'
        ? `${o.id} ${o.status}${o.decline ? ` (${o.decline} decline)` : ''} of ${o.subId}${e.poison ? ' attempt_count=2^31' : ''}`
        : o.kind === 'customer'
          ? `${o.id} default_pm=${o.defaultPm ?? 'null'}${e.poison ? ' name=Ada\\u0000Lovelace' : ''}`
          : o.kind === 'charge'
            ? `${o.id} refunded ${o.amountRefunded}/${o.amount}`
            : o.kind === 'dispute'
              ? `${o.id} on ${o.chargeId}`
              : o.id;
  return `${e.id} @${e.created} ${e.type} ${what}`;
}
