/**
 * Renders simulated events as Stripe webhook envelopes: each one a copy of the fixture of its type
 * (test/fixtures/events, in the pinned API version's shape) with ids, statuses, amounts and times
 * substituted. Never expanded: ids stay strings, as in every webhook.
 */
import { loadFixtureText } from '../fixtures';
import { PRICES, type History, type PriceId, type SimEvent, type SubObject } from './lifecycle';

/** A webhook envelope as Stripe posts it (parsed JSON). */
export type Envelope = Record<string, any>;

/** attempt_count of the 'int_overflow' poison: one past int4. */
export const POISON_ATTEMPT_COUNT = 2 ** 31;

const PLAN_OF: Record<PriceId, { planId: string; name: string; lookupKey: string }> = {
  price_BasicMonthly: { planId: 'basic', name: 'Basic', lookupKey: 'basic_monthly' },
  price_ProMonthly: { planId: 'pro', name: 'Pro', lookupKey: 'pro_monthly' },
  price_TeamMonthly: { planId: 'team', name: 'Team', lookupKey: 'team_monthly' },
};

const texts = new Map<string, string>();
function fixtureText(type: string): string {
  let text = texts.get(type);
  if (text === undefined) {
    text = loadFixtureText(type);
    texts.set(type, text);
  }
  return text;
}

function replaceAll(text: string, pairs: [string, string][]): string {
  for (const [from, to] of pairs) text = text.split(from).join(to);
  return text;
}

const itemId = (subId: string) => `si_${subId.slice(4)}`;

/** The fixture ids of one event's objects, mapped to the history's ids (the rest of "Fixture" → token). */
function idPairs(h: History, e: SimEvent): [string, string][] {
  const pairs: [string, string][] = [
    ['cus_FixtureCustomer01', h.customerId],
    ['usr_Fixture01', `usr_${h.token}`],
  ];
  const o = e.object;
  switch (o.kind) {
    case 'subscription':
      pairs.push(['sub_Fixture01', o.id], ['si_Fixture01', itemId(o.id)]);
      break;
    case 'invoice':
      pairs.push(['in_Fixture01', o.id], ['sub_Fixture01', o.subId], ['si_Fixture01', itemId(o.subId)], ['pi_Fixture01', o.paymentIntentId]);
      pairs.push(['il_1SiqFixtureLine01', `il_${o.id.slice(3)}`]);
      break;
    case 'charge':
      pairs.push(['ch_Fixture01', o.id], ['pi_Fixture01', o.paymentIntentId], ['txn_1SjbFixtureCharge01', `txn_${o.id.slice(3)}`]);
      break;
    case 'dispute':
      pairs.push(['du_1SmFixtureDispute01', o.id], ['txn_1SmFixtureDispute01', `txn_${o.id.slice(3)}`], ['ch_Fixture01', o.chargeId], ['pi_Fixture01', o.paymentIntentId]);
      break;
    case 'payment_method':
      pairs.push(['pm_FixtureMastercard01', o.id]);
      break;
    case 'customer':
      break;
  }
  return pairs;
}

