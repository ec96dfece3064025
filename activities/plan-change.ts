/**
 * Stripe write activities of plan changes, cancel and resume. Every call carries an idempotency key
 * built from the customer and the caller's requestId, so an activity retry (or a repeated request)
 * never changes a subscription twice; retry windows stay far below Stripe's 24 h key lifetime.
 */
import { ApplicationFailure } from '@temporalio/common';
import Stripe from 'stripe';
import type { AppEventDraft } from '../domain/app-events';
import { SubscriptionStatusSchema, type SubscriptionStatus } from '../domain/billing-event';
import { planChangeIdempotencyKey, subscriptionActionIdempotencyKey } from '../domain/plan-change';
import type { Plan } from '../domain/plan-catalog';
import { mapStripeError } from './errors';

export interface PlanChangeStripeDeps {
  stripe: Pick<Stripe, 'subscriptions' | 'subscriptionSchedules' | 'invoicePayments'>;
  /** Records plan_change.completed / plan_change.failed for the app (when APP_WEBHOOK_URL is set). */
  recordAppEvent?: (draft: AppEventDraft) => Promise<void>;
}

/** Input of updateSubscriptionPlan (an upgrade, applied now). */
export interface UpdateSubscriptionPlanInput {
  customerId: string;
  subscriptionId: string;
  requestId: string;
  /** The item to change is the one on this price; else the first item. */
  fromPriceId: string | null;
  toPriceId: string;
  /** Unix seconds, pinned by the workflow so retries send identical parameters. */
  prorationDate: number;
}

/** confirmed: Stripe applied the change (invoice paid); pending: payment needs the customer; failed: declined. */
export interface UpdateSubscriptionPlanOutcome {
  outcome: 'confirmed' | 'pending' | 'failed';
  subscriptionStatus: SubscriptionStatus | null;
  invoiceId: string | null;
  /** Stripe's pending_update.expires_at: after it the change is discarded. */
  expiresAt: number | null;
  paymentStatus: string | null;
  declineCode: string | null;
}

/** Input of scheduleSubscriptionDowngrade (a downgrade at period end). */
export interface ScheduleDowngradeInput {
  customerId: string;
  subscriptionId: string;
  requestId: string;
  fromPriceId: string | null;
  toPriceId: string;
  toInterval: Plan['interval'];
}

/** The subscription-level outcome of cancel and resume. */
export interface SubscriptionActionOutcome {
  status: SubscriptionStatus | null;
  cancelAtPeriodEnd: boolean;
}

const idOf = (v: string | { id: string } | null | undefined): string | null => (v == null ? null : typeof v === 'string' ? v : v.id);
const statusOf = (s: string): SubscriptionStatus | null => {
  const parsed = SubscriptionStatusSchema.safeParse(s);
  return parsed.success ? parsed.data : null;
};

/** The subscription's plan item: the one on `fromPriceId`, else the first. */
export function planItem(sub: Stripe.Subscription, fromPriceId: string | null): Stripe.SubscriptionItem {
  const items = sub.items.data;
  const item = items.find((i) => fromPriceId !== null && idOf(i.price) === fromPriceId) ?? items[0];
  if (!item) throw ApplicationFailure.nonRetryable(`subscription ${sub.id} has no items`, 'SubscriptionHasNoItems');
  return item;
}

type PhaseParams = Stripe.SubscriptionScheduleUpdateParams.Phase;
type PhaseDiscount = { coupon: string | { id: string } | null; discount: string | { id: string } | null; promotion_code: string | { id: string } | null };

/** A phase discount as a parameter: reuse the existing discount when there is one, else its coupon or code. */
function discountParams(discounts: readonly PhaseDiscount[] | null | undefined): PhaseParams['discounts'] | undefined {
  if (!discounts?.length) return undefined;
  return discounts.flatMap((d): Stripe.SubscriptionScheduleUpdateParams.Phase.Discount[] => {
    const discount = idOf(d.discount);
    if (discount) return [{ discount }];
    const coupon = idOf(d.coupon);
    if (coupon) return [{ coupon }];
    const code = idOf(d.promotion_code);
    return code ? [{ promotion_code: code }] : [];
  });
}

const hasKeys = (m: Stripe.Metadata | null | undefined): m is Stripe.Metadata => !!m && Object.keys(m).length > 0;

