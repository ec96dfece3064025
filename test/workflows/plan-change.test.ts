/**
 * Plan changes, cancel and resume as Workflow Updates on the customer workflow, on the Temporal dev
 * server. Activities are the real ones on a real Postgres database, faked only at the Stripe boundary
 * (the five Stripe-writing activities answer as Stripe would). Webhooks are stripeEvent signals.
 */
import { WorkflowUpdateFailedError, WorkflowUpdateStage, type Client, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type Stripe from 'stripe';
import { createPlanChangeStripeActivities, type ScheduleDowngradeInput, type UpdateSubscriptionPlanInput, type UpdateSubscriptionPlanOutcome } from '../../activities/plan-change';
import { readCustomer } from '../../api/routes/customers';
import type { BillingEvent, SubscriptionData } from '../../domain/billing-event';
import { customerWorkflowId } from '../../domain/ids';
import { type ChangePlanResult, type CustomerWorkflowState } from '../../domain/messages';
import { cancelPendingPlanChangeUpdate, cancelSubscriptionUpdate, changePlanUpdate, resumeSubscriptionUpdate, stateQuery, stripeEventSignal } from '../../workflows/contracts';
import type { Plan } from '../../domain/plan-catalog';
import { subscriptionVersion } from '../../domain/plan-change';
import { syncPlans } from '../../lib/plan-catalog-sync';
import { loadCurrentSubscription } from '../../lib/subscriptions';
import { buildTestApp, stopTestDispatchers } from '../helpers/app';
import { customerCreatedEvent, slimSubscriptionEvent, startCustomerWorkflow } from '../helpers/customer-events';
import {
  createTestDatabase,
  eventually,
  realActivities,
  startTestWorker,
  testClient,
  testConfig,
  uniqueId,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';

const PLANS: Plan[] = [
  { id: 'basic-monthly', stripePriceId: 'price_wf_basic', name: 'Basic', amount: 900, currency: 'usd', interval: 'month', rank: 10, active: true },
  { id: 'pro-monthly', stripePriceId: 'price_wf_pro', name: 'Pro', amount: 2900, currency: 'usd', interval: 'month', rank: 20, active: true },
  { id: 'enterprise-monthly', stripePriceId: 'price_wf_ent', name: 'Enterprise', amount: 9900, currency: 'usd', interval: 'month', rank: 30, active: true },
  { id: 'pro-eur', stripePriceId: 'price_wf_pro_eur', name: 'Pro (EUR)', amount: 2700, currency: 'eur', interval: 'month', rank: 25, active: true },
  { id: 'legacy', stripePriceId: 'price_wf_legacy', name: 'Legacy', amount: 500, currency: 'usd', interval: 'month', rank: 5, active: false },
];
const price = (planId: string) => PLANS.find((p) => p.id === planId)!.stripePriceId;

const NOW = Math.floor(Date.now() / 1000);
const PERIOD_START = NOW - 10 * 86_400;
const PERIOD_END = NOW + 20 * 86_400;

type Call = { name: string; input: Record<string, unknown> };

describe('plan changes as Workflow Updates (dev server, Stripe faked at the activity boundary)', () => {
  let db: TestDatabase;
  let client: Client;
  let worker: RunningWorker;
  const config = testConfig();
  let calls: Call[] = [];
  /** Per requestId: how Stripe answers an upgrade (default: paid at once). */
  const upgradeAnswers = new Map<string, (input: UpdateSubscriptionPlanInput) => Promise<UpdateSubscriptionPlanOutcome>>();
  /** Per requestId: how Stripe answers a downgrade (default: scheduled for PERIOD_END). */
  const downgradeAnswers = new Map<string, (input: ScheduleDowngradeInput) => Promise<{ scheduleId: string; effectiveAt: number | null }>>();
  let clock = NOW - 3600;

  const fakeStripe = {
    async updateSubscriptionPlan(input: UpdateSubscriptionPlanInput): Promise<UpdateSubscriptionPlanOutcome> {
      calls.push({ name: 'updateSubscriptionPlan', input: { ...input } });
      const answer = upgradeAnswers.get(input.requestId);
      if (answer) return answer(input);
      return { outcome: 'confirmed', subscriptionStatus: 'active', invoiceId: `in_${input.requestId}`, expiresAt: null, paymentStatus: 'succeeded', declineCode: null };
    },
    async scheduleSubscriptionDowngrade(input: ScheduleDowngradeInput) {
      calls.push({ name: 'scheduleSubscriptionDowngrade', input: { ...input } });
      const answer = downgradeAnswers.get(input.requestId);
      if (answer) return answer(input);
      return { scheduleId: `sub_sched_${input.requestId}`, effectiveAt: PERIOD_END };
    },
    async releaseSubscriptionSchedule(input: { customerId: string; subscriptionId: string; requestId: string; scheduleId: string | null; step?: string }) {
      calls.push({ name: 'releaseSubscriptionSchedule', input: { ...input } });
      return { released: true, scheduleId: input.scheduleId };
    },
    async cancelStripeSubscription(input: { customerId: string; subscriptionId: string; requestId: string; atPeriodEnd: boolean }) {
      calls.push({ name: 'cancelStripeSubscription', input: { ...input } });
      return { status: input.atPeriodEnd ? ('active' as const) : ('canceled' as const), cancelAtPeriodEnd: input.atPeriodEnd };
    },
    async resumeStripeSubscription(input: { customerId: string; subscriptionId: string; requestId: string }) {
      calls.push({ name: 'resumeStripeSubscription', input: { ...input } });
      return { status: 'active' as const, cancelAtPeriodEnd: false };
    },
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await testClient();
    await syncPlans(db.sql, PLANS);
    worker = await startTestWorker({
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      activities: { ...realActivities(db.sql, config), ...fakeStripe },
    });
  });

  beforeEach(() => {
    calls = [];
  });

  afterAll(async () => {
    await stopTestDispatchers();
    await worker?.stop();
    await client?.connection.close();
    await db?.drop();
  });

  /** A slim subscription event, each one newer than the last (the watermark never sees a tie). */
  function subscriptionEvent(customerId: string, subscriptionId: string, data: Partial<SubscriptionData>, type = 'customer.subscription.updated'): BillingEvent {
    clock += 5;
    return slimSubscriptionEvent({ customerId, subscriptionId, created: clock, type, data: { priceId: price('basic-monthly'), currentPeriodStart: PERIOD_START, currentPeriodEnd: PERIOD_END, ...data } });
  }

  interface Customer {
    customerId: string;
    subscriptionId: string;
    handle: WorkflowHandle;
    /** Delivers a webhook-equivalent event and waits until the workflow applied it. */
    webhook(data: Partial<SubscriptionData>): Promise<CustomerWorkflowState>;
    state(): Promise<CustomerWorkflowState>;
  }

  /** Starts a customer workflow whose subscription (from a created event) is on `priceId`. */
  async function startCustomer(opts: { priceId?: string | null; status?: SubscriptionData['status']; continueAsNewAfter?: number } = {}): Promise<Customer> {
    const customerId = `cus_${uniqueId()}`;
    const subscriptionId = `sub_${uniqueId()}`;
    const first = subscriptionEvent(
      customerId,
      subscriptionId,
      { priceId: opts.priceId === undefined ? price('basic-monthly') : opts.priceId, status: opts.status ?? 'active' },
      'customer.subscription.created',
    );
    const handle = await startCustomerWorkflow(client, {
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      customerId,
      event: first,
      input: opts.continueAsNewAfter ? { continueAsNewAfter: opts.continueAsNewAfter } : {},
    });
    const state = () => handle.query(stateQuery);
    let lastEventId = first.eventId;
    await eventually(async () => (await state()).lastEventId === lastEventId, 20_000, 'the subscription to be applied');
    return {
      customerId,
      subscriptionId,
      handle,
      state,
      async webhook(data) {
        const event = subscriptionEvent(customerId, subscriptionId, data);
        lastEventId = event.eventId;
        await client.workflow.getHandle(customerWorkflowId(customerId)).signal(stripeEventSignal, event);
        return eventually(async () => {
          const s = await client.workflow.getHandle(customerWorkflowId(customerId)).query(stateQuery);
          return s.lastEventId === lastEventId ? s : null;
        }, 20_000, 'the webhook to be applied');
      },
    };
  }

  /** What a preview answers now: its proration date and the version of the local row it read. */
  async function previewPins(customerId: string): Promise<{ prorationDate: number; subscriptionVersion?: string }> {
    const sub = await loadCurrentSubscription(db.sql, customerId);
    return { prorationDate: Math.floor(Date.now() / 1000), ...(sub ? { subscriptionVersion: subscriptionVersion(sub) } : {}) };
  }

  /** A commit as a client sends it after a preview; `unpinned` sends only what `extra` holds. */
  const changePlan = async (c: Customer, planId: string, requestId: string, extra: { prorationDate?: number; subscriptionVersion?: string; unpinned?: boolean } = {}) => {
    const { unpinned, ...given } = extra;
    const pins = unpinned ? {} : await previewPins(c.customerId);
    return c.handle.executeUpdate(changePlanUpdate, { args: [{ planId, requestId, ...pins, ...given }] });
  };

  /** The ApplicationFailure type an update was rejected with. */
  async function rejection(p: Promise<unknown>): Promise<string> {
    try {
      await p;
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) return err.cause.type ?? 'untyped';
      throw err;
    }
    throw new Error('expected the update to be rejected');
  }

  async function localRow(subscriptionId: string) {
    const rows = await db.sql<{ plan_id: string | null; pending_plan_id: string | null; pending_plan_effective_at: Date | null; cancel_at_period_end: boolean }[]>`
      SELECT plan_id, pending_plan_id, pending_plan_effective_at, cancel_at_period_end FROM subscriptions WHERE id = ${subscriptionId}`;
    return rows[0]!;
  }

  it('upgrades now, answers confirmed, and changes the local row only when the webhook confirms it', async () => {
    const c = await startCustomer();
    const result = await changePlan(c, 'pro-monthly', 'up-1');
    expect(result).toMatchObject({ requestId: 'up-1', kind: 'upgrade', fromPlanId: 'basic-monthly', toPlanId: 'pro-monthly', status: 'confirmed', invoiceId: 'in_up-1' });
    expect(calls).toHaveLength(1);
    const sent = calls[0]!.input as unknown as UpdateSubscriptionPlanInput;
    expect(sent).toMatchObject({ customerId: c.customerId, subscriptionId: c.subscriptionId, requestId: 'up-1', fromPriceId: price('basic-monthly'), toPriceId: price('pro-monthly') });
    expect(Math.abs(sent.prorationDate - Math.floor(Date.now() / 1000))).toBeLessThan(60);
    expect(result.effectiveAt).toBe(sent.prorationDate);

    expect((await localRow(c.subscriptionId)).plan_id).toBe('basic-monthly');
    expect((await c.state()).planChange).toMatchObject({ requestId: 'up-1', status: 'confirmed' });
    // Stripe already shows pro: asking for pro again is "the current plan", even before the webhook.
    expect(await rejection(changePlan(c, 'pro-monthly', 'up-again'))).toBe('SamePlan');

    await c.webhook({ priceId: price('pro-monthly') });
    expect((await localRow(c.subscriptionId)).plan_id).toBe('pro-monthly');
  });

  it('uses the preview proration date when one is given', async () => {
    const c = await startCustomer();
    const prorationDate = Math.floor(Date.now() / 1000) - 120;
    await changePlan(c, 'enterprise-monthly', 'up-pinned', { prorationDate });
    expect(calls[0]!.input).toMatchObject({ prorationDate });
  });

  it('schedules a downgrade for the period end and applies it at renewal', async () => {
    const c = await startCustomer({ priceId: price('pro-monthly') });
    const result = await changePlan(c, 'basic-monthly', 'down-1');
    expect(result).toMatchObject({ kind: 'downgrade', fromPlanId: 'pro-monthly', toPlanId: 'basic-monthly', status: 'scheduled', effectiveAt: PERIOD_END });
    expect(calls.map((x) => x.name)).toEqual(['scheduleSubscriptionDowngrade']);
    expect(calls[0]!.input).toMatchObject({ fromPriceId: price('pro-monthly'), toPriceId: price('basic-monthly'), toInterval: 'month' });

    const row = await localRow(c.subscriptionId);
    expect(row).toMatchObject({ plan_id: 'pro-monthly', pending_plan_id: 'basic-monthly' });
    expect(row.pending_plan_effective_at?.getTime()).toBe(PERIOD_END * 1000);
    expect((await readCustomer(db.sql, c.customerId))?.subscription).toMatchObject({ planId: 'pro-monthly', pendingPlanId: 'basic-monthly' });
    expect((await c.state()).planChange).toMatchObject({ status: 'scheduled', scheduleId: 'sub_sched_down-1', effectiveAt: PERIOD_END });
    expect(await rejection(changePlan(c, 'enterprise-monthly', 'up-while-scheduled'))).toBe('ChangeInFlight');

    // Renewal: Stripe's schedule moved the subscription to the basic price for the new period.
    const state = await c.webhook({ priceId: price('basic-monthly'), currentPeriodStart: PERIOD_END, currentPeriodEnd: PERIOD_END + 30 * 86_400 });
    expect(state.planChange).toMatchObject({ requestId: 'down-1', status: 'confirmed' });
    expect(await localRow(c.subscriptionId)).toMatchObject({ plan_id: 'basic-monthly', pending_plan_id: null, pending_plan_effective_at: null });
    // The same request again: no second schedule, the same answer (the state query tells what happened since).
    expect(await changePlan(c, 'basic-monthly', 'down-1')).toEqual(result);
    expect(calls.map((x) => x.name)).toEqual(['scheduleSubscriptionDowngrade']);
  });

  it('cancels a scheduled downgrade before renewal', async () => {
    const c = await startCustomer({ priceId: price('pro-monthly') });
    await changePlan(c, 'basic-monthly', 'down-2');
    const canceled = await c.handle.executeUpdate(cancelPendingPlanChangeUpdate, { args: [{ requestId: 'cp-1' }] });
    expect(canceled).toMatchObject({ status: 'canceled', fromPlanId: 'pro-monthly', toPlanId: 'basic-monthly' });
    expect(calls.map((x) => x.name)).toEqual(['scheduleSubscriptionDowngrade', 'releaseSubscriptionSchedule']);
    expect(calls[1]!.input).toMatchObject({ scheduleId: 'sub_sched_down-2', requestId: 'cp-1', step: 'release' });
    expect(await localRow(c.subscriptionId)).toMatchObject({ plan_id: 'pro-monthly', pending_plan_id: null });
    expect((await c.state()).planChange).toMatchObject({ requestId: 'down-2', status: 'canceled' });

    // Renewal on the old price: the subscription stays on pro.
    await c.webhook({ priceId: price('pro-monthly'), currentPeriodStart: PERIOD_END, currentPeriodEnd: PERIOD_END + 30 * 86_400 });
    expect(await localRow(c.subscriptionId)).toMatchObject({ plan_id: 'pro-monthly', pending_plan_id: null });
    // Nothing left to cancel; a new change is accepted again.
    expect(await c.handle.executeUpdate(cancelPendingPlanChangeUpdate, { args: [{ requestId: 'cp-2' }] })).toBeNull();
    expect(await changePlan(c, 'enterprise-monthly', 'up-after-cancel')).toMatchObject({ status: 'confirmed' });
  });

  it('keeps the old plan when the upgrade payment is declined', async () => {
    const c = await startCustomer();
    upgradeAnswers.set('fail-1', async () => ({
      outcome: 'failed',
      subscriptionStatus: 'active',
      invoiceId: 'in_declined',
      expiresAt: NOW + 23 * 3600,
      paymentStatus: 'requires_payment_method',
      declineCode: 'insufficient_funds',
    }));
    const result = await changePlan(c, 'pro-monthly', 'fail-1');
    expect(result).toMatchObject({ status: 'failed', fromPlanId: 'basic-monthly', toPlanId: 'pro-monthly', invoiceId: 'in_declined' });
    expect(result.message).toContain('insufficient_funds');
    expect((await c.state()).planChange).toMatchObject({ status: 'failed' });
    // Stripe sends no price change; the row and the workflow's view stay on basic.
    await c.webhook({ priceId: price('basic-monthly') });
    expect((await localRow(c.subscriptionId)).plan_id).toBe('basic-monthly');
    expect((await c.state()).subscription).toMatchObject({ planId: 'basic-monthly' });
    // A declined change does not block the next attempt.
    expect(await changePlan(c, 'pro-monthly', 'fail-1-retry')).toMatchObject({ status: 'confirmed' });
  });

  it('answers pending while the upgrade awaits payment, blocks other changes, and confirms once paid', async () => {
    const c = await startCustomer();
    upgradeAnswers.set('pend-1', async () => ({
      outcome: 'pending',
      subscriptionStatus: 'active',
      invoiceId: 'in_pending',
      expiresAt: NOW + 23 * 3600,
      paymentStatus: 'requires_action',
      declineCode: null,
    }));
    expect(await changePlan(c, 'pro-monthly', 'pend-1')).toMatchObject({ status: 'pending', invoiceId: 'in_pending' });
    expect((await localRow(c.subscriptionId)).plan_id).toBe('basic-monthly');
    expect(await rejection(changePlan(c, 'enterprise-monthly', 'other-1'))).toBe('ChangeInFlight');

    await c.webhook({ priceId: price('pro-monthly') });
    expect((await c.state()).planChange).toMatchObject({ requestId: 'pend-1', status: 'confirmed' });
    expect(await changePlan(c, 'pro-monthly', 'pend-1')).toMatchObject({ status: 'pending' });
    expect(calls.filter((x) => x.name === 'updateSubscriptionPlan')).toHaveLength(1);
  });

  it('changes the plan once for a repeated requestId, also across continue-as-new', async () => {
    const c = await startCustomer({ continueAsNewAfter: 2 });
    const first = await changePlan(c, 'pro-monthly', 'dup-1');
    expect(await changePlan(c, 'pro-monthly', 'dup-1')).toEqual(first);
    expect(await rejection(changePlan(c, 'enterprise-monthly', 'dup-1'))).toBe('RequestIdReused');

    // The second applied event reaches continueAsNewAfter: the next run starts from the carried state.
    const runBefore = (await c.handle.describe()).runId;
    await c.handle.signal(stripeEventSignal, subscriptionEvent(c.customerId, c.subscriptionId, { priceId: price('pro-monthly') }));
    await eventually(async () => (await c.handle.describe()).runId !== runBefore, 20_000, 'continue-as-new');
    expect((await localRow(c.subscriptionId)).plan_id).toBe('pro-monthly');
    expect(await changePlan(c, 'pro-monthly', 'dup-1')).toEqual(first);
    expect(calls.filter((x) => x.name === 'updateSubscriptionPlan')).toHaveLength(1);
  });

  it('fails the update when Stripe refuses, and lets the same requestId try again', async () => {
    const c = await startCustomer();
    let refusals = 1;
    upgradeAnswers.set('refused-1', async (input) => {
      if (refusals-- > 0) throw ApplicationFailure.nonRetryable('No such price: price_wf_pro', 'StripeInvalidRequestError');
      return { outcome: 'confirmed', subscriptionStatus: 'active', invoiceId: `in_${input.requestId}`, expiresAt: null, paymentStatus: 'succeeded', declineCode: null };
    });
    expect(await rejection(changePlan(c, 'pro-monthly', 'refused-1'))).toBe('StripeRejected');
    expect((await c.state()).planChange).toMatchObject({ requestId: 'refused-1', status: 'failed' });
    expect(await changePlan(c, 'pro-monthly', 'refused-1')).toMatchObject({ status: 'confirmed' });
    expect(calls.map((x) => x.name)).toEqual(['updateSubscriptionPlan', 'updateSubscriptionPlan']);
  });

  it('rejects a second change while one is in flight, then lets the first finish', async () => {
    const c = await startCustomer();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    upgradeAnswers.set('slow-1', async (input) => {
      await gate;
      return { outcome: 'confirmed', subscriptionStatus: 'active', invoiceId: `in_${input.requestId}`, expiresAt: null, paymentStatus: 'succeeded', declineCode: null };
    });
    const slow = await c.handle.startUpdate(changePlanUpdate, {
      args: [{ planId: 'pro-monthly', requestId: 'slow-1', ...(await previewPins(c.customerId)) }],
      waitForStage: WorkflowUpdateStage.ACCEPTED,
    });
    await eventually(async () => calls.some((x) => x.name === 'updateSubscriptionPlan'), 10_000, 'the slow upgrade to reach Stripe');
    expect((await c.state()).planChange).toMatchObject({ requestId: 'slow-1', status: 'in_flight' });
    expect(await rejection(changePlan(c, 'enterprise-monthly', 'fast-1'))).toBe('ChangeInFlight');
    expect(await rejection(c.handle.executeUpdate(cancelSubscriptionUpdate, { args: [{ atPeriodEnd: true, requestId: 'cancel-during' }] }))).toBe('ChangeInFlight');
    expect(await rejection(changePlan(c, 'enterprise-monthly', 'slow-1'))).toBe('RequestIdReused');
    // The same request again (an HTTP retry after a timeout) joins the running one.
    const joined = changePlan(c, 'pro-monthly', 'slow-1');
    release();
    const result = await slow.result();
    expect(result).toMatchObject({ status: 'confirmed' });
    expect(await joined).toEqual(result);
    expect(calls.map((x) => x.name)).toEqual(['updateSubscriptionPlan']);
  });

  describe('preview and commit agree', () => {
    it('refuses an upgrade without its preview’s prorationDate and subscriptionVersion', async () => {
      const c = await startCustomer();
      expect(await rejection(changePlan(c, 'pro-monthly', 'no-preview', { unpinned: true }))).toBe('PreviewRequired');
      const { prorationDate } = await previewPins(c.customerId);
      expect(await rejection(changePlan(c, 'pro-monthly', 'no-version', { unpinned: true, prorationDate }))).toBe('PreviewRequired');
      expect(calls).toEqual([]);
      // A downgrade charges nothing now: it needs no preview.
      const p = await startCustomer({ priceId: price('pro-monthly') });
      expect(await changePlan(p, 'basic-monthly', 'down-unpinned', { unpinned: true })).toMatchObject({ status: 'scheduled' });
    });

    it('charges at the previewed proration date, and answers SubscriptionChanged when the subscription changed since the preview', async () => {
      const c = await startCustomer();
      const preview = await previewPins(c.customerId);
      // Stripe renewed the subscription (a new period) between the preview and the commit.
      await c.webhook({ currentPeriodStart: PERIOD_END, currentPeriodEnd: PERIOD_END + 30 * 86_400 });
      expect(await rejection(changePlan(c, 'pro-monthly', 'after-renewal', preview))).toBe('SubscriptionChanged');
      expect(calls).toEqual([]);

      const again = await previewPins(c.customerId);
      expect(again.subscriptionVersion).not.toBe(preview.subscriptionVersion);
      const pinned = { ...again, prorationDate: again.prorationDate - 90 };
      expect(await changePlan(c, 'pro-monthly', 'after-repreview', pinned)).toMatchObject({ status: 'confirmed', effectiveAt: pinned.prorationDate });
      expect(calls.map((x) => [x.name, x.input.prorationDate])).toEqual([['updateSubscriptionPlan', pinned.prorationDate]]);
    });
  });

  describe('no downgrade of a canceling subscription', () => {
    it('refuses it while cancel_at_period_end is set (from the webhook or just requested), and accepts it once resumed', async () => {
      const c = await startCustomer({ priceId: price('pro-monthly') });
      await c.webhook({ priceId: price('pro-monthly'), cancelAtPeriodEnd: true });
      expect(await rejection(changePlan(c, 'basic-monthly', 'down-canceling'))).toBe('SubscriptionCanceling');
      expect(calls).toEqual([]);

      // Canceled through this service: Stripe confirmed it, the webhook has not arrived yet.
      const d = await startCustomer({ priceId: price('pro-monthly') });
      await d.handle.executeUpdate(cancelSubscriptionUpdate, { args: [{ atPeriodEnd: true, requestId: 'cancel-then-down' }] });
      expect(await rejection(changePlan(d, 'basic-monthly', 'down-after-cancel'))).toBe('SubscriptionCanceling');
      await d.handle.executeUpdate(resumeSubscriptionUpdate, { args: [{ requestId: 'resume-then-down' }] });
      expect(await changePlan(d, 'basic-monthly', 'down-after-resume')).toMatchObject({ status: 'scheduled' });
      expect(calls.map((x) => x.name)).toEqual(['cancelStripeSubscription', 'resumeStripeSubscription', 'scheduleSubscriptionDowngrade']);
    });
  });

  describe('a scheduled downgrade across the renewal (a fake Stripe whose clock the test advances)', () => {
    /**
     * The real scheduleSubscriptionDowngrade on a fake Stripe client that keeps the schedule it is sent;
     * advancing the clock past a phase's end does what Stripe does at renewal: the subscription moves to
     * the next phase's price and a customer.subscription.updated is delivered.
     */
    function fakeScheduleStripe(c: Customer, fromPrice: string) {
      let phases: Stripe.SubscriptionScheduleUpdateParams.Phase[] = [];
      let now = NOW;
      const subscription = {
        id: c.subscriptionId,
        schedule: null,
        metadata: {},
        items: { data: [{ id: 'si_1', price: { id: fromPrice }, quantity: 1, metadata: {}, tax_rates: [], current_period_start: PERIOD_START, current_period_end: PERIOD_END }] },
      };
      const schedule = {
        id: `sub_sched_${c.subscriptionId}`,
        current_phase: { start_date: PERIOD_START, end_date: PERIOD_END },
        phases: [{ start_date: PERIOD_START, end_date: PERIOD_END, discounts: [], metadata: {}, items: [{ price: fromPrice, quantity: 1, discounts: [], metadata: {} }] }],
      };
      const stripe = {
        subscriptions: { retrieve: async () => subscription },
        subscriptionSchedules: {
          create: async () => schedule,
          retrieve: async () => schedule,
          update: async (_id: string, params: Stripe.SubscriptionScheduleUpdateParams) => {
            phases = params.phases ?? [];
            return schedule;
          },
        },
        invoicePayments: {},
      } as unknown as Pick<Stripe, 'subscriptions' | 'subscriptionSchedules' | 'invoicePayments'>;
      return {
        activities: createPlanChangeStripeActivities({ stripe }),
        /** Moves Stripe's clock; crossing the first phase's end renews the subscription on the second phase. */
        async advanceTo(t: number): Promise<CustomerWorkflowState | null> {
          const boundary = phases[0]?.end_date;
          const crossed = typeof boundary === 'number' && now < boundary && t >= boundary;
          now = t;
          if (!crossed) return null;
          const next = phases[1]!;
          return c.webhook({ priceId: next.items[0]!.price!, currentPeriodStart: boundary, currentPeriodEnd: boundary + 30 * 86_400 });
        },
      };
    }

    it('keeps the plan until the period end, then switches to the scheduled plan and clears pendingPlanId', async () => {
      const c = await startCustomer({ priceId: price('pro-monthly') });
      const stripe = fakeScheduleStripe(c, price('pro-monthly'));
      downgradeAnswers.set('down-renewal', (input) => stripe.activities.scheduleSubscriptionDowngrade(input));
      expect(await changePlan(c, 'basic-monthly', 'down-renewal')).toMatchObject({ status: 'scheduled', effectiveAt: PERIOD_END });

      expect(await stripe.advanceTo(PERIOD_END - 1)).toBeNull();
      expect(await localRow(c.subscriptionId)).toMatchObject({ plan_id: 'pro-monthly', pending_plan_id: 'basic-monthly' });
      expect((await c.state()).planChange).toMatchObject({ requestId: 'down-renewal', status: 'scheduled' });

      const renewed = await stripe.advanceTo(PERIOD_END);
      expect(renewed?.planChange).toMatchObject({ requestId: 'down-renewal', status: 'confirmed' });
      expect(renewed?.subscription).toMatchObject({ planId: 'basic-monthly', pendingPlanId: null });
      expect(await localRow(c.subscriptionId)).toMatchObject({ plan_id: 'basic-monthly', pending_plan_id: null, pending_plan_effective_at: null });
      expect((await readCustomer(db.sql, c.customerId))?.subscription).toMatchObject({ planId: 'basic-monthly', pendingPlanId: null });
      // The next change starts from the new plan, with no scheduled change in the way.
      expect(await changePlan(c, 'pro-monthly', 'up-after-renewal')).toMatchObject({ status: 'confirmed', fromPlanId: 'basic-monthly' });
    });
  });

  describe('validator rejections (nothing reaches Stripe)', () => {
    it.each([
      ['an unknown plan', {}, 'platinum', 'UnknownPlan'],
      ['an inactive plan', {}, 'legacy', 'UnknownPlan'],
      ['the current plan', {}, 'basic-monthly', 'SamePlan'],
      ['a plan in another currency', {}, 'pro-eur', 'CurrencyMismatch'],
      ['a canceled subscription', { status: 'canceled' as const }, 'pro-monthly', 'SubscriptionCanceled'],
      ['an incomplete subscription', { status: 'incomplete' as const }, 'pro-monthly', 'SubscriptionNotChangeable'],
      ['a price outside the catalog', { priceId: 'price_unknown' }, 'pro-monthly', 'UnknownCurrentPlan'],
    ])('rejects %s', async (_label, start, planId, type) => {
      const c = await startCustomer(start);
      expect(await rejection(changePlan(c, planId, uniqueId('r-')))).toBe(type);
      expect(calls).toEqual([]);
    });

    it('rejects a customer without a subscription', async () => {
      const customerId = `cus_${uniqueId()}`;
      clock += 5;
      const handle = await startCustomerWorkflow(client, { taskQueue: config.TEMPORAL_TASK_QUEUE, customerId, event: customerCreatedEvent(customerId, clock) });
      await eventually(async () => (await handle.query(stateQuery)).applied === 1, 20_000, 'the customer event');
      expect(await rejection(handle.executeUpdate(changePlanUpdate, { args: [{ planId: 'pro-monthly', requestId: 'nosub' }] }))).toBe('NoSubscription');
      expect(await rejection(handle.executeUpdate(cancelSubscriptionUpdate, { args: [{ atPeriodEnd: true, requestId: 'nosub' }] }))).toBe('NoSubscription');
      expect(calls).toEqual([]);
    });

    it('rejects a stale proration date, a malformed requestId, and a resume with nothing to resume', async () => {
      const c = await startCustomer();
      expect(await rejection(changePlan(c, 'pro-monthly', 'stale', { prorationDate: NOW - 3 * 86_400 }))).toBe('InvalidProrationDate');
      expect(await rejection(c.handle.executeUpdate(changePlanUpdate, { args: [{ planId: 'pro-monthly', requestId: 'has spaces' }] }))).toBe('InvalidRequest');
      expect(await rejection(c.handle.executeUpdate(resumeSubscriptionUpdate, { args: [{ requestId: 'resume-0' }] }))).toBe('NotCanceling');
      expect(calls).toEqual([]);
    });
  });

  it('cancels at period end, resumes before the webhook arrives, and refuses to resume twice', async () => {
    const c = await startCustomer();
    const canceled = await c.handle.executeUpdate(cancelSubscriptionUpdate, { args: [{ atPeriodEnd: true, requestId: 'cancel-1' }] });
    expect(canceled).toMatchObject({ requestId: 'cancel-1', status: 'active', cancelAtPeriodEnd: true });
    expect((await localRow(c.subscriptionId)).cancel_at_period_end).toBe(false);
    const resumed = await c.handle.executeUpdate(resumeSubscriptionUpdate, { args: [{ requestId: 'resume-1' }] });
    expect(resumed).toMatchObject({ cancelAtPeriodEnd: false });
    expect(await rejection(c.handle.executeUpdate(resumeSubscriptionUpdate, { args: [{ requestId: 'resume-2' }] }))).toBe('NotCanceling');
    expect(calls.map((x) => [x.name, x.input.requestId])).toEqual([
      ['cancelStripeSubscription', 'cancel-1'],
      ['resumeStripeSubscription', 'resume-1'],
    ]);
  });

  it('cancels now, withdrawing a scheduled downgrade first, and then refuses plan changes', async () => {
    const c = await startCustomer({ priceId: price('pro-monthly') });
    await changePlan(c, 'basic-monthly', 'down-3');
    const result = await c.handle.executeUpdate(cancelSubscriptionUpdate, { args: [{ atPeriodEnd: false, requestId: 'cancel-now' }] });
    expect(result).toMatchObject({ status: 'canceled', cancelAtPeriodEnd: false });
    expect(result.message).toContain('withdrawn');
    expect(calls.map((x) => x.name)).toEqual(['scheduleSubscriptionDowngrade', 'releaseSubscriptionSchedule', 'cancelStripeSubscription']);
    expect(calls[1]!.input).toMatchObject({ step: 'cancel-release' });
    expect((await localRow(c.subscriptionId)).pending_plan_id).toBeNull();
    expect(await rejection(changePlan(c, 'enterprise-monthly', 'after-cancel'))).toBe('SubscriptionCanceled');
  });

  describe('over HTTP', () => {
    const put = (app: ReturnType<typeof buildTestApp>['app'], customerId: string, body: unknown) =>
      app.request(`/customers/${customerId}/subscription/plan`, { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const post = (app: ReturnType<typeof buildTestApp>['app'], path: string, body: unknown) =>
      app.request(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

    it('maps results and validator rejections to status codes', async () => {
      const { app } = buildTestApp({ sql: db.sql, temporal: client, config });
      const c = await startCustomer();
      const status = async (r: Response) => [r.status, ((await r.json()) as { error?: string }).error];
      expect(await status(await put(app, c.customerId, { planId: 'basic-monthly', requestId: 'h-same' }))).toEqual([409, 'same_plan']);
      expect(await status(await put(app, c.customerId, { planId: 'platinum', requestId: 'h-unknown' }))).toEqual([422, 'unknown_plan']);
      const unpinned = await put(app, c.customerId, { planId: 'pro-monthly', requestId: 'h-unpinned' });
      expect(unpinned.status).toBe(422);
      expect(await unpinned.json()).toMatchObject({ error: 'preview_required', message: expect.stringContaining('preview') });
      const stale = await put(app, c.customerId, { planId: 'pro-monthly', requestId: 'h-stale', prorationDate: Math.floor(Date.now() / 1000), subscriptionVersion: 'sv1_00000000' });
      expect(await status(stale)).toEqual([409, 'subscription_changed']);

      const up = await put(app, c.customerId, { planId: 'pro-monthly', requestId: 'h-up', ...(await previewPins(c.customerId)) });
      expect(up.status).toBe(200);
      expect(await up.json()).toMatchObject({ status: 'confirmed', toPlanId: 'pro-monthly' });
      await c.webhook({ priceId: price('pro-monthly') });

      const down = await put(app, c.customerId, { planId: 'basic-monthly', requestId: 'h-down' });
      expect(down.status).toBe(202);
      expect(await down.json()).toMatchObject({ status: 'scheduled', effectiveAt: PERIOD_END });
      const busy = await put(app, c.customerId, { planId: 'enterprise-monthly', requestId: 'h-busy' });
      expect(busy.status).toBe(409);
      expect(((await busy.json()) as { error: string }).error).toBe('change_in_flight');

      const cp = await post(app, `/customers/${c.customerId}/subscription/plan/cancel-pending`, { requestId: 'h-cp' });
      expect(cp.status).toBe(200);
      expect(await cp.json()).toMatchObject({ status: 'canceled' });
      const none = await post(app, `/customers/${c.customerId}/subscription/plan/cancel-pending`, { requestId: 'h-cp-2' });
      expect(none.status).toBe(404);

      upgradeAnswers.set('h-declined', async () => ({
        outcome: 'failed',
        subscriptionStatus: 'active',
        invoiceId: 'in_h',
        expiresAt: null,
        paymentStatus: 'requires_payment_method',
        declineCode: 'card_declined',
      }));
      const declined = await put(app, c.customerId, { planId: 'enterprise-monthly', requestId: 'h-declined', ...(await previewPins(c.customerId)) });
      expect(declined.status).toBe(402);
      expect(await declined.json()).toMatchObject({ status: 'failed', fromPlanId: 'pro-monthly' });

      const resume = await post(app, `/customers/${c.customerId}/subscription/resume`, { requestId: 'h-resume' });
      expect(resume.status).toBe(409);
      expect(((await resume.json()) as { error: string }).error).toBe('not_canceling');
      const cancel = await post(app, `/customers/${c.customerId}/subscription/cancel`, { atPeriodEnd: true, requestId: 'h-cancel' });
      expect(cancel.status).toBe(200);
      expect(await cancel.json()).toMatchObject({ cancelAtPeriodEnd: true });
      expect(await status(await put(app, c.customerId, { planId: 'basic-monthly', requestId: 'h-down-canceling' }))).toEqual([409, 'subscription_canceling']);
      const resumed = await post(app, `/customers/${c.customerId}/subscription/resume`, { requestId: 'h-resume-2' });
      expect(resumed.status).toBe(200);
    });

    it('refreshes the workflow catalog for a plan added after it started', async () => {
      const { app } = buildTestApp({ sql: db.sql, temporal: client, config });
      const c = await startCustomer();
      const added: Plan = { id: 'max-monthly', stripePriceId: 'price_wf_max', name: 'Max', amount: 19900, currency: 'usd', interval: 'month', rank: 40, active: true };
      await syncPlans(db.sql, [...PLANS, added]);
      try {
        const res = await put(app, c.customerId, { planId: 'max-monthly', requestId: 'h-new-plan', ...(await previewPins(c.customerId)) });
        expect(res.status).toBe(200);
        expect(await res.json()).toMatchObject({ status: 'confirmed', toPlanId: 'max-monthly' });
      } finally {
        await syncPlans(db.sql, PLANS);
      }
    });
  });
});
