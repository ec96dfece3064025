/** Steps 5 and 6: drift behind the system's back and its reconciliation, then a webhook redelivered three times. */
import { signWebhookPayload } from '../emulator-gateway/gateway';
import { type DemoHarness, StepFailure, sleep, type Obj } from './harness';

/** 5. Drift and reconciliation. */
export async function driftStep(h: DemoHarness): Promise<boolean> {
  const { ctx, admin, ls, expectOk, waitFor, customer, describe, step } = h;
  return step(5, 'drift and reconciliation', async () => {
    const subId = ctx.subscriptionId!;
    const before = await customer();
    if (before.subscription?.cancelAtPeriodEnd !== false) throw new StepFailure(`expected cancelAtPeriodEnd false locally before the drift, saw ${describe(before)}`);
    // Behind the system's back: straight to localstripe (not the gateway), which sends no webhook for an update.
    const changed = await ls('POST', `/v1/subscriptions/${subId}`, { cancel_at_period_end: 'true' });
    if (changed.cancel_at_period_end !== true) throw new StepFailure('localstripe did not accept cancel_at_period_end');
    await sleep(1500);
    const still = await customer();
    if (still.subscription?.cancelAtPeriodEnd !== false) throw new StepFailure('the local row changed without reconciliation: the drift did not happen behind its back');
    const started = expectOk(await admin('POST', '/admin/reconciliations', { repairWaitSeconds: 30 }), 'POST /admin/reconciliations', [202]);
    ctx.runId = started.runId;
    const run = await waitFor(`drift on ${subId} found and repaired by ${started.runId}`, async () => {
      const res = await admin('GET', `/admin/reconciliations/${encodeURIComponent(started.runId)}?limit=500`);
      const mine = ((res.body.drift ?? []) as Obj[]).filter((d) => d.subscriptionId === subId);
      const done = mine.length > 0 && mine.every((d) => d.repairStatus === 'repaired') ? { run: res.body, mine } : null;
      return { done, seen: `run ${res.body.status ?? res.status}, scanned ${res.body.scanned ?? '?'}, drift on ${subId}: ${mine.map((d) => `${d.field} ${d.repairStatus}`).join(', ') || 'none'}` };
    });
    const c = await waitFor('cancelAtPeriodEnd true locally', async () => {
      const c = await customer();
      return { done: c.subscription?.cancelAtPeriodEnd === true ? c : null, seen: describe(c) };
    });
    const fields = run.mine.map((d: Obj) => `${d.field} ${d.localValue} → ${d.stripeValue}`).join(', ');
    ctx.driftLine = `${run.mine.length} found on ${subId} (${fields}), ${run.mine.filter((d: Obj) => d.repairStatus === 'repaired').length} repaired; run ${started.runId}: scanned ${run.run.scanned}, drifted ${run.run.drifted}`;
    return `set cancel_at_period_end=true on localstripe without a webhook (local still false); POST /admin/reconciliations → ${started.runId}: drift ${fields}, ${run.mine[0]?.repairStatus} via the customer workflow → local: ${describe(c)}`;
  });
}

/** 6. A webhook redelivered three times, applied once. */
export async function redeliveryStep(h: DemoHarness): Promise<boolean> {
  const { stack, sql, ctx, admin, ls, expectOk, waitFor, step } = h;
  return step(6, 'webhook redelivered three times, applied once', async () => {
    // A real localstripe event (the recovery's invoice.payment_succeeded), redelivered the way Stripe retries: same id, new signature.
    const events = (await ls('GET', '/v1/events?limit=100&type=invoice.payment_succeeded')).data as Obj[];
    let event = events.find((e) => e.data?.object?.id === ctx.renewalInvoiceId) ?? null;
    if (!event) {
      const created = (await ls('GET', '/v1/events?limit=100&type=customer.subscription.created')).data as Obj[];
      event = created.find((e) => e.data?.object?.id === ctx.subscriptionId) ?? null;
    }
    if (!event) throw new StepFailure('found no localstripe event of this customer to redeliver');
    const first = await waitFor(`${event.id} applied`, async () => {
      const res = await admin('GET', `/admin/webhook-events/${event!.id}`);
      return { done: res.status === 200 && res.body.status === 'applied' ? res.body : null, seen: res.status === 200 ? `${res.body.status}, attempts ${res.body.attempts}` : `HTTP ${res.status}` };
    });
    const payload = JSON.stringify(event, null, 2);
    const answers: Obj[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${stack.apiUrl}/webhooks/stripe`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': signWebhookPayload(payload, stack.webhookSecret) },
        body: payload,
      });
      const body = (await res.json()) as Obj;
      if (res.status !== 200) throw new StepFailure(`redelivery ${i + 1}: HTTP ${res.status} ${JSON.stringify(body)}`);
      answers.push(body);
    }
    const after = expectOk(await admin('GET', `/admin/webhook-events/${event.id}`), `GET /admin/webhook-events/${event.id}`);
    const applied = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM applied_events WHERE event_id = ${String(event.id)}`;
    if (after.attempts !== first.attempts + 3) throw new StepFailure(`attempts ${after.attempts}, expected ${first.attempts + 3}`);
    if (!answers.every((a) => a.duplicate === true)) throw new StepFailure(`a redelivery was not recognised as a duplicate: ${JSON.stringify(answers)}`);
    if (after.status !== 'applied' || after.appliedAt !== first.appliedAt || applied[0]?.n !== 1) {
      throw new StepFailure(`expected one application, saw status ${after.status}, appliedAt ${after.appliedAt} (was ${first.appliedAt}), applied_events rows ${applied[0]?.n}`);
    }
    return `${event.type} ${event.id} (from localstripe) redelivered 3× with the same id → each answered duplicate; GET /admin/webhook-events/${event.id}: attempts ${after.attempts}, status ${after.status}, applied once at ${String(after.appliedAt).slice(11, 19)} (${after.appliedOutcome ?? 'applied'})`;
  });
}
