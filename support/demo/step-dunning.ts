/** Step 4: dunning — a soft then a hard decline, recovery with a new card, one notice, the email in Mailpit. */
import { FIXTURE_CUSTOMER_ID, FIXTURE_PAYMENT_METHOD_ID } from '../fixtures';
import { dunningWorkflowId } from '../../domain/ids';
import { createTemporalClient } from '../../lib/temporal';
import { type DemoHarness, StepFailure, DAY_MS, money, sleep, type Obj } from './harness';

/** 4. Dunning: soft then hard decline, recovery with a new card. */
export async function dunningStep(h: DemoHarness): Promise<boolean> {
  const { stack, options, stepTimeoutMs, sql, ctx, ls, waitFor, customer, describe, postEvent, step, fixtureEvent, paymentFailedEvent } = h;
  return step(4, 'dunning: soft then hard decline, recovery with a new card', async () => {
    const customerId = ctx.customerId!;
    const retryDays = (stack.dunningRetryDays ?? '1,3,5,7').split(',').map(Number);
    const firstRetryMs = (retryDays[0] ?? 1) * DAY_MS;
    const maxWait = options.maxScheduledRetryWaitMs ?? 90_000;
    // The renewal: the customer's card now declines at charge time (localstripe test card 4000000000000341).
    const failing = await ls('POST', '/v1/payment_methods/pm_card_chargeCustomerFail/attach', { customer: customerId });
    await ls('POST', `/v1/customers/${customerId}`, { 'invoice_settings[default_payment_method]': failing.id });
    const draft = await ls('POST', '/v1/invoices', { customer: customerId, subscription: ctx.subscriptionId! });
    ctx.renewalInvoiceId = draft.id;
    const declined = await ls('POST', `/v1/invoices/${draft.id}/pay`);
    if (declined.status !== 'open') throw new StepFailure(`renewal invoice ${draft.id} is ${declined.status}, expected a declined (open) invoice`);
    // localstripe sends no event for that synchronous decline and knows no decline codes: the fixture says what Stripe would.
    await postEvent(paymentFailedEvent(declined, 'insufficient_funds', 1));
    const started = await waitFor('a dunning cycle retrying after insufficient_funds', async () => {
      const c = await customer();
      const d = c.dunning;
      return { done: d?.invoiceId === draft.id && d.state === 'retrying' && d.nextAttemptAt ? c : null, seen: d ? `${d.state} (${d.lastDeclineCode})` : 'no cycle' };
    });
    // One notice for the failure (the ledger row is written right after the cycle's state).
    const notices1 = await waitFor('the payment_failed notice in the notification ledger', async () => {
      const rows = await noticesFor(draft.id);
      return { done: rows.some((n) => n.status !== 'suppressed') ? rows : null, seen: rows.map((n) => `${n.kind}/${n.status}`).join(', ') || 'none' };
    });
    // Looked for while the cycle goes on; never fails the step (the sender may be off, or in quiet hours).
    const emailSeen = emailInMailpit(ctx.email ?? '', notices1.map((n) => `${n.kind}/${n.status}`).join(', '));
    let retryPart: string;
    if (firstRetryMs <= maxWait) {
      await waitFor(`retry #1 at ${started.dunning.nextAttemptAt}`, async () => {
        const c = await customer();
        return { done: (c.dunning?.attempt ?? 0) >= 1 ? c : null, seen: `${c.dunning?.state} attempt ${c.dunning?.attempt}` };
      }, firstRetryMs + stepTimeoutMs);
      retryPart = `retry #1 after ${(firstRetryMs / 1000).toFixed(0)} s declined again`;
    } else {
      retryPart = `retry #1 scheduled for ${started.dunning.nextAttemptAt} (this stack's DUNNING_RETRY_DAYS=${stack.dunningRetryDays ?? '1,3,5,7 (default)'}; not awaited)`;
    }
    const afterRetry = await ls('GET', `/v1/invoices/${draft.id}`);
    await postEvent(paymentFailedEvent(afterRetry, 'expired_card', 2));
    await waitFor('dunning waiting for a new payment method after expired_card', async () => {
      const c = await customer();
      return { done: c.dunning?.state === 'awaiting_payment_method' ? c : null, seen: `${c.dunning?.state} (${c.dunning?.lastDeclineCode})` };
    });
    // The customer adds a good card: real on localstripe; payment_method.attached is a fixture (localstripe never sends it).
    const good = await ls('POST', '/v1/payment_methods/pm_card_visa/attach', { customer: customerId });
    await ls('POST', `/v1/customers/${customerId}`, { 'invoice_settings[default_payment_method]': good.id });
    const attached = fixtureEvent('payment_method.attached', { [FIXTURE_PAYMENT_METHOD_ID]: good.id, [FIXTURE_CUSTOMER_ID]: customerId });
    attached.data.object.card = { ...attached.data.object.card, brand: 'visa', display_brand: 'visa', last4: String(good.card?.last4 ?? '4242') };
    await postEvent(attached);
    const c = await waitFor('dunning recovered and the subscription active', async () => {
      const c = await customer();
      const d = c.dunning;
      return { done: d?.invoiceId === draft.id && d.state === 'recovered' && c.subscription?.status === 'active' ? c : null, seen: `${describe(c)}; dunning ${d?.state} attempt ${d?.attempt}` };
    });
    // The cycle's last act mirrors the subscription from Stripe: let it finish before anything else changes Stripe.
    const temporal = await createTemporalClient({ address: stack.temporalAddress, namespace: 'default' });
    try {
      await waitFor(`workflow ${dunningWorkflowId(draft.id)} completed`, async () => {
        const d = await temporal.workflow.getHandle(dunningWorkflowId(draft.id)).describe();
        return { done: d.status.name === 'COMPLETED' ? d : null, seen: d.status.name };
      });
    } finally {
      await temporal.connection.close();
    }
    const paid = await ls('GET', `/v1/invoices/${draft.id}`);
    if (paid.status !== 'paid') throw new StepFailure(`invoice ${draft.id} is ${paid.status} on localstripe after recovery`);
    const notices = await noticesFor(draft.id);
    // The customer is told once about the failure; the hard decline within the notice spacing sends no
    // second reminder (held back, then withdrawn at recovery); an outcome notice (recovered) may follow.
    const toldAtFirstFailure = notices1.filter((n) => n.status !== 'suppressed').length;
    const remindersSent = notices.filter((n) => n.kind !== 'recovered' && n.kind !== 'final_notice' && n.status === 'sent');
    const ledger = notices.map((n) => `${n.kind}/${n.status}`).join(', ') || 'none';
    if (toldAtFirstFailure !== 1 || remindersSent.length > 1) throw new StepFailure(`expected one notice at the first failure and at most one reminder sent, ledger has: ${ledger}`);
    const noticeState = (st: string) => (st === 'canceled' ? 'withdrawn at recovery' : st === 'suppressed' ? 'suppressed by the notice spacing' : st);
    ctx.emailLine = await emailSeen;
    ctx.dunningLine = `recovered after ${c.dunning.attempt} ${c.dunning.attempt === 1 ? 'retry' : 'retries'} (insufficient_funds → expired_card → new card); 1 notice at the first failure (ledger: ${notices.map((n) => `${n.kind} ${noticeState(n.status)}`).join('; ')})`;
    return `renewal ${draft.id} ${money(declined.amount_due, declined.currency)} declined on localstripe; fixture invoice.payment_failed insufficient_funds (soft) → dunning retrying, access ${started.accessState}, 1 notice; ${retryPart}; fixture invoice.payment_failed expired_card (hard) → awaiting_payment_method; new card ${good.id} (+ fixture payment_method.attached) → retry paid → local: ${describe(c)}, dunning ${c.dunning.state} after ${c.dunning.attempt} attempts; ${ctx.emailLine}`;
  });

  /** The customer's email as Mailpit's API shows it (polled up to timeoutMs), or why there is none. */
  async function emailInMailpit(to: string, noticeState: string, timeoutMs = 10_000): Promise<string> {
    if (!stack.mailpitUrl) return 'email sending not configured';
    const deadline = Date.now() + timeoutMs;
    let seen = 'no email to it yet';
    for (;;) {
      try {
        const res = await fetch(`${stack.mailpitUrl}/api/v1/messages?limit=100`, { signal: AbortSignal.timeout(3000) });
        if (!res.ok) seen = `Mailpit answered HTTP ${res.status}`;
        else {
          const messages = ((await res.json()) as { messages?: Obj[] }).messages ?? [];
          // Newest first: the oldest one to this customer is the failure notice.
          const mail = [...messages].reverse().find((m) => ((m.To ?? []) as Obj[]).some((a) => String(a.Address).toLowerCase() === to.toLowerCase()));
          if (mail) return `email "${mail.Subject}" to ${mail.To.map((a: Obj) => a.Address).join(', ')} in Mailpit ${stack.mailpitUrl}/view/${mail.ID}`;
        }
      } catch (err) {
        seen = `Mailpit unreachable: ${(err as Error).message}`;
      }
      if (Date.now() > deadline) return `no email to ${to} in Mailpit ${stack.mailpitUrl} within ${Math.round(timeoutMs / 1000)} s (${seen}; notice ${noticeState})`;
      await sleep(500);
    }
  }

  async function noticesFor(invoiceId: string): Promise<{ kind: string; status: string }[]> {
    return sql<{ kind: string; status: string }[]>`SELECT kind, status FROM notifications WHERE invoice_id = ${invoiceId} ORDER BY id`;
  }
}
