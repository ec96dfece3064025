/**
 * Generated customer lifecycles: fast-check draws a list of intents, `interpretLifecycle` plays them
 * against a small Stripe-side state machine and returns the events a real account would emit, in
 * Stripe's order. Intents that do not apply in the current state are skipped, so any shrunk list is
 * still a valid history. Pure: no fixtures, no I/O (test/sim/render.ts turns events into envelopes).
 */
import fc from 'fast-check';

/** Prices of the simulated catalog (minor units). */
export const PRICES = { price_BasicMonthly: 900, price_ProMonthly: 2900, price_TeamMonthly: 9900 } as const;
export type PriceId = keyof typeof PRICES;
export const PRICE_IDS = Object.keys(PRICES) as PriceId[];

/** What a customer may do (or what happens to them) next. */
export type Op =
  | 'subscribe'
  | 'trial'
  | 'renew'
  | 'retry_fail'
  | 'card_update'
  | 'pay'
  | 'change_plan'
  | 'cancel_at_period_end'
  | 'delete'
  | 'void'
  | 'refund'
  | 'dispute'
  | 'email'
  | 'expire';

/** One drawn intent; `variant` picks among the ways it can happen, `gap` / `ticks` place it in time. */
export interface Intent {
  op: Op;
  /** 0..7: outcome / flavour (paid or failed renewal, which invoice, which price …). */
  variant: number;
  /** Seconds between the previous event and this step's first event (0: the same second). */
  gap: number;
  /** Bit i set: the step's event i+1 is one second after event i (else the same second where allowed). */
  ticks: number;
}

/** A customer's story as drawn by fast-check. */
export interface Lifecycle {
  /** A card is attached and made default right after customer.created. */
  cardAtSignup: boolean;
  start: 'paid' | 'trial' | 'incomplete' | 'none';
  intents: Intent[];
  /** A poison event goes in after this many intents (null: none). */
  poisonAfter: number | null;
  /** Which poison: a customer.updated whose name holds U+0000, or an invoice event whose attempt_count overflows int4. */
  poisonKind: PoisonKind;
}

/** Events that are verified and well-formed but must not block the customer: set aside, never applied as sent. */
export type PoisonKind = 'nul_name' | 'int_overflow';

export type SubStatus = 'trialing' | 'active' | 'past_due' | 'canceled' | 'incomplete' | 'incomplete_expired';
export type InvoiceStatus = 'draft' | 'open' | 'paid' | 'void' | 'uncollectible';

/** The Stripe-side subscription after an event. */
export interface SubObject {
  kind: 'subscription';
  id: string;
  status: SubStatus;
  priceId: PriceId;
  cancelAtPeriodEnd: boolean;
  cancelAt: number | null;
  canceledAt: number | null;
  endedAt: number | null;
  periodStart: number;
  periodEnd: number;
  trialStart: number | null;
  trialEnd: number | null;
  startedAt: number;
  latestInvoice: string | null;
  defaultPm: string | null;
}

/** The Stripe-side invoice after an event. */
export interface InvoiceObject {
  kind: 'invoice';
  id: string;
  subId: string;
  priceId: PriceId;
  amount: number;
  status: InvoiceStatus;
  attempts: number;
  billingReason: 'subscription_create' | 'subscription_cycle';
  createdAt: number;
  periodStart: number;
  periodEnd: number;
  finalizedAt: number | null;
  paidAt: number | null;
  voidedAt: number | null;
  nextPaymentAttempt: number | null;
  chargeId: string | null;
  paymentIntentId: string;
  number: string;
  /** How the last payment attempt failed (payloads on today's API do not say; kept for the report). */
  decline: 'soft' | 'hard' | 'authentication' | null;
}

export interface CustomerObject {
  kind: 'customer';
  id: string;
  email: string;
  name: string;
  defaultPm: string | null;
}

export interface PaymentMethodObject {
  kind: 'payment_method';
  id: string;
  brand: 'visa' | 'mastercard';
  last4: string;
}