/** What a downgrade's phases carry over from the current phase: discounts, default tax rates, metadata. */
function keptPhaseSettings(phase: Stripe.SubscriptionSchedule.Phase | undefined, subscriptionMetadata: Stripe.Metadata | null): Omit<PhaseParams, 'items'> {
  const out: Omit<PhaseParams, 'items'> = {};
  const discounts = discountParams(phase?.discounts);
  if (discounts) out.discounts = discounts;
  const taxRates = phase?.default_tax_rates?.map((t) => t.id);
  if (taxRates?.length) out.default_tax_rates = taxRates;
  const metadata = hasKeys(phase?.metadata) ? phase.metadata : subscriptionMetadata;
  if (hasKeys(metadata)) out.metadata = metadata;
  return out;
}

type PhaseItemParams = Stripe.SubscriptionScheduleUpdateParams.Phase.Item;

/** What an item keeps across a scheduled change: quantity, tax rates, discounts, metadata. */
function keptItemSettings(phaseItem: Stripe.SubscriptionSchedule.Phase.Item | undefined, item: Stripe.SubscriptionItem | undefined): Omit<PhaseItemParams, 'price'> {
  const out: Omit<PhaseItemParams, 'price'> = { quantity: phaseItem?.quantity ?? item?.quantity ?? 1 };
  const taxRates = (phaseItem?.tax_rates ?? item?.tax_rates)?.map((t) => t.id);
  if (taxRates?.length) out.tax_rates = taxRates;
  const discounts = discountParams(phaseItem?.discounts);
  if (discounts) out.discounts = discounts;
  const metadata = hasKeys(phaseItem?.metadata) ? phaseItem.metadata : item?.metadata;
  if (hasKeys(metadata)) out.metadata = metadata;
  return out;
}

/** The next phase of a scheduled change: the plan item's new price and/or quantity, and its length. */
export interface NextPhase {
  subscriptionId: string;
  /** The plan item is the one on this price; else the first. */
  fromPriceId: string | null;
  /** Idempotency key of each step (`schedule`, `phases`). */
  key: (step: string) => string;
  /** What changes on the plan item at the renewal (omitted: kept). */
  price?: string;
  quantity?: number;
  /** The next phase's interval (interval_count 1); default: the plan item's price's own. */
  interval?: Plan['interval'];
  metadata: Stripe.MetadataParam;
}

/**
 * Schedules a change of the plan item for the end of the current period through a Subscription Schedule:
 * phase 1 keeps everything until the period ends, phase 2 carries the change, then the schedule releases
 * the subscription. Stripe applies it exactly at renewal, so the renewal invoice already reflects it.
 */
export async function scheduleNextPhase(
  stripe: Pick<Stripe, 'subscriptions' | 'subscriptionSchedules'>,
  input: NextPhase,
): Promise<{ scheduleId: string; effectiveAt: number | null }> {
  const sub = await stripe.subscriptions.retrieve(input.subscriptionId);
  const item = planItem(sub, input.fromPriceId);
  const existing = idOf(sub.schedule);
  const schedule = existing
    ? await stripe.subscriptionSchedules.retrieve(existing)
    : await stripe.subscriptionSchedules.create({ from_subscription: input.subscriptionId }, { idempotencyKey: input.key('schedule') });
  // The phase running now (an existing schedule may hold past phases before it).
  const phase = schedule.phases.find((p) => p.start_date === schedule.current_phase?.start_date) ?? schedule.phases[0];
  const start = phase?.start_date ?? schedule.current_phase?.start_date ?? item.current_period_start;
  const end = schedule.current_phase?.end_date ?? phase?.end_date ?? item.current_period_end;
  // Phases are declarative: whatever a phase omits (discounts, tax rates, metadata, the other items) is
  // dropped from the subscription, so both phases repeat what the current one carries.
  const phaseItem = phase?.items.find((i) => idOf(i.price) === item.price.id) ?? phase?.items[0];
  const kept = keptPhaseSettings(phase, sub.metadata);
  const keptItem = keptItemSettings(phaseItem, item);
  const others = (phase?.items ?? [])
    .filter((i) => i !== phaseItem && idOf(i.price))
    .map((i): PhaseItemParams => ({ ...keptItemSettings(i, sub.items.data.find((si) => si.price.id === idOf(i.price))), price: idOf(i.price)! }));
  const recurring = item.price.recurring;
  const duration = input.interval
    ? { interval: input.interval, interval_count: 1 }
    : { interval: recurring?.interval ?? 'month', interval_count: recurring?.interval_count ?? 1 };
  const next: PhaseItemParams = { ...keptItem, price: input.price ?? item.price.id, ...(input.quantity !== undefined ? { quantity: input.quantity } : {}) };
  await stripe.subscriptionSchedules.update(
    schedule.id,
    {
      end_behavior: 'release',
      proration_behavior: 'none',
      phases: [
        { ...kept, items: [{ ...keptItem, price: item.price.id }, ...others], start_date: start, end_date: end },
        { ...kept, items: [next, ...others], duration },
      ],
      metadata: input.metadata,
    },
    { idempotencyKey: input.key('phases') },
  );
  return { scheduleId: schedule.id, effectiveAt: end ?? null };
}

