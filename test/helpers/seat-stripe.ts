/**
 * An in-memory Stripe for seat changes: subscriptions (retrieve, update), subscription schedules (create,
 * retrieve, update, release), invoice previews and invoice payments. It keeps each subscription's item and
 * quantity, prorates a quantity change by the second over the item's period (so a preview and a commit
 * agree only when both use the same proration date), answers a repeated idempotency key with its first
 * response, and applies a schedule's next phase when the test renews the subscription. Emulators can do
 * none of that for quantities (stripe-mock is stateless, localstripe has no schedules), so this is the fake
 * the seat tests run the real activities and routes against; stripe-mock checks the request shapes.
 */
import Stripe from 'stripe';

export interface SeatSubscription {
  id: string;
  customer: string;
  itemId: string;
  priceId: string;
  unitAmount: number;
  quantity: number;
  periodStart: number;
  periodEnd: number;
  schedule: string | null;
  metadata: Record<string, string>;
  /** The current phase as Stripe's schedule shows it (what a schedule must keep). */
  phase: { discounts: { coupon: string | null; discount: string | null; promotion_code: string | null }[]; default_tax_rates: { id: string }[]; metadata: Record<string, string> };
  itemTaxRates: { id: string }[];
}

export interface SeatStripeCall {
  method: string;
  id?: string;
  params?: unknown;
  idempotencyKey?: string;
}

/** How an invoiced update's payment goes: paid at once (default), awaiting the customer (3DS), or declined. */
export type UpdateAnswer = 'paid' | 'requires_action' | 'declined';