export interface ChargeObject {
  kind: 'charge';
  id: string;
  paymentIntentId: string;
  amount: number;
  amountRefunded: number;
  createdAt: number;
  paymentMethodId: string | null;
}

export interface DisputeObject {
  kind: 'dispute';
  id: string;
  chargeId: string;
  paymentIntentId: string;
  amount: number;
}

export type SimObject = SubObject | InvoiceObject | CustomerObject | PaymentMethodObject | ChargeObject | DisputeObject;

/** One event of a history: the object as Stripe has it right after the event. */
export interface SimEvent {
  id: string;
  type: string;
  created: number;
  object: SimObject;
  /** `data.previous_attributes`, when Stripe sends it. */
  previous: Record<string, unknown> | null;
  /** The injected poison event, if it is one. */
  poison: PoisonKind | null;
  /** Index of the step (in `History.steps`) that emitted it. */
  step: number;
}

/** A rendered story: what happened (steps) and the events Stripe emitted, in Stripe's order. */
export interface History {
  customerId: string;
  token: string;
  steps: string[];
  events: SimEvent[];
}

const OP_WEIGHTS: [Op, number][] = [
  ['renew', 6],
  ['pay', 4],
  ['retry_fail', 3],
  ['card_update', 3],
  ['change_plan', 2],
  ['cancel_at_period_end', 2],
  ['delete', 2],
  ['subscribe', 2],
  ['trial', 1],
  ['void', 1],
  ['refund', 1],
  ['dispute', 1],
  ['email', 1],
  ['expire', 1],
];

/** One intent. */
export const intentArb: fc.Arbitrary<Intent> = fc.record({
  op: fc.oneof(...OP_WEIGHTS.map(([op, weight]) => ({ arbitrary: fc.constant(op), weight }))),
  variant: fc.nat({ max: 7 }),
  gap: fc.oneof({ arbitrary: fc.constant(0), weight: 2 }, { arbitrary: fc.integer({ min: 1, max: 3 }), weight: 3 }),
  ticks: fc.nat({ max: 0xff }),
});

/** A customer lifecycle: setup, a start, up to 12 intents, and rarely a poison event. */
export const lifecycleArb: fc.Arbitrary<Lifecycle> = fc.record({
  cardAtSignup: fc.boolean(),
  start: fc.oneof(
    { arbitrary: fc.constant('paid' as const), weight: 5 },
    { arbitrary: fc.constant('trial' as const), weight: 2 },
    { arbitrary: fc.constant('incomplete' as const), weight: 1 },
    { arbitrary: fc.constant('none' as const), weight: 1 },
  ),
  intents: fc.array(intentArb, { minLength: 1, maxLength: 12 }),
  poisonAfter: fc.oneof({ arbitrary: fc.constant(null), weight: 19 }, { arbitrary: fc.nat({ max: 11 }), weight: 1 }),
  poisonKind: fc.constantFrom<PoisonKind>('nul_name', 'int_overflow'),
});

const DAY = 86_400;
const PERIOD = 30 * DAY;
const ENDED: ReadonlySet<SubStatus> = new Set(['canceled', 'incomplete_expired']);

/** True for the subscription statuses after which Stripe sends nothing more for it. */
export function isEndedStatus(status: string): boolean {
  return ENDED.has(status as SubStatus);
}

/**
 * Plays a lifecycle. `token` makes every id unique (`cus_<token>`, `sub_<token>_1`, …); `startAt` is the
 * unix second of the first event. Event `created` never decreases; events of one subscription or of the
 * customer object never share a second (the engine settles those ties by asking Stripe, which the model
 * cannot predict); invoice events and events of different objects may.
 */
