/**
 * Effects exactly once: what follows from a state change (a dunning cycle, its end, access, notices)
 * is right after a reorder, a re-run after commit, a bad event, or a Stripe object of another customer.
 * Real API, real Temporal dev server, real Postgres; Stripe is stripe-mock (stateless, canned objects).
 */
import { WorkflowNotFoundError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createActivities } from '../../activities';
import { normalizeStripeEvent } from '../../domain/events';
import { customerWorkflowId, dunningWorkflowId } from '../../domain/ids';
import { stripeEventSignal } from '../../workflows/contracts';
import { createStripe } from '../../lib/stripe';
import { postWebhook } from '../helpers/app';
import { useTestStack } from '../helpers/harness';
import { uniqueFixture } from '../helpers/fixtures';
import { TEST_ADMIN_TOKEN, eventually } from '../helpers/services';

describe('effects exactly once', () => {
  /** Event ids whose apply fails once AFTER its commit (as if the worker died before completing the task). */
  const failAfterCommit = new Set<string>();
  const faultsFired: string[] = [];
  const stack = useTestStack({
    activities: (db, config, client) =>
      createActivities({
        sql: db.sql,
        stripe: createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: inject('stripeMockUrl'), maxNetworkRetries: 0 }),
        config,
        temporalClient: client,
        faults: {
          afterCommit: (ids) => {
            const hit = ids.filter((id) => failAfterCommit.delete(id));
            faultsFired.push(...hit);
            return hit.length > 0;
          },
        },
      }),
  });
  const { config } = stack;

  async function post(envelope: unknown): Promise<void> {
    const res = await postWebhook(stack.built.app, envelope);
    expect(res.status).toBe(200);
  }

  async function applied(eventId: string): Promise<void> {
    await eventually(async () => {
      const [row] = await stack.sql<{ status: string }[]>`SELECT status FROM webhook_events WHERE event_id = ${eventId}`;
      return row?.status === 'applied';
    }, 20_000, `event ${eventId} applied`);
  }

  async function cycles(customerId: string) {
    return stack.sql<{ invoice_id: string; subscription_id: string | null; state: string; ended_at: Date | null }[]>`
      SELECT invoice_id, subscription_id, state, ended_at FROM dunning_cycles WHERE customer_id = ${customerId} ORDER BY invoice_id`;
  }

  async function childStatus(invoiceId: string): Promise<string | null> {
    try {
      return (await stack.client.workflow.getHandle(dunningWorkflowId(invoiceId)).describe()).status.name;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return null;
      throw err;
    }
  }

  /** A customer with one live subscription. */
  async function subscribed(): Promise<{ token: string; customerId: string; subscriptionId: string; invoiceId: string }> {
    const { envelope, token, customerId } = uniqueFixture('customer.subscription.created');
    await post(envelope);
    await applied(envelope.id);
    return { token, customerId, subscriptionId: envelope.data.object.id, invoiceId: `in_${token}01` };
  }

  it('a payment failure older than the payment of its invoice opens no cycle, keeps access and queues no notice', async () => {
    const { token, customerId, invoiceId } = await subscribed();
    const paid = uniqueFixture('invoice.paid', { token }).envelope;
    const failed = uniqueFixture('invoice.payment_failed', { token }).envelope;
    expect(failed.created).toBeLessThan(paid.created);
    await post(paid);
    await applied(paid.id);
    await post(failed); // Stripe delivered the older event last
    await applied(failed.id);

    const [outcome] = await stack.sql<{ outcome: string }[]>`SELECT outcome FROM applied_events WHERE event_id = ${failed.id}`;
    expect(outcome?.outcome).toBe('stale');
    expect(await cycles(customerId)).toEqual([]);
    expect(await childStatus(invoiceId)).toBeNull();
    const [customer] = await stack.sql<{ access_state: string }[]>`SELECT access_state FROM customers WHERE id = ${customerId}`;
    expect(customer?.access_state).toBe('active');
    const notices = await stack.sql`SELECT 1 FROM notifications WHERE invoice_id = ${invoiceId}`;
    expect(notices.length).toBe(0);
  });

  it('still starts dunning when the apply runs again after its own commit', async () => {
    const { token, customerId, invoiceId } = await subscribed();
    const failed = uniqueFixture('invoice.payment_failed', { token }).envelope;
    failAfterCommit.add(failed.id);
    await post(failed);
    await applied(failed.id);
    expect(faultsFired).toContain(failed.id);
    // The re-run finds the event applied and runs the effects recorded with it: the cycle starts.
    const status = await eventually(() => childStatus(invoiceId), 20_000, 'dunning child started');
    expect(status).toBe('RUNNING');
    const rows = await cycles(customerId);
    expect(rows.map((r) => [r.invoice_id, r.ended_at])).toEqual([[invoiceId, null]]);
    const [effect] = await stack.sql<{ kind: string; target: string }[]>`SELECT kind, target FROM applied_effects WHERE event_id = ${failed.id}`;
    expect(effect).toEqual({ kind: 'start_dunning', target: invoiceId });
    await stack.client.workflow.getHandle(dunningWorkflowId(invoiceId)).terminate('test done');
  });

  it('refuses a re-fetched Stripe object that belongs to another customer', async () => {
    const { token, customerId, subscriptionId, invoiceId } = await subscribed();
    const failed = uniqueFixture('invoice.payment_failed', { token }).envelope;
    await post(failed);
    await applied(failed.id);
    // The cycle re-reads the subscription from Stripe; stripe-mock answers a canned object whose
    // customer is not ours. Wait until the cycle has been through that read and told the customer.
    await eventually(async () => {
      const [row] = await stack.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM notifications WHERE invoice_id = ${invoiceId}`;
      return (row?.n ?? 0) > 0;
    }, 20_000, 'first dunning notice');
    const state = await stack.client.workflow.getHandle(customerWorkflowId(customerId)).query<{ queued: number }>('state');
    expect(state.queued).toBe(0);

    const subs = await stack.sql<{ id: string; customer_id: string }[]>`SELECT id, customer_id FROM subscriptions WHERE id = ${subscriptionId}`;
    expect(subs).toEqual([{ id: subscriptionId, customer_id: customerId }]);
    const res = await stack.built.app.request(`/customers/${customerId}`);
    const body = (await res.json()) as { subscription: { id: string } | null };
    expect(body.subscription?.id).toBe(subscriptionId);
    await stack.client.workflow.getHandle(dunningWorkflowId(invoiceId)).terminate('test done');
  });

  it('ends only the cycles of the subscription that ended', async () => {
    const a = await subscribed();
    // A second subscription of the same customer, with its own failed invoice.
    const second = uniqueFixture('customer.subscription.created', { token: a.token }).envelope;
    const subB = `${a.subscriptionId}B`;
    second.data.object.id = subB;
    second.created += 1;
    await post(second);
    await applied(second.id);
    const failA = uniqueFixture('invoice.payment_failed', { token: a.token }).envelope;
    const failB = uniqueFixture('invoice.payment_failed', { token: a.token }).envelope;
    const invoiceB = `${a.invoiceId}B`;
    failB.data.object.id = invoiceB;
    failB.data.object.parent.subscription_details.subscription = subB;
    await post(failA);
    await post(failB);
    await applied(failA.id);
    await applied(failB.id);
    expect((await cycles(a.customerId)).map((c) => [c.invoice_id, c.subscription_id, c.ended_at])).toEqual([
      [a.invoiceId, a.subscriptionId, null],
      [invoiceB, subB, null],
    ]);

    const deleted = uniqueFixture('customer.subscription.deleted', { token: a.token }).envelope;
    await post(deleted);
    await applied(deleted.id);
    const after = await cycles(a.customerId);
    expect(after.find((c) => c.invoice_id === a.invoiceId)?.state).toBe('canceled');
    expect(after.find((c) => c.invoice_id === a.invoiceId)?.ended_at).not.toBeNull();
    expect(after.find((c) => c.invoice_id === invoiceB)?.ended_at).toBeNull();
    await eventually(async () => (await childStatus(a.invoiceId)) === 'COMPLETED', 20_000, 'cycle A ended');
    expect(await childStatus(invoiceB)).toBe('RUNNING');
    await stack.client.workflow.getHandle(dunningWorkflowId(invoiceB)).terminate('test done');
  });

  it('quarantines an event that cannot be stored; the customer\'s later events apply, and a replay applies it', async () => {
    const { token, customerId, subscriptionId } = await subscribed();
    const created = uniqueFixture('customer.created', { token }).envelope;
    created.data.object.name = 'Ada\u0000 Lovelace';
    created.created += 10_000_000;
    // Signalled as-is (unsanitized), as an older ingest did; the delivery log holds the sanitized copy.
    const normalized = normalizeStripeEvent(created);
    if (normalized.outcome !== 'handled') throw new Error(`fixture did not normalize: ${JSON.stringify(normalized)}`);
    const stored = JSON.parse(JSON.stringify(created).replace(/\\u0000/g, ''));
    await stack.sql`
      INSERT INTO webhook_events (event_id, type, livemode, stripe_created_at, customer_id, object_id, status, payload, payload_bytes)
      VALUES (${created.id}, ${created.type}, false, ${new Date(created.created * 1000)}, ${customerId}, ${customerId}, 'dispatched',
              ${stack.sql.json(stored)}, 100)`;
    await stack.client.workflow.signalWithStart('customerWorkflow', {
      workflowId: customerWorkflowId(customerId),
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      args: [{ customerId }],
      signal: stripeEventSignal,
      signalArgs: [normalized.event],
    });
    await eventually(async () => {
      const [row] = await stack.sql<{ status: string }[]>`SELECT status FROM webhook_events WHERE event_id = ${created.id}`;
      return row?.status === 'quarantined';
    }, 20_000, 'event quarantined');
    const [row] = await stack.sql<{ last_error: string; quarantined_at: Date | null }[]>`
      SELECT last_error, quarantined_at FROM webhook_events WHERE event_id = ${created.id}`;
    expect(row?.last_error).toMatch(/^apply: 22/);
    expect(row?.quarantined_at).not.toBeNull();

    // The customer's queue is not blocked.
    const updated = uniqueFixture('customer.subscription.updated', { token }).envelope;
    updated.created += 10_000_000;
    updated.data.object.cancel_at_period_end = true;
    await post(updated);
    await applied(updated.id);
    const [sub] = await stack.sql<{ cancel_at_period_end: boolean }[]>`SELECT cancel_at_period_end FROM subscriptions WHERE id = ${subscriptionId}`;
    expect(sub?.cancel_at_period_end).toBe(true);

    // After the fix (here: the stored copy is clean), a replay applies it.
    const replay = await stack.built.app.request(`/admin/webhook-events/${created.id}/replay`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TEST_ADMIN_TOKEN}` },
    });
    expect(replay.status).toBeLessThan(300);
    await applied(created.id);
    const [customer] = await stack.sql<{ name: string }[]>`SELECT name FROM customers WHERE id = ${customerId}`;
    expect(customer?.name).toBe('Ada Lovelace');
  });
});