/** The fake; `stripe` is what the activities and the app are given. */
export function createSeatStripe() {
  const subs = new Map<string, SeatSubscription>();
  const schedules = new Map<string, { id: string; subscription: string; phases: Stripe.SubscriptionScheduleUpdateParams.Phase[] }>();
  const byKey = new Map<string, unknown>();
  const calls: SeatStripeCall[] = [];
  /** Invoices the updates created: id → amount due. */
  const invoices = new Map<string, number>();
  let answer: UpdateAnswer = 'paid';

  const get = (id: string) => {
    const s = subs.get(id);
    if (!s) throw new Stripe.errors.StripeInvalidRequestError({ message: `No such subscription: '${id}'`, code: 'resource_missing', type: 'invalid_request_error' });
    return s;
  };
  /** Stripe's proration of a quantity change: the price × the seat difference × the share of the period left. */
  const prorate = (s: SeatSubscription, quantity: number, at: number) =>
    Math.round((s.unitAmount * (quantity - s.quantity) * (s.periodEnd - at)) / (s.periodEnd - s.periodStart));
  const item = (s: SeatSubscription) => ({
    id: s.itemId,
    quantity: s.quantity,
    metadata: {},
    tax_rates: s.itemTaxRates,
    current_period_start: s.periodStart,
    current_period_end: s.periodEnd,
    price: { id: s.priceId, unit_amount: s.unitAmount, currency: 'usd', recurring: { interval: 'month', interval_count: 1 } },
  });
  const subscription = (s: SeatSubscription) => ({ id: s.id, status: 'active', schedule: s.schedule, metadata: s.metadata, items: { data: [item(s)] } });
  const scheduleOf = (id: string) => {
    const sched = schedules.get(id)!;
    const s = get(sched.subscription);
    const items = [{ price: s.priceId, quantity: s.quantity, tax_rates: s.itemTaxRates, discounts: [], metadata: {} }];
    return {
      id,
      status: 'active',
      current_phase: { start_date: s.periodStart, end_date: s.periodEnd },
      phases: [{ start_date: s.periodStart, end_date: s.periodEnd, ...s.phase, items }],
    };
  };
  /** Runs a write once per idempotency key, as Stripe does for 24 h. */
  const once = <T>(key: string | undefined, write: () => T): T => {
    if (key && byKey.has(key)) return byKey.get(key) as T;
    const out = write();
    if (key) byKey.set(key, out);
    return out;
  };

  const stripe = {
    subscriptions: {
      async retrieve(id: string) {
        calls.push({ method: 'subscriptions.retrieve', id });
        return subscription(get(id));
      },
      async update(id: string, params: Stripe.SubscriptionUpdateParams, opts?: Stripe.RequestOptions) {
        calls.push({ method: 'subscriptions.update', id, params, ...(opts?.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {}) });
        return once(opts?.idempotencyKey, () => {
          const s = get(id);
          const change = params.items?.[0];
          if (!change || change.id !== s.itemId || change.quantity === undefined) throw new Error('fake Stripe: expected the quantity on the existing item');
          const amount = prorate(s, change.quantity, params.proration_date ?? Math.floor(Date.now() / 1000));
          if (params.proration_behavior !== 'always_invoice') {
            s.quantity = change.quantity;
            return { ...subscription(s), pending_update: null, latest_invoice: null };
          }
          const invoiceId = `in_seat_${invoices.size + 1}`;
          invoices.set(invoiceId, amount);
          // pending_if_incomplete: the change applies only once its invoice is paid.
          if (answer === 'paid') s.quantity = change.quantity;
          const pending = answer === 'paid' ? null : { expires_at: Math.floor(Date.now() / 1000) + 23 * 3600 };
          return { ...subscription(s), pending_update: pending, latest_invoice: invoiceId };
        });
      },
    },
    subscriptionSchedules: {
      async create(params: Stripe.SubscriptionScheduleCreateParams, opts?: Stripe.RequestOptions) {
        calls.push({ method: 'subscriptionSchedules.create', params, ...(opts?.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {}) });
        return once(opts?.idempotencyKey, () => {
          const s = get(params.from_subscription!);
          const id = `sub_sched_${s.id}`;
          schedules.set(id, { id, subscription: s.id, phases: [] });
          s.schedule = id;
          return scheduleOf(id);
        });
      },
      async retrieve(id: string) {
        calls.push({ method: 'subscriptionSchedules.retrieve', id });
        return scheduleOf(id);
      },
      async update(id: string, params: Stripe.SubscriptionScheduleUpdateParams, opts?: Stripe.RequestOptions) {
        calls.push({ method: 'subscriptionSchedules.update', id, params, ...(opts?.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {}) });
        schedules.get(id)!.phases = params.phases ?? [];
        return scheduleOf(id);
      },
      async release(id: string, _params: unknown, opts?: Stripe.RequestOptions) {
        calls.push({ method: 'subscriptionSchedules.release', id, ...(opts?.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {}) });
        const sched = schedules.get(id)!;
        get(sched.subscription).schedule = null;
        schedules.delete(id);
        return { id, status: 'released' };
      },
    },
    invoices: {
      async createPreview(params: Stripe.InvoiceCreatePreviewParams) {
        calls.push({ method: 'invoices.createPreview', params });
        const s = get(params.subscription!);
        const change = params.subscription_details?.items?.[0];
        const amount = prorate(s, change?.quantity ?? s.quantity, params.subscription_details?.proration_date ?? Math.floor(Date.now() / 1000));
        const renewal = s.unitAmount * (change?.quantity ?? s.quantity);
        const now = params.subscription_details?.proration_behavior === 'always_invoice';
        const lines = [{ description: `Seats: ${s.quantity} → ${change?.quantity}`, amount, parent: { subscription_item_details: { proration: true } } }];
        if (!now) lines.push({ description: 'Next period', amount: renewal, parent: { subscription_item_details: { proration: false } } });
        return { currency: 'usd', amount_due: Math.max(0, now ? amount : amount + renewal), lines: { data: lines } };
      },
    },
    invoicePayments: {
      async list() {
        const declined = answer === 'declined';
        const error = declined ? { code: 'card_declined', decline_code: 'insufficient_funds' } : null;
        return { data: [{ payment: { payment_intent: { status: declined ? 'requires_payment_method' : 'requires_action', last_payment_error: error } } }] };
      },
    },
  };

  return {
    stripe: stripe as unknown as Stripe,
    calls,
    invoices,
    /** Adds a subscription Stripe holds. */
    add(s: Omit<SeatSubscription, 'schedule' | 'metadata' | 'phase' | 'itemTaxRates'> & Partial<SeatSubscription>): SeatSubscription {
      const full: SeatSubscription = { schedule: null, metadata: {}, phase: { discounts: [], default_tax_rates: [], metadata: {} }, itemTaxRates: [], ...s };
      subs.set(full.id, full);
      return full;
    },
    get,
    /** How the next increases are answered. */
    answerUpdates(a: UpdateAnswer) {
      answer = a;
    },
    schedulePhases: (subscriptionId: string) => [...schedules.values()].find((x) => x.subscription === subscriptionId)?.phases ?? [],
    /** The renewal: a schedule's next phase takes over (its quantity) and the period moves on. */
    renew(subscriptionId: string): SeatSubscription {
      const s = get(subscriptionId);
      const next = this.schedulePhases(subscriptionId)[1];
      if (next?.items[0]?.quantity !== undefined) s.quantity = next.items[0].quantity;
      const length = s.periodEnd - s.periodStart;
      s.periodStart = s.periodEnd;
      s.periodEnd += length;
      return s;
    },
  };
}

export type SeatStripe = ReturnType<typeof createSeatStripe>;
