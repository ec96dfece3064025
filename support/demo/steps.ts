/**
 * The demo story (`npm run demo`, test/e2e/demo.test.ts): six steps against a running dev stack on
 * local emulators. The emulator (localstripe) acts where it can; where it cannot, the demo posts signed
 * events built from the fixtures in test/fixtures/events/ and says so in its output:
 *   - invoice.payment_failed with a decline code (localstripe sends no event for a synchronous decline,
 *     and its errors carry no decline_code);
 *   - payment_method.attached (localstripe never sends payment_method.* events).
 * Plan changes and checkout go through support/emulator-gateway/gateway.ts (see its header); checkout is paid on
 * the API's dev checkout page (api/routes/dev-checkout.ts) when the stack serves it. The dunning step
 * shows the customer's email from Mailpit's API when the stack runs Mailpit.
 * Every expected state is read back from the API (Postgres for the notification ledger, which has no
 * endpoint) and must be reached within the step timeout, or the step fails.
 */
import { buildSummary, emptySummary } from './summary';
import type { DevStackState } from './dev-stack';
import { createDemoHarness } from './harness';
import { dunningStep } from './step-dunning';
import { driftStep, redeliveryStep } from './step-drift-redelivery';
import { planChangeStep } from './step-plan-change';
import { catalogStep, checkoutStep } from './step-subscribe';
import type { DemoOptions, DemoReport, DemoStack, DemoSummary } from './types';

export type { DemoOptions, DemoReport, DemoStack, DemoSummary, StepResult } from './types';

/** Checks that a dev stack can run the demo; returns what is missing otherwise. */
export function demoStackFrom(
  state: DevStackState,
  tokens: { adminToken?: string | undefined; apiToken?: string | undefined } = {},
): { ok: true; stack: DemoStack } | { ok: false; reason: string } {
  if (!state.stripeSecretKey || !state.webhookSecret) {
    return { ok: false, reason: 'this dev stack talks to a real Stripe account (STRIPE_SECRET_KEY set); the demo only runs on the local emulators' };
  }
  const adminToken = state.adminToken ?? tokens.adminToken;
  if (!adminToken) return { ok: false, reason: 'this dev stack uses your own ADMIN_TOKEN: run the demo with the same ADMIN_TOKEN in its environment' };
  if (!state.localstripeUrl || !state.stripeApiBase || state.localstripeUrl === state.stripeApiBase) {
    return { ok: false, reason: 'this dev stack predates the emulator gateway (no localstripeUrl in its state file): restart `npm run dev`' };
  }
  return {
    ok: true,
    stack: {
      apiUrl: state.apiUrl,
      temporalUiUrl: state.temporalUiUrl,
      temporalAddress: state.temporalAddress,
      databaseUrl: state.databaseUrl,
      stripeApiBase: state.stripeApiBase,
      localstripeUrl: state.localstripeUrl,
      stripeSecretKey: state.stripeSecretKey,
      webhookSecret: state.webhookSecret.split(',')[0]!.trim(),
      adminToken,
      apiToken: tokens.apiToken ?? null,
      dunningRetryDays: state.dunningRetryDays ?? null,
      mailpitUrl: state.mailpitUrl ?? null,
    },
  };
}

/** Runs the six steps; never throws for a failing step (it is reported), only for a broken stack. */
export async function runDemo(stack: DemoStack, options: DemoOptions = {}): Promise<DemoReport> {
  const h = createDemoHarness(stack, options);
  const { print, sql, steps, ctx } = h;

  await catalogStep(h);
  const subscribed = ctx.base ? await checkoutStep(h) : false;

  if (!subscribed || !ctx.customerId || !ctx.subscriptionId) {
    for (const [n, title] of [[3, 'plan changes'], [4, 'dunning'], [5, 'reconciliation'], [6, 'redelivery']] as const) {
      steps.push({ step: n, title, ok: false, line: `[${n}/6] SKIPPED ${title}: no subscription`, error: 'no subscription' });
      print(`[${n}/6] SKIPPED ${title}: needs the subscription of step 2`);
    }
    await sql.end({ timeout: 5 });
    return { ok: false, steps, customerId: ctx.customerId, summary: await emptySummary(h) };
  }

  await planChangeStep(h);
  await dunningStep(h);
  await driftStep(h);
  await redeliveryStep(h);

  const summary = await buildSummary(h);
  await sql.end({ timeout: 5 });
  return { ok: steps.every((s) => s.ok), steps, customerId: ctx.customerId, summary };
}

/** The summary as an aligned two-column table. */
export function formatSummary(summary: DemoSummary): string {
  const width = Math.max(...summary.rows.map(([k]) => k.length));
  const line = '─'.repeat(width + 2);
  return [`┌${line}┬${'─'.repeat(40)}`, ...summary.rows.map(([k, v]) => `│ ${k.padEnd(width)} │ ${v}`), `└${line}┴${'─'.repeat(40)}`].join('\n');
}