export function interpretLifecycle(lc: Lifecycle, token: string, startAt: number): History {
  const customerId = `cus_${token}`;
  const steps: string[] = [];
  const events: SimEvent[] = [];
  const lastOfObject = new Map<string, number>();
  const counters = { sub: 0, inv: 0, pm: 0, evt: 0, dispute: 0 };
  let clock = startAt;
  let stepTicks = 0;
  let stepIndex = 0;

  const customer: CustomerObject = { kind: 'customer', id: customerId, email: `${token.toLowerCase()}@example.com`, name: 'Ada Lovelace', defaultPm: null };
  const pms: PaymentMethodObject[] = [];
  const subs: SubObject[] = [];
  const invoices: InvoiceObject[] = [];
  const charges = new Map<string, ChargeObject>();
  const disputed = new Set<string>();

  function beginStep(description: string, gap: number, ticks: number): void {
    steps.push(description);
    stepIndex = steps.length - 1;
    stepTicks = ticks;
    clock += gap;
  }

  /** Appends one event; `objectKey` set: strictly after the previous event of that object. */
  function emit(type: string, object: SimObject, opts: { previous?: Record<string, unknown> | null; objectKey?: string; poison?: PoisonKind } = {}): number {
    const inStep = events.filter((e) => e.step === stepIndex).length;
    if (inStep > 0 && (stepTicks >> (inStep - 1)) & 1) clock += 1;
    if (opts.objectKey !== undefined) {
      const last = lastOfObject.get(opts.objectKey);
      if (last !== undefined && last >= clock) clock = last + 1;
      lastOfObject.set(opts.objectKey, clock);
    }
    events.push({
      id: `evt_${token}_${String(++counters.evt).padStart(3, '0')}`,
      type,
      created: clock,
      object: structuredClone(object),
      previous: opts.previous ?? null,
      poison: opts.poison ?? null,
      step: stepIndex,
    });
    return clock;
  }

  // Objects are snapshotted in `emit`, so each event carries the state as of that event.
  const emitCustomer = (type: string, previous: Record<string, unknown> | null, poison?: 'nul_name') =>
    emit(type, poison ? { ...customer, name: 'Ada\u0000Lovelace' } : customer, { previous, objectKey: 'customer', ...(poison ? { poison } : {}) });
  const emitSub = (type: string, sub: SubObject, previous: Record<string, unknown> | null = null) => emit(type, sub, { previous, objectKey: sub.id });
  const emitInvoice = (type: string, inv: InvoiceObject) => emit(type, inv);

  const liveSub = (): SubObject | undefined => subs.find((s) => !ENDED.has(s.status));
  const openInvoices = (pred: (i: InvoiceObject) => boolean = () => true) => invoices.filter((i) => i.status === 'open' && pred(i));
  const pick = <T>(xs: T[], variant: number): T | undefined => (xs.length === 0 ? undefined : xs[variant % xs.length]);
  const itemsOf = (sub: SubObject) => ({ priceId: sub.priceId, periodStart: sub.periodStart, periodEnd: sub.periodEnd });

  function newPaymentMethod(): PaymentMethodObject {
    const n = ++counters.pm;
    const pm: PaymentMethodObject = { kind: 'payment_method', id: `pm_${token}_${n}`, brand: n % 2 ? 'visa' : 'mastercard', last4: String(4242 + n).slice(-4) };
    pms.push(pm);
    return pm;
  }

  function setDefaultPm(pmId: string): void {
    const previous = customer.defaultPm;
    customer.defaultPm = pmId;
    emitCustomer('customer.updated', { invoice_settings: { default_payment_method: previous } });
  }

  function newInvoice(sub: SubObject, reason: InvoiceObject['billingReason'], amount: number): InvoiceObject {
    const n = ++counters.inv;
    const inv: InvoiceObject = {
      kind: 'invoice',
      id: `in_${token}_${n}`,
      subId: sub.id,
      priceId: sub.priceId,
      amount,
      status: 'draft',
      attempts: 0,
      billingReason: reason,
      createdAt: clock,
      periodStart: reason === 'subscription_create' ? sub.periodStart : sub.periodStart - PERIOD,
      periodEnd: sub.periodStart,
      finalizedAt: null,
      paidAt: null,
      voidedAt: null,
      nextPaymentAttempt: null,
      chargeId: null,
      paymentIntentId: `pi_${token}_${n}`,
      number: `${token.slice(-6).toUpperCase()}-${String(n).padStart(4, '0')}`,
      decline: null,
    };
    invoices.push(inv);
    sub.latestInvoice = inv.id;
    return inv;
  }

  function finalize(inv: InvoiceObject, withCreated: boolean): void {
    if (withCreated) emitInvoice('invoice.created', inv); // the draft: recorded, never over a finalized state
    inv.status = 'open';
    inv.finalizedAt = clock;
    inv.nextPaymentAttempt = clock;
    emitInvoice('invoice.finalized', inv);
  }

  function pay(inv: InvoiceObject, alsoSucceeded: boolean): void {
    inv.status = 'paid';
    inv.attempts += 1;
    inv.paidAt = clock;
    inv.nextPaymentAttempt = null;
    inv.decline = null;
    if (inv.amount > 0) {
      inv.chargeId = `ch_${inv.id.slice(3)}`;
      charges.set(inv.chargeId, {
        kind: 'charge',
        id: inv.chargeId,
        paymentIntentId: inv.paymentIntentId,
        amount: inv.amount,
        amountRefunded: 0,
        createdAt: clock,
        paymentMethodId: customer.defaultPm,
      });
    }
    emitInvoice('invoice.paid', inv);
    if (alsoSucceeded) emitInvoice('invoice.payment_succeeded', inv);
  }

  function fail(inv: InvoiceObject, decline: NonNullable<InvoiceObject['decline']>): void {
    inv.attempts += 1;
    inv.decline = decline;
    inv.nextPaymentAttempt = decline === 'soft' ? clock + 3 * DAY : null;
    emitInvoice(decline === 'authentication' ? 'invoice.payment_action_required' : 'invoice.payment_failed', inv);
  }

  function setSubStatus(sub: SubObject, status: SubStatus): void {
    if (sub.status === status) return;
    const previous = { status: sub.status };
    sub.status = status;
    emitSub('customer.subscription.updated', sub, previous);
  }

  function subscribe(kind: 'paid' | 'trial' | 'incomplete', priceId: PriceId, withInvoiceCreated: boolean, alsoSucceeded: boolean): void {
    const n = ++counters.sub;
    const periodStart = startAt - 10 * DAY + n * PERIOD;
    const sub: SubObject = {
      kind: 'subscription',
      id: `sub_${token}_${n}`,
      status: kind === 'trial' ? 'trialing' : kind === 'incomplete' ? 'incomplete' : 'active',
      priceId,
      cancelAtPeriodEnd: false,
      cancelAt: null,
      canceledAt: null,
      endedAt: null,
      periodStart,
      periodEnd: periodStart + (kind === 'trial' ? 14 * DAY : PERIOD),
      trialStart: kind === 'trial' ? periodStart : null,
      trialEnd: kind === 'trial' ? periodStart + 14 * DAY : null,
      startedAt: clock,
      latestInvoice: null,
      defaultPm: customer.defaultPm,
    };
    subs.push(sub);
    const inv = newInvoice(sub, 'subscription_create', kind === 'trial' ? 0 : PRICES[priceId]);
    emitSub('customer.subscription.created', sub);
    finalize(inv, withInvoiceCreated);
    if (kind === 'incomplete') fail(inv, 'soft');
    else pay(inv, alsoSucceeded);
  }

  function endSub(sub: SubObject, voidOpen: boolean): void {
    const status: SubStatus = sub.status === 'incomplete' ? 'incomplete_expired' : 'canceled';
    const previous = { status: sub.status };
    sub.status = status;
    sub.canceledAt ??= clock;
    sub.endedAt = clock;
    if (status === 'canceled') emitSub('customer.subscription.deleted', sub);
    else emitSub('customer.subscription.updated', sub, previous);
    if (voidOpen) for (const inv of openInvoices((i) => i.subId === sub.id)) voidInvoice(inv);
  }

  function voidInvoice(inv: InvoiceObject): void {
    inv.status = 'void';
    inv.voidedAt = clock;
    inv.nextPaymentAttempt = null;
    emitInvoice('invoice.voided', inv);
  }

  /** After a payment: a subscription with no open invoice left is healthy again. */
  function settleSub(subId: string): void {
    const sub = subs.find((s) => s.id === subId);
    if (!sub || ENDED.has(sub.status)) return;
    if ((sub.status === 'past_due' || sub.status === 'incomplete') && openInvoices((i) => i.subId === subId).length === 0) setSubStatus(sub, 'active');
  }

  function applyIntent(it: Intent): void {
    const v = it.variant;
    const bit = (k: number) => ((v >> k) & 1) === 1;
    const live = liveSub();
    switch (it.op) {
      case 'subscribe':
      case 'trial': {
        if (live) return;
        const kind = it.op === 'trial' ? 'trial' : v >= 6 ? 'incomplete' : 'paid';
        const price = PRICE_IDS[v % PRICE_IDS.length]!;
        beginStep(`subscribe (${kind}, ${price})`, it.gap, it.ticks);
        subscribe(kind, price, bit(1), bit(2));
        return;
      }
      case 'renew': {
        if (!live || live.status === 'incomplete') return;
        if (live.cancelAtPeriodEnd) {
          beginStep(`period ends with cancel_at_period_end: ${live.id} deleted`, it.gap, it.ticks);
          endSub(live, false);
          return;
        }
        const outcome = (['paid', 'paid', 'paid', 'soft', 'soft', 'hard', 'authentication', 'paid'] as const)[v]!;
        beginStep(`renew ${live.id} (${outcome === 'paid' ? 'paid' : `${outcome} decline`})`, it.gap, it.ticks);
        const previous: Record<string, unknown> = { items: { data: [itemsOf(live)] }, latest_invoice: live.latestInvoice };
        live.periodStart = live.periodEnd;
        live.periodEnd = live.periodStart + PERIOD;
        if (live.status === 'trialing') {
          previous.status = 'trialing';
          live.status = 'active';
        }
        const inv = newInvoice(live, 'subscription_cycle', PRICES[live.priceId]);
        if (bit(3)) emitInvoice('invoice.created', inv);
        emitSub('customer.subscription.updated', live, previous);
        finalize(inv, false);
        if (outcome === 'paid') pay(inv, bit(0));
        else {
          fail(inv, outcome);
          if (live.status === 'active') setSubStatus(live, 'past_due');
        }
        return;
      }
      case 'retry_fail': {
        const inv = pick(openInvoices((i) => i.subId === live?.id), v);
        if (!inv) return;
        const decline = (['soft', 'soft', 'hard', 'authentication'] as const)[v % 4]!;
        beginStep(`retry of ${inv.id} fails (${decline})`, it.gap, it.ticks);
        fail(inv, decline);
        return;
      }
      case 'card_update': {
        const mode = v % 3;
        beginStep(`card update (${['attach only', 'attach + set default', 'switch default'][mode]})`, it.gap, it.ticks);
        if (mode === 2 && pms.length >= 2) {
          const other = pms.find((p) => p.id !== customer.defaultPm)!;
          setDefaultPm(other.id);
          return;
        }
        const pm = newPaymentMethod();
        emit('payment_method.attached', pm);
        if (mode !== 0) setDefaultPm(pm.id);
        return;
      }
      case 'pay': {
        const inv = pick(openInvoices(), v);
        if (!inv) return;
        beginStep(`${inv.id} paid after failure`, it.gap, it.ticks);
        pay(inv, bit(1));
        settleSub(inv.subId);
        return;
      }
      case 'change_plan': {
        if (!live || live.status === 'incomplete') return;
        const others = PRICE_IDS.filter((p) => p !== live.priceId);
        const price = others[v % others.length]!;
        beginStep(`${PRICES[price] > PRICES[live.priceId] ? 'upgrade' : 'downgrade'} ${live.id} to ${price}`, it.gap, it.ticks);
        const previous = { items: { data: [itemsOf(live)] } };
        live.priceId = price;
        emitSub('customer.subscription.updated', live, previous);
        return;
      }
      case 'cancel_at_period_end': {
        if (!live || live.status === 'incomplete') return;
        const on = !live.cancelAtPeriodEnd;
        beginStep(`${on ? 'cancel at period end' : 'keep (undo cancel at period end)'} ${live.id}`, it.gap, it.ticks);
        const previous = { cancel_at_period_end: live.cancelAtPeriodEnd, cancel_at: live.cancelAt, canceled_at: live.canceledAt };
        live.cancelAtPeriodEnd = on;
        live.cancelAt = on ? live.periodEnd : null;
        live.canceledAt = on ? clock : null;
        emitSub('customer.subscription.updated', live, previous);
        return;
      }
      case 'delete': {
        if (!live) return;
        beginStep(`delete ${live.id}${bit(0) ? ' and void its open invoices' : ''}`, it.gap, it.ticks);
        endSub(live, bit(0));
        return;
      }
      case 'expire': {
        if (!live || live.status !== 'incomplete') return;
        beginStep(`${live.id} expires unpaid (incomplete_expired)`, it.gap, it.ticks);
        endSub(live, true);
        return;
      }
      case 'void': {
        const inv = pick(openInvoices(), v);
        if (!inv) return;
        beginStep(`void ${inv.id}`, it.gap, it.ticks);
        voidInvoice(inv);
        return;
      }
      case 'refund': {
        const charge = pick([...charges.values()].filter((c) => c.amountRefunded < c.amount), v);
        if (!charge) return;
        const full = bit(0) || charge.amountRefunded > 0;
        beginStep(`${full ? 'full' : 'partial'} refund of ${charge.id}`, it.gap, it.ticks);
        const previous = { amount_refunded: charge.amountRefunded, refunded: false };
        charge.amountRefunded = full ? charge.amount : Math.floor(charge.amount / 2);
        emit('charge.refunded', charge, { previous });
        return;
      }
      case 'dispute': {
        const charge = pick([...charges.values()].filter((c) => !disputed.has(c.id)), v);
        if (!charge) return;
        beginStep(`dispute on ${charge.id}`, it.gap, it.ticks);
        disputed.add(charge.id);
        emit('charge.dispute.created', {
          kind: 'dispute',
          id: `du_${token}_${++counters.dispute}`,
          chargeId: charge.id,
          paymentIntentId: charge.paymentIntentId,
          amount: charge.amount,
        });
        return;
      }
      case 'email': {
        beginStep('email change', it.gap, it.ticks);
        const previous = { email: customer.email };
        customer.email = `${token.toLowerCase()}+${events.length}@example.com`;
        emitCustomer('customer.updated', previous);
        return;
      }
    }
  }

  /**
   * The NUL poison carries the customer as it is, so applying it sanitized or setting it aside ends the
   * same; the overflow poison cannot be written at all and must be set aside (or refused at the door).
   */
  function poison(): void {
    const open = openInvoices()[0];
    if (lc.poisonKind === 'int_overflow' && open) {
      beginStep(`poison: invoice.finalized of ${open.id} with attempt_count 2^31 (int4 overflow)`, 1, 0);
      emit('invoice.finalized', open, { poison: 'int_overflow' });
      return;
    }
    beginStep('poison: customer.updated whose name holds U+0000', 1, 0);
    emitCustomer('customer.updated', { name: customer.name }, 'nul_name');
  }

  beginStep(lc.cardAtSignup ? 'sign up with a card' : 'sign up', 0, 0);
  emitCustomer('customer.created', null);
  if (lc.cardAtSignup) {
    const pm = newPaymentMethod();
    emit('payment_method.attached', pm);
    setDefaultPm(pm.id);
  }
  if (lc.start !== 'none') {
    beginStep(`subscribe (${lc.start}, price_ProMonthly)`, 1, 0b10);
    subscribe(lc.start, 'price_ProMonthly', lc.start === 'paid', false);
  }
  lc.intents.forEach((it, i) => {
    if (lc.poisonAfter === i) poison();
    applyIntent(it);
  });
  if (lc.poisonAfter !== null && lc.poisonAfter >= lc.intents.length) poison();
  return { customerId, token, steps, events };
}
