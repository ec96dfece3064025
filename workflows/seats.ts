/**
 * The changeQuantity Update of the customer workflow (seats): registered by installPlanChangeHandlers,
 * whose state it shares — one subscription change at a time, request ids remembered across
 * continue-as-new, what Stripe confirmed laid over the local row until the webhook shows it.
 *
 * An increase is prorated and invoiced now like an upgrade (applied only if paid); a decrease takes
 * effect at the renewal through a Subscription Schedule (`decreaseAt: 'period_end'`, the default) or now
 * with a credit proration (`'now'`). The local quantity changes only through the
 * `customer.subscription.updated` webhook; this workflow sets and clears only the pending-quantity marker.
 */
import { setHandler } from '@temporalio/workflow';
import type { LocalSubscription } from '../domain/billing/state';
import type { ChangeQuantityRequest, ChangeQuantityResult, PlanChangeView } from '../domain/messages';
import type { PlanChangeRejection } from '../domain/plan-change';
import { decideSeatChange, isSeatCount, MAX_SEATS, seatCommitRejection, seatsOf, SEAT_DECREASE_POLICIES, seatsText as seats, type SeatChangeKind } from '../domain/seats';
import { changeQuantityUpdate } from './contracts';
import type { PlanChangeContext } from './plan-change';
import { postgresActivities } from './postgres-activities';
import { stripeInteractiveWriteActivities } from './stripe-activities';

const db = postgresActivities;
const stripeWrite = stripeInteractiveWriteActivities;

/** What the seat handlers share with the plan-change handlers (workflows/plan-change.ts). */
export interface SeatChangeKit {
  customerId: string;
  ctx: Pick<PlanChangeContext, 'getSubscription' | 'setSubscription' | 'inLoop'>;
  now(): number;
  iso(s: number | null | undefined): string;
  reject(type: PlanChangeRejection, message: string): never;
  requireRequestId(req: { requestId?: unknown } | null | undefined): void;
  requireNotBusy(): void;
  requireNoOpenChange(sub: LocalSubscription | null): void;
  whenReady(): Promise<void>;
  isReady(): boolean;
  /** The local subscription with what Stripe already confirmed laid over it. */
  effective(): LocalSubscription | null;
  lookup(key: string): { requestId: string; result: unknown } | undefined;
  isBusy(key: string): boolean;
  priorResult<T>(key: string): Promise<{ found: true; result: T } | { found: false }>;
  exclusively<T>(key: string, work: () => Promise<T>): Promise<T>;
  /** Stripe confirmed these seats; the webhook will show them. */
  expect(quantity: number): void;
  change(): PlanChangeView | null;
  setChange(view: PlanChangeView | null): void;
}

