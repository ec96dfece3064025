/**
 * `npm run chaos`: a burst of signed webhooks (default 2,000 events over 200 customers, 20% duplicates,
 * shuffled) against the real stack while the worker is SIGKILLed and restarted (once mid-burst, once
 * right after an apply committed), the Temporal dev server is stopped and restarted on the same db file,
 * PostgreSQL is stopped for a second while deliveries keep coming and started again, and the API is
 * SIGKILLed while its dispatcher holds claimed rows and restarted (their lease, DISPATCH_LEASE_MS, is 3 s
 * here so the new process takes them again soon). The worker also fails a share of applies after their
 * commit (and every apply holding a payment failure or a poison event), and a few customers get a poison
 * event mid-stream: an invoice whose attempt_count overflows its int4 column. The sender retries every
 * non-2xx and connection error like Stripe.
 * Then it checks: no event lost, none applied twice, the poison quarantined and its customer's later
 * events applied, no effect missing or doubled (one dunning cycle, its workflow and one notice per
 * failed, never-paid invoice), every customer's final state equals the state of its events applied in
 * order without faults, and no delivery failed outside the Postgres restart and the API kill (the
 * webhook acknowledges on commit: the worker or Temporal being down only grows the inbox).
 *
 * Replicas (--replicas 2): several API and worker processes on the one Postgres and Temporal. The sender
 * spreads deliveries round-robin over the APIs like a load balancer (a replica that fails to answer
 * leaves the rotation until /readyz answers again; the delivery is retried on another one), and the API
 * and worker kills become `api-replica-kill` / `worker-replica-kill`: the first replica is SIGKILLed and
 * left dead — frozen first (SIGSTOP) while it holds work only a takeover can finish: claims whose signal
 * never landed, events Temporal gave it and it never applied — and the survivors carry the rest: the rows
 * the dead API had claimed are taken over by another dispatcher once their lease ends. The report then counts per replica (deliveries acknowledged, rows
 * claimed, events applied: who claimed and applied what is recorded by chaos-only triggers, keyed by each
 * replica's application_name), and at the end the survivors get SIGTERM and must exit 0 within the bound.
 *
 * Flags: --events N · --customers N · --duplicates 0.2 · --seed N · --concurrency N · --rate N (deliveries/s)
 *        --crash-rate 0.1 (share of applies failed after commit; 0: none) · --poison N (poisoned customers)
 *        --replicas N (API and worker processes) · --api-replicas N · --worker-replicas N
 *        --faults kind:at,… (e.g. api-replica-kill:0.3,worker-replica-kill:0.5) · --graceful-stop
 *        --keep (keep the temp dir with all logs)
 * `runChaos(opts)` is this run as a function: scripts/chaos/main.ts is its CLI, test/integration/chaos.test.ts
 * runs a lean one.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { startBillingStack, type BillingStack, type ProcessExit, type ServiceProcess } from '../billing-stack/stack';
import { startPagingStripeFake, type PagingStripeFake } from '../stripe-fake';
import { freePort, tempDir } from '../services';
import { runChecks } from './checks';
import type { ChaosRun, RunState } from './context';
import { drain } from './drain';
import { startFaults } from './faults';
import { resolveOptions } from './options';
import { installAudit } from './probes';
import { startSender } from './sender';
import { buildStream, FAILED_ID_SUFFIX, POISON_ID_SUFFIX } from './stream';
import { API_KILLS, type ChaosOptions, type ChaosReport, type ShutdownRecord, STOP_BOUND_MS } from './types';

export type * from './types';
export { renderChaosReport } from './report';

// ---------------------------------------------------------------- the run

/** Runs one chaos scenario on a private stack and returns what it found (never throws for violations). */
export async function runChaos(options: ChaosOptions = {}): Promise<ChaosReport> {
  const { apiReplicas, workerReplicas, o } = resolveOptions(options);
  const log = options.log ?? ((s: string) => process.stderr.write(`[chaos] ${s}\n`));
  const t0 = Date.now();
  const dir = options.dir ?? tempDir('billing-chaos');
  const stream = buildStream({
    events: o.events,
    customers: o.customers,
    duplicateRate: o.duplicateRate,
    seed: o.seed,
    runTag: `X${o.seed.toString(36)}`,
    poisonCustomers: o.poisonCustomers,
  });
  const rate = options.ratePerSecond ?? Math.max(5, stream.deliveries.length / 20);
  const byId = new Map(stream.events.map((e) => [e.id, e]));
  const violations: string[] = [];
  const unexpectedExits: ChaosReport['unexpectedExits'] = [];
  // The worker's test-only fault hooks (worker/main.ts; refused with NODE_ENV=production, the stack's default).
  const killFile = path.join(dir, 'kill-worker-after-commit');
  const killAfterCommit = o.faults.some((f) => f.kind === 'worker-kill-after-commit');
  const workerFaultEnv: Record<string, string> = {
    ...(o.crashAfterCommitRate > 0
      ? { FAULT_AFTER_COMMIT_RATE: String(o.crashAfterCommitRate), FAULT_SEED: String(o.seed), FAULT_AFTER_COMMIT_FOCUS: `${FAILED_ID_SUFFIX},${POISON_ID_SUFFIX}` }
      : {}),
    ...(killAfterCommit ? { FAULT_KILL_AFTER_COMMIT_FILE: killFile } : {}),
  };
  // Rows a killed API left claimed wait for their lease; the default 30 s would only stretch the drain.
  // With one API process a lease shorter than a slow pass takes nothing from a live claim; with replicas
  // another one may take it and signal those events twice, which the workflow drops (applied once).
  const apiKill = o.faults.some((f) => API_KILLS.has(f.kind));
  /** What the parts change as the run goes on (see ./context.ts). */
  const state: RunState = { killArmed: false, sampling: false, acked: 0, retried: 0, next: 0, ackedBeforeApiKill: null, applyMarkAtWorkerKill: null };

  let stack: BillingStack | null = null;
  let fake: PagingStripeFake | null = null;
  try {
    stack = await startBillingStack({
      dir,
      log,
      // Stripe's side of the story for reads (a dunning cycle syncs the subscription it failed on):
      // each subscription in its final state, the one the events lead to; the rest goes to stripe-mock.
      stripeApiBase: async (mockUrl) => {
        fake = await startPagingStripeFake({ port: await freePort(), upstream: mockUrl });
        fake.setSubscriptions(
          stream.expected.map((e) => ({
            id: e.subscriptionId,
            customer: e.customerId,
            status: e.subscription.status,
            priceId: e.subscription.priceId,
            currentPeriodStart: null,
            currentPeriodEnd: e.subscription.currentPeriodEnd,
            cancelAtPeriodEnd: e.subscription.cancelAtPeriodEnd,
          })),
        );
        return fake.url;
      },
      fastPostgres: options.fastPostgres ?? false,
      workerEnv: Object.keys(workerFaultEnv).length ? { NODE_ENV: 'test', ...workerFaultEnv } : {},
      apiEnv: apiKill ? { DISPATCH_LEASE_MS: String(o.dispatchLeaseMs) } : {},
      apiReplicas,
      workerReplicas,
      supervise: true,
      onUnexpectedExit: (name: string, exit: ProcessExit) => {
        if (name.startsWith('worker') && state.killArmed) {
          state.killArmed = false;
          log(`  ${name} SIGKILLed itself after a commit (${exit.code ?? exit.signal}); the stack restarts it`);
          return;
        }
        unexpectedExits.push({ name, code: exit.code, signal: exit.signal });
        log(`${name} exited on its own (${exit.code ?? exit.signal}); restarting it so the run can finish, but the run fails`);
      },
    });
    const s = stack;
    await installAudit(s.sql);
    const stackMs = Date.now() - t0;
    const over = s.apis.length > 1 ? ` over ${s.apis.length} APIs` : '';
    log(`sending ${stream.deliveries.length} deliveries (${stream.events.length} unique events over ${o.customers} customers) at ≤ ${Math.round(rate)}/s, ${o.concurrency} in flight${over}`);
    /** Who claimed / applied what: each replica's sessions carry application_name `billing-<name>` (support/billing-stack/stack.ts). */
    const appOf = (p: ServiceProcess) => `billing-${p.name}`;
    const replicaOf = (app: string) => app.replace(/^billing-/, '');
    const ctx: ChaosRun = { s, o, stream, byId, log, dir, violations, unexpectedExits, killFile, killAfterCommit, rate, appOf, replicaOf, state };

    // The burst (the sender, and the fault driver beside it), the drain, then the checks.
    const sent = startSender(ctx);
    const f = startFaults(ctx, sent);
    const d = await drain(ctx, sent, f);
    const { counts, crashes, replicas } = await runChecks(ctx, sent, f, d);

    // The survivors, stopped as an orchestrator would: SIGTERM, then the bound (the stack SIGKILLs 5 s past it).
    const shutdowns: ShutdownRecord[] = [];
    if (o.gracefulStop) {
      const survivors = [...s.apis, ...s.workers].filter((p) => p.running);
      shutdowns.push(
        ...(await Promise.all(
          survivors.map(async (p): Promise<ShutdownRecord> => {
            const boundMs = s.apis.includes(p) ? STOP_BOUND_MS.api : STOP_BOUND_MS.worker;
            const from = Date.now();
            await p.stop(boundMs + 5000);
            const exit = p.exits[p.exits.length - 1]!;
            return { name: p.name, code: exit.code, signal: exit.signal, ms: exit.at - from, boundMs };
          }),
        )),
      );
      for (const x of shutdowns) {
        log(`  ${x.name} stopped on SIGTERM in ${x.ms} ms (${x.code ?? x.signal})`);
        if (x.code !== 0) violations.push(`${x.name} did not exit cleanly on SIGTERM: ${x.code ?? x.signal}`);
        else if (x.ms > x.boundMs) violations.push(`${x.name} took ${x.ms} ms to exit on SIGTERM (bound ${x.boundMs} ms)`);
      }
    }

    const report: ChaosReport = {
      ok: violations.length === 0,
      violations,
      counts,
      faults: f.faults,
      crashes,
      unexpectedExits,
      replicas,
      shutdowns,
      timings: { stackMs, burstMs: d.burstMs, drainMs: d.drainMs, totalMs: 0 },
      dir,
    };
    return report;
  } finally {
    state.sampling = false;
    if (stack) await stack.stop();
    await (fake as PagingStripeFake | null)?.stop();
    if (!options.keep && violations.length === 0) rmSync(dir, { recursive: true, force: true });
  }
}