/** The newest payment attempt of an invoice: tells a decline from a payment awaiting the customer. */
async function latestPayment(stripe: Pick<Stripe, 'invoicePayments'>, invoiceId: string): Promise<{ status: string; declineCode: string | null } | null> {
  try {
    const list = await stripe.invoicePayments.list({ invoice: invoiceId, limit: 1, expand: ['data.payment.payment_intent'] });
    const pi = list.data[0]?.payment.payment_intent;
    if (!pi || typeof pi === 'string') return null;
    return { status: pi.status, declineCode: pi.last_payment_error?.decline_code ?? pi.last_payment_error?.code ?? null };
  } catch {
    // Only refines 'pending' into 'failed': the change itself is already decided by Stripe.
    return null;
  }
}

/**
 * Sends a subscription update that is invoiced at once and applied only if that invoice is paid
 * (`always_invoice` + `pending_if_incomplete`, set by the caller), and tells how its payment went:
 * confirmed (applied), pending (awaits the customer) or failed (declined). Other Stripe errors are thrown.
 */
export async function updateAndCollect(
  stripe: Pick<Stripe, 'subscriptions' | 'invoicePayments'>,
  subscriptionId: string,
  params: Stripe.SubscriptionUpdateParams,
  idempotencyKey: string,
): Promise<UpdateSubscriptionPlanOutcome> {
  try {
    const sub = await stripe.subscriptions.update(subscriptionId, params, { idempotencyKey });
    const invoiceId = idOf(sub.latest_invoice);
    const base = { subscriptionStatus: statusOf(sub.status), invoiceId, expiresAt: null, paymentStatus: null, declineCode: null };
    if (!sub.pending_update) return { ...base, outcome: 'confirmed' };
    const payment = invoiceId ? await latestPayment(stripe, invoiceId) : null;
    const declined = payment?.status === 'requires_payment_method' || payment?.status === 'canceled';
    return {
      ...base,
      outcome: declined ? 'failed' : 'pending',
      expiresAt: sub.pending_update.expires_at,
      paymentStatus: payment?.status ?? null,
      declineCode: payment?.declineCode ?? null,
    };
  } catch (err) {
    if (!(err instanceof Stripe.errors.StripeCardError)) throw err;
    return { outcome: 'failed', subscriptionStatus: null, invoiceId: null, expiresAt: null, paymentStatus: null, declineCode: err.decline_code ?? err.code ?? null };
  }
}

