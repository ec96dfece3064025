/** Step 3: an upgrade with a proration preview, then a downgrade at period end. */
import { type DemoHarness, StepFailure, money, day } from './harness';

/** 3. Upgrade with proration preview, downgrade at period end. */
export async function planChangeStep(h: DemoHarness): Promise<boolean> {
  const { run, ctx, api, expectOk, waitFor, customer, describe, step } = h;
  return step(3, 'upgrade with proration preview, downgrade at period end', async () => {
    const base = ctx.base!;
    const up = ctx.upgrade!;
    const preview = expectOk(await api('POST', `/customers/${ctx.customerId}/subscription/plan/preview`, { planId: up.id }), `preview ${up.id}`);
    const change = await api('PUT', `/customers/${ctx.customerId}/subscription/plan`, { planId: up.id, requestId: `demo-${run}-up`, prorationDate: preview.prorationDate, subscriptionVersion: preview.subscriptionVersion });
    const result = expectOk(change, `PUT plan ${up.id}`, [200]);
    if (result.status !== 'confirmed') throw new StepFailure(`upgrade answered ${result.status}: ${result.message}`);
    await waitFor(`plan ${up.id} locally (customer.subscription.updated)`, async () => {
      const c = await customer();
      return { done: c.subscription?.planId === up.id ? c : null, seen: describe(c) };
    });
    const down = expectOk(await api('PUT', `/customers/${ctx.customerId}/subscription/plan`, { planId: base.id, requestId: `demo-${run}-down` }), `PUT plan ${base.id}`, [202]);
    if (down.status !== 'scheduled') throw new StepFailure(`downgrade answered ${down.status}: ${down.message}`);
    const c = await waitFor(`pendingPlanId ${base.id} locally`, async () => {
      const c = await customer();
      return { done: c.subscription?.pendingPlanId === base.id && c.subscription?.planId === up.id ? c : null, seen: describe(c) };
    });
    const estimate = preview.estimate ? ` (time-based estimate ${money(preview.estimate.net, preview.currency)})` : '';
    return `upgrade ${base.id} → ${up.id}: preview ${money(preview.amountDueNow, preview.currency)} due now${estimate}; PUT → ${result.status}, invoice ${result.invoiceId ?? 'n/a'} paid; downgrade ${up.id} → ${base.id} ${down.status} for ${day(down.effectiveAt)} → local: ${describe(c)}`;
  });
}
