/**
 * Dunning and access on today's Stripe, through the real API, Temporal dev server and Postgres, with
 * 2026-08-26.dahlia fixtures (validated against the spec in test/unit/fixtures-spec.test.ts). Stripe
 * calls go to stripe-mock (request shapes); the time-skipping suite covers the timing.
 */
import { WorkflowNotFoundError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { dunningWorkflowId } from '../../domain/ids';
import { postWebhook } from '../helpers/app';
import { useTestStack } from '../helpers/harness';
import { uniqueFixture } from '../helpers/fixtures';
import { eventually } from '../helpers/services';

describe('dunning and access on today\'s Stripe', () => {
  const stack = useTestStack();
  const { config } = stack;

  async function post(envelope: unknown): Promise<void> {
    const res = await postWebhook(stack.built.app, envelope);
    expect(res.status).toBe(200);
  }

  async function deliver(envelope: { id: string }): Promise<void> {
    await post(envelope);
    await eventually(async () => {
      const [row] = await stack.sql<{ status: string }[]>`SELECT status FROM webhook_events WHERE event_id = ${envelope.id}`;
      return row?.status === 'applied';
    }, 20_000, `event ${envelope.id} applied`);
  }

  async function childStatus(invoiceId: string): Promise<string | null> {
    try {
      return (await stack.client.workflow.getHandle(dunningWorkflowId(invoiceId)).describe()).status.name;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return null;
      throw err;
    }
  }

  async function access(customerId: string): Promise<string | undefined> {
    const [row] = await stack.sql<{ access_state: string }[]>`SELECT access_state FROM customers WHERE id = ${customerId}`;
    return row?.access_state;
  }

  /** A subscribed customer whose renewal invoice failed: its cycle is open and its child runs. */
  /**
   * A customer whose renewal failed, with its dunning cycle running. The fixture's failure is months old,
   * so the cycle's first scheduled retry (a day later) is already due: `recentFailure` dates it now,
   * for tests where a scheduled retry must not run first.
   */
  async function inDunning(opts: { recentFailure?: boolean } = {}) {
    const sub = uniqueFixture('customer.subscription.created');
    const { token, customerId } = sub;
    await deliver(sub.envelope);
    const failed = uniqueFixture('invoice.payment_failed', { token }).envelope;
    if (opts.recentFailure) failed.created = Math.floor(Date.now() / 1000);
    await deliver(failed);
    const invoiceId = failed.data.object.id as string;
    await eventually(async () => (await childStatus(invoiceId)) === 'RUNNING', 20_000, 'the dunning child to run');
    expect(await access(customerId)).toBe('grace');
    return { token, customerId, invoiceId };
  }

  async function cycle(invoiceId: string) {
    const [row] = await stack.sql<{ state: string; ended_at: Date | null; last_decline_code: string | null; last_advice_code: string | null }[]>`
      SELECT state, ended_at, last_decline_code, last_advice_code FROM dunning_cycles WHERE invoice_id = ${invoiceId}`;
    return row;
  }

  it('ends the cycle when the invoice is voided', async () => {
    const { token, customerId, invoiceId } = await inDunning();
    await deliver(uniqueFixture('invoice.voided', { token }).envelope);
    expect(await cycle(invoiceId)).toMatchObject({ state: 'canceled' });
    expect((await cycle(invoiceId))?.ended_at).not.toBeNull();
    await eventually(async () => (await childStatus(invoiceId)) === 'COMPLETED', 20_000, 'the cycle to end');
    expect(await access(customerId)).toBe('active');
  });

  it('ends the cycle when the invoice is marked uncollectible, and suspends access until it is paid', async () => {
    const { token, customerId, invoiceId } = await inDunning();
    await deliver(uniqueFixture('invoice.marked_uncollectible', { token }).envelope);
    expect((await cycle(invoiceId))?.ended_at).not.toBeNull();
    expect(await access(customerId)).toBe('suspended');
    const paid = uniqueFixture('invoice.paid', { token }).envelope;
    paid.created = Math.max(paid.created, 1_800_000_000);
    await deliver(paid);
    expect(await access(customerId)).toBe('active');
  });

  it('joins payment_intent.payment_failed to its invoice: the cycle records the decline and advice codes', async () => {
    const { token, customerId, invoiceId } = await inDunning();
    // The cycle learned the invoice's PaymentIntent from its payments (stripe-mock answers a canned one).
    const pi = await eventually(async () => {
      const [row] = await stack.sql<{ payment_intent_id: string | null }[]>`SELECT payment_intent_id FROM invoices WHERE id = ${invoiceId}`;
      return row?.payment_intent_id ?? null;
    }, 20_000, 'the invoice to know its PaymentIntent');
    const failed = uniqueFixture('payment_intent.payment_failed', { token }).envelope;
    failed.data.object.id = pi;
    failed.created = 1_800_000_000;
    await deliver(failed);
    await eventually(async () => (await cycle(invoiceId))?.last_advice_code === 'try_again_later', 20_000, 'the advice code recorded');
    expect(await cycle(invoiceId)).toMatchObject({ last_decline_code: 'insufficient_funds', last_advice_code: 'try_again_later', ended_at: null });
    const res = await stack.built.app.request(`/customers/${customerId}`);
    const body = (await res.json()) as { dunning: { lastDeclineCode: string | null; lastAdviceCode: string | null } };
    expect(body.dunning).toMatchObject({ lastDeclineCode: 'insufficient_funds', lastAdviceCode: 'try_again_later' });
    await stack.client.workflow.getHandle(dunningWorkflowId(invoiceId)).terminate('test done');
  });

  it('retries at once with the payment method a setup intent saved; stripe-mock accepts the request shapes', async () => {
    // Failed now: the first scheduled retry is a day away, so the only attempt is the new method's (with the
    // fixture's months-old failure the scheduled retry was due at once and sometimes came first).
    const { token, invoiceId } = await inDunning({ recentFailure: true });
    await deliver(uniqueFixture('setup_intent.succeeded', { token }).envelope);
    // An attempt triggered by the new method, right away. stripe-mock validates subscriptions.update with
    // default_payment_method and invoices.pay with payment_method against the spec: a 400 would be 'error'.
    const attempt = await eventually(async () => {
      const [row] = await stack.sql<{ trigger: string; outcome: string }[]>`SELECT trigger, outcome FROM dunning_attempts WHERE invoice_id = ${invoiceId}`;
      return row;
    }, 20_000, 'the attempt with the new payment method');
    expect(attempt.trigger).toBe('payment_method');
    expect(attempt.outcome).not.toBe('error');
    await stack.client.workflow.getHandle(dunningWorkflowId(invoiceId)).terminate('test done').catch(() => {});
  });

  it('restricts access while a dispute is open and restores it when the dispute is won', async () => {
    const sub = uniqueFixture('customer.subscription.created');
    await deliver(sub.envelope);
    // The charge is known locally (its refund event), so the dispute finds its customer without Stripe.
    const refunded = uniqueFixture('charge.refunded', { token: sub.token }).envelope;
    refunded.data.object.refunded = false;
    refunded.data.object.amount_refunded = 0;
    await deliver(refunded);
    expect(await access(sub.customerId)).toBe('active');
    await deliver(uniqueFixture('charge.dispute.created', { token: sub.token }).envelope);
    expect(await access(sub.customerId)).toBe('restricted');
    await deliver(uniqueFixture('charge.dispute.closed', { token: sub.token }).envelope);
    expect(await access(sub.customerId)).toBe('active');
  });

  it('restricts access on an actionable early fraud warning until the charge is refunded', async () => {
    const sub = uniqueFixture('customer.subscription.created');
    await deliver(sub.envelope);
    const charge = uniqueFixture('charge.refunded', { token: sub.token }).envelope;
    charge.data.object.refunded = false;
    charge.data.object.amount_refunded = 0;
    charge.created -= 1000;
    await deliver(charge);
    await deliver(uniqueFixture('radar.early_fraud_warning.created', { token: sub.token }).envelope);
    expect(await access(sub.customerId)).toBe('restricted');
    await deliver(uniqueFixture('charge.refunded', { token: sub.token }).envelope);
    expect(await access(sub.customerId)).toBe('active');
  });
});
