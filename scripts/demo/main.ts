/**
 * `npm run demo`: the whole billing lifecycle against the local stack, no Stripe account needed.
 * Uses the running `npm run dev` (found through .data/dev-stack.json + GET /healthz), or starts one in
 * the background with a shortened dunning schedule and stops it at the end. See support/demo/steps.ts
 * for the story and where signed fixture events stand in for the emulator.
 *
 *   npm run demo                      # default: reuse a running dev stack, else start one
 *   npm run demo -- --keep            # leave the stack the demo started running (for the Temporal UI)
 *   DEMO_STEP_TIMEOUT_MS=60000 npm run demo
 *
 * Exit code 0 only if every step reached its expected state.
 */
import { devDataDir, findRunningStack, startDevStack, stateFileIn, type StartedStack } from '../../support/demo/dev-stack';
import { demoStackFrom, formatSummary, runDemo } from '../../support/demo/steps';

/** Retry days of the stack the demo starts: first retry after ~17 s, the customer has ~86 s to add a card. */
export const DEMO_DUNNING_RETRY_DAYS = '0.0002,0.0005,0.001';

async function main(): Promise<number> {
  const keep = process.argv.includes('--keep');
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const dataDir = devDataDir();
  let started: StartedStack | null = null;
  let state = await findRunningStack(dataDir);
  if (state) {
    out(`[demo] using the running dev stack (${stateFileIn(dataDir)}, API ${state.apiUrl} healthy)`);
  } else {
    const retryDays = process.env.DUNNING_RETRY_DAYS ?? DEMO_DUNNING_RETRY_DAYS;
    out(`[demo] no dev stack running: starting scripts/dev.ts in the background (DUNNING_RETRY_DAYS=${retryDays}; log in ${dataDir}/demo-dev-stack.log)…`);
    const t0 = Date.now();
    // Always the local emulators: a Stripe key in this shell must not turn the demo into real charges.
    started = await startDevStack({ env: { DUNNING_RETRY_DAYS: retryDays, STRIPE_SECRET_KEY: undefined, STRIPE_API_BASE: undefined, STRIPE_WEBHOOK_SECRET: undefined }, log: out });
    state = started.state;
    out(`[demo] dev stack up in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  const stopStarted = async () => {
    if (!started) return;
    if (keep) {
      out(`[demo] --keep: the dev stack keeps running (pid ${started.pid}); stop it with: kill ${started.pid}`);
      return;
    }
    out('[demo] stopping the dev stack it started…');
    await started.stop();
  };
  process.once('SIGINT', () => {
    void stopStarted().then(() => process.exit(130));
  });

  const checked = demoStackFrom(state, { adminToken: process.env.ADMIN_TOKEN, apiToken: process.env.API_TOKEN });
  if (!checked.ok) {
    out(`[demo] cannot run: ${checked.reason}`);
    await stopStarted();
    return 2;
  }
  const stack = checked.stack;
  const schedule = stack.dunningRetryDays
    ? `DUNNING_RETRY_DAYS=${stack.dunningRetryDays} (${stack.dunningRetryDays
        .split(',')
        .map((d) => (Number(d) < 1 / 24 ? `${Math.round(Number(d) * 86_400)} s` : `${Number(d)} d`))
        .join(', ')} after the first failure)`
    : 'DUNNING_RETRY_DAYS default 1,3,5,7 days: the scheduled retry is reported, not awaited (start `DUNNING_RETRY_DAYS=0.0002,0.0005,0.001 npm run dev` to see it)';
  out(`[demo] Stripe = localstripe ${stack.localstripeUrl} behind the emulator gateway ${stack.stripeApiBase}; dunning: ${schedule}`);
  out(`[demo] Temporal UI ${stack.temporalUiUrl}/namespaces/default/workflows`);
  out('');

  const stepTimeoutMs = Number(process.env.DEMO_STEP_TIMEOUT_MS ?? 30_000);
  let code = 1;
  try {
    const report = await runDemo(stack, { stepTimeoutMs, print: out });
    out('');
    out(formatSummary(report.summary));
    if (report.customerId) out(`\nTemporal UI: ${stack.temporalUiUrl}/namespaces/default/workflows/customer:${report.customerId}`);
    code = report.ok ? 0 : 1;
    out(report.ok ? '\n[demo] every step reached its expected state' : '\n[demo] FAILED: see the steps marked FAILED above');
  } catch (err) {
    out(`[demo] aborted: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  } finally {
    await stopStarted();
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`[demo] ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