/** Registers the changeQuantity Update. */
export function installSeatHandlers(kit: SeatChangeKit): void {
  const { customerId } = kit;
  const reject: SeatChangeKit['reject'] = kit.reject;
  const keyOf = (requestId: string) => `changeQuantity:${requestId}`;

  /** Every rule, in the validator and again in the handler (the validator defers in a run's first task). */
  function check(req: ChangeQuantityRequest): { kind: SeatChangeKind; from: number; to: number; sub: LocalSubscription } {
    kit.requireNotBusy();
    const sub = kit.effective();
    const decision = decideSeatChange({ subscription: sub, quantity: req.quantity, prorationDate: req.prorationDate ?? undefined, now: kit.now() });
    if (!decision.ok) reject(decision.type, decision.message);
    if (!sub) reject('NoSubscription', 'the customer has no subscription');
    kit.requireNoOpenChange(sub);
    const local = kit.ctx.getSubscription();
    // Stripe confirmed a seat change the local row (what a preview reads) does not show yet: a preview now
    // would start from the wrong count.
    if (local && seatsOf(local) !== decision.from) {
      reject('ChangeInFlight', `Stripe already has ${seats(decision.from)}; the local record catches up within seconds, then preview again`);
    }
    const refused = seatCommitRejection({
      kind: decision.kind,
      subscription: sub,
      local,
      prorationDate: req.prorationDate ?? undefined,
      subscriptionVersion: req.subscriptionVersion ?? undefined,
    });
    if (refused) reject(refused.type, refused.message);
    return { kind: decision.kind, from: decision.from, to: decision.to, sub };
  }

  function requireSameRequest(requestId: string, toQuantity: number | undefined, quantity: number): void {
    if (toQuantity !== quantity) reject('RequestIdReused', `requestId ${requestId} was used for a change to ${toQuantity === undefined ? 'something else' : seats(toQuantity)}`);
  }

  /** What every seat-change result carries, before its status, effective time and message. */
  const resultBase = (requestId: string, kind: SeatChangeKind, sub: LocalSubscription, from: number, to: number, invoiceId: string | null) => ({
    requestId,
    kind,
    subscriptionId: sub.id,
    planId: sub.planId,
    fromQuantity: from,
    toQuantity: to,
    invoiceId,
  });

  async function increase(requestId: string, sub: LocalSubscription, from: number, to: number, prorationDate: number): Promise<ChangeQuantityResult> {
    const out = await stripeWrite.updateSubscriptionQuantity({
      customerId,
      subscriptionId: sub.id,
      requestId,
      priceId: sub.priceId,
      quantity: to,
      prorationDate,
      proration: 'invoice',
    });
    const base = resultBase(requestId, 'increase', sub, from, to, out.invoiceId);
    const view = viewOf(requestId, sub, from, to);
    const invoice = out.invoiceId ? ` (invoice ${out.invoiceId})` : '';
    if (out.outcome === 'confirmed') {
      kit.setChange({ ...view, status: 'confirmed', effectiveAt: prorationDate, invoiceId: out.invoiceId });
      kit.expect(to);
      return { ...base, status: 'confirmed', effectiveAt: prorationDate, message: `${seats(to)} from now; the prorated difference was invoiced and paid${invoice}` };
    }
    if (out.outcome === 'pending') {
      kit.setChange({ ...view, status: 'pending', expiresAt: out.expiresAt, invoiceId: out.invoiceId });
      return {
        ...base,
        status: 'pending',
        effectiveAt: null,
        message: `the prorated payment${invoice} awaits the customer (${out.paymentStatus ?? 'payment incomplete'}); the subscription keeps ${seats(from)} until it is paid, and the change is discarded if unpaid by ${kit.iso(out.expiresAt)}`,
      };
    }
    kit.setChange({ ...view, status: 'failed', expiresAt: out.expiresAt, invoiceId: out.invoiceId });
    return { ...base, status: 'failed', effectiveAt: null, message: `the prorated payment was declined (${out.declineCode ?? 'no decline code'}); the subscription keeps ${seats(from)}` };
  }

  async function decreaseNow(requestId: string, sub: LocalSubscription, from: number, to: number, prorationDate: number): Promise<ChangeQuantityResult> {
    await stripeWrite.updateSubscriptionQuantity({ customerId, subscriptionId: sub.id, requestId, priceId: sub.priceId, quantity: to, prorationDate, proration: 'credit' });
    kit.setChange({ ...viewOf(requestId, sub, from, to), status: 'confirmed', effectiveAt: prorationDate });
    kit.expect(to);
    return {
      ...resultBase(requestId, 'decrease', sub, from, to, null),
      status: 'confirmed',
      effectiveAt: prorationDate,
      message: `${seats(to)} from now; the unused time of ${seats(from - to)} is credited on the next invoice`,
    };
  }

  async function decreaseAtRenewal(requestId: string, sub: LocalSubscription, from: number, to: number): Promise<ChangeQuantityResult> {
    const out = await stripeWrite.scheduleSubscriptionQuantity({ customerId, subscriptionId: sub.id, requestId, priceId: sub.priceId, quantity: to });
    const effectiveAt = out.effectiveAt ?? sub.currentPeriodEnd;
    await kit.ctx.inLoop(async () => {
      await db.setPendingQuantityChange({ subscriptionId: sub.id, quantity: to, effectiveAt });
      kit.ctx.setSubscription(await db.loadLocalSubscription(customerId));
    });
    kit.setChange({ ...viewOf(requestId, sub, from, to), status: 'scheduled', effectiveAt, scheduleId: out.scheduleId });
    return {
      ...resultBase(requestId, 'decrease', sub, from, to, null),
      status: 'scheduled',
      effectiveAt,
      message: `${seats(to)} from ${kit.iso(effectiveAt)}, the end of the current period; nothing is refunded now`,
    };
  }

  // ---- changeQuantity ---------------------------------------------------------------------------

  setHandler(
    changeQuantityUpdate,
    async (req) => {
      const key = keyOf(req.requestId);
      const prior = await kit.priorResult<ChangeQuantityResult>(key);
      if (prior.found) {
        requireSameRequest(req.requestId, prior.result.toQuantity, req.quantity);
        return prior.result;
      }
      await kit.whenReady();
      const { kind, from, to, sub } = check(req);
      const prorationDate = req.prorationDate ?? kit.now();
      kit.setChange({ ...viewOf(req.requestId, sub, from, to), status: 'in_flight' });
      try {
        return await kit.exclusively(key, () => {
          if (kind === 'increase') return increase(req.requestId, sub, from, to, prorationDate);
          return req.decreaseAt === 'now' ? decreaseNow(req.requestId, sub, from, to, prorationDate) : decreaseAtRenewal(req.requestId, sub, from, to);
        });
      } catch (err) {
        const current = kit.change();
        if (current?.requestId === req.requestId && current.status === 'in_flight') kit.setChange({ ...current, status: 'failed' });
        throw err;
      }
    },
    {
      validator: (req) => {
        kit.requireRequestId(req);
        if (!isSeatCount(req.quantity)) reject('InvalidQuantity', `quantity must be a whole number from 1 to ${MAX_SEATS}`);
        if (
          (req.prorationDate != null && typeof req.prorationDate !== 'number') ||
          (req.subscriptionVersion != null && typeof req.subscriptionVersion !== 'string') ||
          (req.decreaseAt != null && !SEAT_DECREASE_POLICIES.includes(req.decreaseAt))
        ) {
          reject('InvalidRequest', 'prorationDate must be a unix time, subscriptionVersion a string and decreaseAt period_end or now');
        }
        const key = keyOf(req.requestId);
        const prior = kit.lookup(key);
        if (prior) return requireSameRequest(req.requestId, (prior.result as ChangeQuantityResult).toQuantity, req.quantity);
        if (kit.isBusy(key)) return requireSameRequest(req.requestId, kit.change()?.toQuantity, req.quantity);
        // First task of a run: the handler checks once the subscription is loaded.
        if (!kit.isReady()) return;
        check(req);
      },
    },
  );

  function viewOf(requestId: string, sub: LocalSubscription, from: number, to: number): Omit<PlanChangeView, 'status'> {
    const planId = sub.planId ?? sub.priceId ?? 'unknown';
    return { requestId, fromPlanId: planId, toPlanId: planId, kind: to > from ? 'upgrade' : 'downgrade', fromQuantity: from, toQuantity: to };
  }
}