/** Creates the plan-change Stripe activities. */
export function createPlanChangeStripeActivities({ stripe, recordAppEvent }: PlanChangeStripeDeps) {
  /** Tells the app how a plan change ended (once per request: the event's id derives from it). */
  async function reportOutcome(
    input: { customerId: string; subscriptionId: string; requestId: string; toPriceId: string },
    type: 'plan_change.completed' | 'plan_change.failed',
    detail: Record<string, unknown>,
  ): Promise<void> {
    if (!recordAppEvent) return;
    await recordAppEvent({
      sourceKey: `plan_change:${input.customerId}:${input.requestId}`,
      type,
      customerId: input.customerId,
      data: { customerId: input.customerId, subscriptionId: input.subscriptionId, requestId: input.requestId, toPriceId: input.toPriceId, ...detail },
    });
  }

  return {
    /** Upgrade now: prorated and invoiced at once; applied only if that invoice is paid (pending_if_incomplete). */
    async updateSubscriptionPlan(input: UpdateSubscriptionPlanInput): Promise<UpdateSubscriptionPlanOutcome> {
      try {
        const current = await stripe.subscriptions.retrieve(input.subscriptionId);
        const item = planItem(current, input.fromPriceId);
        const out = await updateAndCollect(
          stripe,
          input.subscriptionId,
          {
            // pending_if_incomplete accepts only pending-update attributes: no metadata here.
            items: [{ id: item.id, price: input.toPriceId }],
            proration_behavior: 'always_invoice',
            payment_behavior: 'pending_if_incomplete',
            proration_date: input.prorationDate,
            expand: ['latest_invoice'],
          },
          planChangeIdempotencyKey(input.customerId, input.requestId),
        );
        if (out.outcome === 'confirmed') {
          await reportOutcome(input, 'plan_change.completed', { kind: 'upgrade', status: 'confirmed', invoiceId: out.invoiceId, effectiveAt: input.prorationDate });
        } else if (out.outcome === 'failed') {
          await reportOutcome(input, 'plan_change.failed', { kind: 'upgrade', status: 'failed', invoiceId: out.invoiceId, declineCode: out.declineCode });
        }
        return out;
      } catch (err) {
        if (err instanceof ApplicationFailure) throw err;
        return mapStripeError(err, `change plan of ${input.subscriptionId}`);
      }
    },

    /**
     * Downgrade at period end through a Subscription Schedule: phase 1 keeps the current price until the
     * period ends, phase 2 bills the new price, then the schedule releases the subscription. Stripe
     * switches the price exactly at renewal, so the renewal invoice is already at the new price.
     */
    async scheduleSubscriptionDowngrade(input: ScheduleDowngradeInput): Promise<{ scheduleId: string; effectiveAt: number | null }> {
      try {
        const out = await scheduleNextPhase(stripe, {
          subscriptionId: input.subscriptionId,
          fromPriceId: input.fromPriceId,
          key: (step) => planChangeIdempotencyKey(input.customerId, input.requestId, step),
          price: input.toPriceId,
          interval: input.toInterval,
          metadata: { plan_change_request_id: input.requestId, plan_change_to_price: input.toPriceId },
        });
        await reportOutcome(input, 'plan_change.completed', { kind: 'downgrade', status: 'scheduled', scheduleId: out.scheduleId, effectiveAt: out.effectiveAt });
        return out;
      } catch (err) {
        if (err instanceof ApplicationFailure) throw err;
        return mapStripeError(err, `schedule downgrade of ${input.subscriptionId}`);
      }
    },

    /** Withdraws a scheduled downgrade: releasing the schedule keeps the subscription on its current price. */
    async releaseSubscriptionSchedule(input: {
      customerId: string;
      subscriptionId: string;
      requestId: string;
      scheduleId: string | null;
      /** Idempotency-key suffix: withdrawing a downgrade and canceling may release under one requestId. */
      step?: string;
    }): Promise<{ released: boolean; scheduleId: string | null }> {
      try {
        const scheduleId = input.scheduleId ?? idOf((await stripe.subscriptions.retrieve(input.subscriptionId)).schedule);
        if (!scheduleId) return { released: false, scheduleId: null };
        const schedule = await stripe.subscriptionSchedules.retrieve(scheduleId);
        if (schedule.status !== 'active' && schedule.status !== 'not_started') return { released: false, scheduleId };
        await stripe.subscriptionSchedules.release(
          scheduleId,
          {},
          { idempotencyKey: planChangeIdempotencyKey(input.customerId, input.requestId, input.step ?? 'release') },
        );
        return { released: true, scheduleId };
      } catch (err) {
        return mapStripeError(err, `release schedule of ${input.subscriptionId}`);
      }
    },

    /** Cancels now, or at period end (cancel_at_period_end, undone by resume). */
    async cancelStripeSubscription(input: {
      customerId: string;
      subscriptionId: string;
      requestId: string;
      atPeriodEnd: boolean;
    }): Promise<SubscriptionActionOutcome> {
      const idempotencyKey = subscriptionActionIdempotencyKey('cancel', input.customerId, input.requestId);
      try {
        const sub = input.atPeriodEnd
          ? await stripe.subscriptions.update(input.subscriptionId, { cancel_at_period_end: true }, { idempotencyKey })
          : await stripe.subscriptions.cancel(input.subscriptionId, {}, { idempotencyKey });
        return { status: statusOf(sub.status), cancelAtPeriodEnd: sub.cancel_at_period_end };
      } catch (err) {
        return mapStripeError(err, `cancel ${input.subscriptionId}`);
      }
    },

    /** Undoes a cancel at period end. */
    async resumeStripeSubscription(input: { customerId: string; subscriptionId: string; requestId: string }): Promise<SubscriptionActionOutcome> {
      try {
        const sub = await stripe.subscriptions.update(
          input.subscriptionId,
          { cancel_at_period_end: false },
          { idempotencyKey: subscriptionActionIdempotencyKey('resume', input.customerId, input.requestId) },
        );
        return { status: statusOf(sub.status), cancelAtPeriodEnd: sub.cancel_at_period_end };
      } catch (err) {
        return mapStripeError(err, `resume ${input.subscriptionId}`);
      }
    },
  };
}

export type PlanChangeStripeActivities = ReturnType<typeof createPlanChangeStripeActivities>;