/** The envelope Stripe would post for `e` of history `h`. */
export function renderEnvelope(h: History, e: SimEvent): Envelope {
  const text = replaceAll(fixtureText(e.type), idPairs(h, e)).replace(/Fixture/g, h.token);
  const env: Envelope = JSON.parse(text);
  env.id = e.id;
  env.type = e.type;
  env.created = e.created;
  env.livemode = false;
  env.pending_webhooks = 1;
  if (env.request?.id) env.request = { id: `req_${e.id.slice(4)}`, idempotency_key: `${e.id.slice(4)}-key` };
  else env.request = { id: null, idempotency_key: null };
  const obj = env.data.object;
  const o = e.object;
  let previous: Record<string, unknown> | null = e.previous;
  switch (o.kind) {
    case 'customer': {
      const signup = h.events[0]!.created;
      obj.created = signup - 1;
      obj.email = o.email;
      obj.name = o.name;
      obj.invoice_settings.default_payment_method = o.defaultPm;
      obj.currency = e.type === 'customer.created' ? null : 'usd';
      break;
    }
    case 'payment_method': {
      obj.customer = h.customerId;
      obj.created = e.created - 5;
      obj.card.brand = o.brand;
      obj.card.display_brand = o.brand;
      obj.card.networks.available = [o.brand];
      obj.card.last4 = o.last4;
      obj.card.fingerprint = `fp${o.id.slice(-10)}`;
      break;
    }
    case 'subscription':
      renderSubscription(obj, o);
      if (previous?.items) previous = { ...previous, items: itemsList(o, previous.items as { data: ItemFields[] }) };
      break;
    case 'invoice': {
      const paid = o.status === 'paid';
      const closed = paid || o.status === 'void';
      obj.status = o.status;
      obj.created = o.createdAt;
      obj.amount_due = o.amount;
      obj.amount_paid = paid ? o.amount : 0;
      obj.amount_remaining = closed ? 0 : o.amount;
      for (const k of ['subtotal', 'subtotal_excluding_tax', 'total', 'total_excluding_tax']) obj[k] = o.amount;
      obj.attempt_count = o.attempts;
      obj.attempted = o.attempts > 0;
      obj.auto_advance = !closed;
      obj.billing_reason = o.billingReason;
      obj.period_start = o.periodStart;
      obj.period_end = o.periodEnd;
      obj.next_payment_attempt = o.nextPaymentAttempt;
      obj.effective_at = o.finalizedAt;
      obj.number = o.status === 'draft' ? null : o.number;
      obj.receipt_number = paid ? `${o.number}-R` : null;
      obj.webhooks_delivered_at = o.createdAt + 1;
      // A draft has no hosted page yet and is due to finalize about an hour after it was created.
      if (o.status === 'draft') obj.hosted_invoice_url = obj.invoice_pdf = null;
      obj.automatically_finalizes_at = o.status === 'draft' ? o.createdAt + 3600 : null;
      obj.status_transitions = { finalized_at: o.finalizedAt, marked_uncollectible_at: null, paid_at: o.paidAt, voided_at: o.voidedAt };
      obj.parent.subscription_details.metadata.plan_id = PLAN_OF[o.priceId].planId;
      const line = obj.lines.data[0];
      line.amount = line.subtotal = o.amount;
      line.description = `1 × ${PLAN_OF[o.priceId].name} (at $${(PRICES[o.priceId] / 100).toFixed(2)} / month)`;
      line.period = { start: o.periodEnd, end: o.periodEnd + 30 * 86_400 };
      line.pricing.price_details = { price: o.priceId, product: `prod_${PLAN_OF[o.priceId].name}Plan` };
      line.pricing.unit_amount_decimal = String(o.amount);
      break;
    }
    case 'charge': {
      obj.amount = obj.amount_captured = o.amount;
      obj.amount_refunded = o.amountRefunded;
      obj.refunded = o.amountRefunded >= o.amount;
      obj.created = o.createdAt;
      obj.payment_method = o.paymentMethodId;
      obj.payment_method_details.card.amount_authorized = o.amount;
      obj.payment_method_details.card.overcapture.maximum_amount_capturable = o.amount;
      break;
    }
    case 'dispute': {
      obj.amount = o.amount;
      obj.created = e.created - 2;
      obj.evidence_details.due_by = e.created + 21 * 86_400;
      const txn = obj.balance_transactions[0];
      txn.amount = -o.amount;
      txn.net = -(o.amount + txn.fee);
      txn.created = txn.available_on = e.created - 2;
      break;
    }
  }
  // Passes the ingest and the normalizer (a safe integer), fails in Postgres (attempt_count is int4).
  if (e.poison === 'int_overflow') obj.attempt_count = POISON_ATTEMPT_COUNT;
  if (previous) env.data.previous_attributes = previous;
  else delete env.data.previous_attributes;
  return env;
}

interface ItemFields {
  priceId: PriceId;
  periodStart: number;
  periodEnd: number;
}

/** The subscription fixture's single item, repriced and re-dated. */
function renderItem(item: any, f: ItemFields): any {
  const plan = PLAN_OF[f.priceId];
  const amount = PRICES[f.priceId];
  item.current_period_start = f.periodStart;
  item.current_period_end = f.periodEnd;
  item.price.id = f.priceId;
  item.price.nickname = `${plan.name} (monthly)`;
  item.price.product = `prod_${plan.name}Plan`;
  item.price.metadata = { plan_id: plan.planId };
  item.price.lookup_key = plan.lookupKey;
  item.price.unit_amount = amount;
  item.price.unit_amount_decimal = String(amount);
  return item;
}

let subscriptionTemplate: any = null;

/** `items` as previous_attributes carries it: the whole list as it was. */
function itemsList(o: SubObject, old: { data: ItemFields[] }): any {
  subscriptionTemplate ??= JSON.parse(fixtureText('customer.subscription.updated')).data.object.items.data[0];
  const item = renderItem(structuredClone(subscriptionTemplate), old.data[0]!);
  item.id = itemId(o.id);
  item.subscription = o.id;
  item.created = o.startedAt;
  return { object: 'list', data: [item], has_more: false, url: `/v1/subscription_items?subscription=${o.id}` };
}

function renderSubscription(obj: any, o: SubObject): void {
  obj.status = o.status;
  obj.created = obj.start_date = o.startedAt;
  obj.billing_cycle_anchor = o.trialEnd ?? o.startedAt;
  obj.cancel_at_period_end = o.cancelAtPeriodEnd;
  obj.cancel_at = o.cancelAt;
  obj.canceled_at = o.canceledAt;
  obj.ended_at = o.endedAt;
  obj.trial_start = o.trialStart;
  obj.trial_end = o.trialEnd;
  obj.latest_invoice = o.latestInvoice;
  obj.default_payment_method = o.defaultPm;
  obj.metadata.plan_id = PLAN_OF[o.priceId].planId;
  obj.cancellation_details = { comment: null, feedback: null, reason: o.canceledAt === null ? null : 'cancellation_requested' };
  const item = renderItem(obj.items.data[0], o);
  item.created = o.startedAt;
}
