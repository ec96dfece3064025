/**
 * `npm run bench`: see scripts/bench/options.ts for what it runs and its flags (`npm run bench -- --help`).
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import v8 from 'node:v8';
import path from 'node:path';
import { createSql } from '../../lib/db';
import { benchCustomerId, summarize, type LatencySummary, type LoadJob, type LoadResult } from './load';
import { createFloorSchema } from './floor';
import { CpuSampler, findPid, heaviestProcess, postmasterPid, type CpuSnapshot, type CpuUsage } from '../../support/billing-stack/proc';
import { sleep, startBillingStack, type BillingStack, type ServiceProcess, type TemporalJournal } from '../../support/billing-stack/stack';
import { renderOverload, renderStorm, runOverload, runRenewalStorm, type OverloadRow, type StormRow } from './storm';
import { startPagingStripeFake, type FakeSubscription, type PagingStripeFake } from '../../support/stripe-fake';
import { ROOT, TOOLS_BIN, freePort, tempDir, waitForPort } from '../../support/services';
import { parseArgs, usage, type BenchOptions } from './options';
import { bottleneck, Meter, type PhaseResources } from './measure';
import { endToEndLag, machineInfo, printProfiles, reconciliationAvailable, round2, runReconciliation, slim, versionInfo, workerTuning, type AckRow, type E2eRow, type ReconciliationRow, type ScaleRow } from './phases';
import { renderMarkdown, type Report } from './render';

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    process.stdout.write(usage());
    return;
  }
  if (process.argv[2] === '--render') {
    // Re-print the markdown of an earlier run (default bench-results/latest.json) without running anything.
    const file = path.resolve(process.argv[3] ?? path.join(ROOT, 'bench-results', 'latest.json'));
    process.stdout.write(renderMarkdown(JSON.parse(readFileSync(file, 'utf8')) as Report));
    return;
  }
  const opts = parseArgs(process.argv.slice(2));
  const log = (s: string) => process.stderr.write(`[bench] ${s}\n`);
  const dir = tempDir('billing-bench');
  const cleanups: (() => Promise<void>)[] = [];
  let stack: BillingStack | null = null;
  let loadgen: ChildProcess | null = null;
  let stopping = false;
  const stopAll = async (beforeRemoving?: () => void) => {
    if (stopping) return;
    stopping = true;
    loadgen?.kill('SIGTERM');
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => log(`cleanup: ${String(e)}`));
    if (stack) await stack.stop();
    beforeRemoving?.();
    if (!opts.keep) rmSync(dir, { recursive: true, force: true });
    else log(`kept ${dir}`);
  };
  let signals = 0;
  const onSignal = () => {
    // npm, tsx and the terminal may each deliver the same signal: stop once, force on the third.
    if (++signals === 1) {
      log('interrupted; stopping the stack');
      void stopAll().finally(() => process.exit(130));
    } else if (signals >= 3) process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const machine = machineInfo();
    log(`machine: ${machine.cores} × ${machine.cpuModel}, ${machine.memoryGiB} GiB; temp dir ${dir}`);

    let fake: PagingStripeFake | null = null;
    stack = await startBillingStack({
      dir,
      log,
      workerMetrics: true,
      env: opts.env,
      temporalJournal: opts.temporalJournal,
      temporalEagerActivities: opts.temporalEagerActivities,
      ...(opts.nativeClient ? { apiEntry: 'scripts/bench/api-variant.ts', apiEnv: { BENCH_NATIVE_CLIENT: '1' } } : {}),
      ...(opts.workerOptions
        ? { workerEntry: 'scripts/bench/worker-variant.ts', workerEnv: { BENCH_WORKER_OPTIONS: JSON.stringify(opts.workerOptions) } }
        : {}),
      ...(opts.profile.includes('api') ? { apiNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${path.join(dir, 'profiles', 'api')}`] } : {}),
      ...(opts.profile.includes('worker') ? { workerNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${path.join(dir, 'profiles', 'worker')}`] } : {}),
      stripeApiBase: async (mockUrl) => {
        fake = await startPagingStripeFake({ port: await freePort(), upstream: mockUrl });
        cleanups.push(() => fake!.stop());
        return fake.url;
      },
    });
    const s = stack;
    const versions = await versionInfo(s);

    // The floor: a bare verify+insert endpoint in its own process, own database of the same cluster.
    let floor: ServiceProcess | null = null;
    let floorUrl = '';
    if (opts.floor) {
      const admin = createSql(s.pg.url, { max: 1 });
      await admin.unsafe('CREATE DATABASE floor');
      await admin.end();
      const fsql = createSql(s.pg.urlFor('floor'), { max: 1 });
      await createFloorSchema(fsql);
      await fsql.end();
      const port = await freePort();
      floor = s.spawnService('floor', 'scripts/bench/floor.ts', { PORT: String(port), DATABASE_URL: s.pg.urlFor('floor') });
      floor.start();
      await waitForPort(port, '127.0.0.1', 60_000, 'floor server');
      floorUrl = `http://127.0.0.1:${port}/webhooks/stripe`;
    }

    loadgen = fork(path.join(__dirname, 'load.ts'), [], { execArgv: ['--import', 'tsx'], cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const lg = loadgen;
    const runJob = (job: LoadJob) =>
      new Promise<LoadResult>((resolve, reject) => {
        const onMsg = (m: { result?: LoadResult; error?: string }) => {
          lg.off('exit', onExit);
          if (m.result) resolve(m.result);
          else reject(new Error(`load generator: ${m.error}`));
        };
        const onExit = (code: number | null) => reject(new Error(`load generator exited (${code})`));
        lg.once('message', onMsg);
        lg.once('exit', onExit);
        lg.send({ job });
      });

    const pgPid = () => postmasterPid(s.pg.dataDir);
    let temporalPid: number | null = null;
    const meter = new Meter(s, {
      api: () => s.api.pid,
      worker: () => s.worker.pid,
      temporal: () => (temporalPid ??= findPid(['start-dev', `--port ${s.temporal.port}`])),
      postgres: pgPid,
      loadgen: () => lg.pid ?? null,
      floor: () => floor?.pid ?? null,
      'stripe-mock': () => findPid(['stripe-mock', `127.0.0.1:${s.stripeMock.port}`]),
    }, { bench: process.pid });

    const apiUrl = `${s.apiUrl}/webhooks/stripe`;
    let created = 1_800_000_000;
    let seed = 1;
    const job = (j: Omit<LoadJob, 'secret' | 'createdBase' | 'seed'>): LoadJob => ({ ...j, secret: s.webhookSecret, createdBase: created, seed: seed++ });
    const after = (r: LoadResult) => {
      created = r.lastCreated + 1;
      return r;
    };
    const undrained = async () =>
      (await s.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_events WHERE status IN ('received', 'dispatched')`)[0]!.n;
    const drain = async (timeoutMs: number): Promise<number | null> => {
      const t0 = Date.now();
      while (Date.now() - t0 < timeoutMs) {
        if ((await undrained()) === 0) return Date.now() - t0;
        await sleep(100);
      }
      log(`  not drained after ${timeoutMs} ms (${await undrained()} events still received/dispatched)`);
      return null;
    };
    const POOL = 'pool';

    // Warm-up: one event per pool customer creates the steady-state workflows (and JIT-warms everything).
    log(`warm-up: creating ${opts.customers} customer workflows`);
    const warm = after(
      await runJob(job({ url: apiUrl, mode: 'closed', concurrency: 32, durationMs: 600_000, maxRequests: opts.customers, tag: 'warm', customerTag: POOL, customers: opts.customers, roundRobin: true, duplicateRate: 0 })),
    );
    await drain(300_000);
    log(`  warm-up: ${warm.ok} ok in ${warm.elapsedMs} ms`);

    // 1. Ack path, closed loop at each concurrency; then the floor under the same load.
    const ack: AckRow[] = [];
    const floorRows: AckRow[] = [];
    for (const c of opts.concurrency) {
      log(`ack path: concurrency ${c} for ${opts.ackSeconds} s`);
      const m0 = await meter.start();
      const r = after(
        await runJob(job({ url: apiUrl, mode: 'closed', concurrency: c, durationMs: opts.ackSeconds * 1000, tag: `a${c}`, customerTag: POOL, customers: opts.customers, duplicateRate: opts.duplicateRate })),
      );
      const res = await meter.end(m0);
      const drainMs = await drain(Math.max(120_000, opts.ackSeconds * 8000));
      const appliedPerSec = drainMs === null ? null : Math.round((r.freshOk / ((r.elapsedMs + drainMs) / 1000)) * 10) / 10;
      ack.push({ concurrency: c, result: r, resources: res, drainMs, appliedPerSec, bottleneck: bottleneck(res, r.okPerSecond) });
      log(`  ${r.okPerSecond}/s, p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} ms, drained in ${drainMs} ms; ${ack.at(-1)!.bottleneck}`);
    }
    // The hand-over alone: signal-with-start from the load generator straight to the same Temporal
    // server (no API, no worker, no Postgres), the ceiling any design that signals per event has here.
    const ceilingRows: AckRow[] = [];
    if (opts.ceiling) {
      for (const c of opts.concurrency) {
        log(`temporal alone (signal-with-start, no worker): concurrency ${c} for ${opts.ackSeconds} s`);
        const m0 = await meter.start();
        const r = after(
          await runJob(job({ url: apiUrl, mode: 'closed', concurrency: c, durationMs: opts.ackSeconds * 1000, tag: `t${c}`, customerTag: POOL, customers: opts.customers, duplicateRate: opts.duplicateRate, temporal: { address: s.temporal.address, taskQueue: 'bench-ceiling-no-worker' } })),
        );
        const res = await meter.end(m0);
        ceilingRows.push({ concurrency: c, result: r, resources: res, drainMs: null, appliedPerSec: null, bottleneck: bottleneck(res, r.okPerSecond) });
        log(`  ${r.okPerSecond}/s, p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} ms; ${ceilingRows.at(-1)!.bottleneck}`);
      }
    }
    if (floor) {
      for (const c of opts.concurrency) {
        log(`floor: concurrency ${c} for ${opts.ackSeconds} s`);
        const m0 = await meter.start();
        const r = after(
          await runJob(job({ url: floorUrl, mode: 'closed', concurrency: c, durationMs: opts.ackSeconds * 1000, tag: `f${c}`, customerTag: POOL, customers: opts.customers, duplicateRate: opts.duplicateRate })),
        );
        const res = await meter.end(m0);
        floorRows.push({ concurrency: c, result: r, resources: res, drainMs: null, appliedPerSec: null, bottleneck: bottleneck(res, r.okPerSecond) });
        log(`  ${r.okPerSecond}/s, p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} ms; ${floorRows.at(-1)!.bottleneck}`);
      }
    }

    // 2. End to end at fixed offered rates (open loop): POST → applied_events.applied_at; plus 40 % of
    // the Temporal-alone ceiling measured above (the target: p99 < 1 s there).
    const ceilingPerSec = ceilingRows.length ? Math.max(...ceilingRows.map((c) => c.result.okPerSecond)) : null;
    const targetRate = ceilingPerSec ? Math.round(ceilingPerSec * 0.4) : null;
    const rates = [...new Set([...opts.rates, ...(targetRate ? [targetRate] : [])])].sort((a, b) => a - b);
    const e2e: E2eRow[] = [];
    for (const rate of rates) {
      log(`end to end: ${rate}/s offered for ${opts.e2eSeconds} s`);
      const m0 = await meter.start();
      const r = after(
        await runJob(job({ url: apiUrl, mode: 'open', ratePerSecond: rate, concurrency: 1024, durationMs: opts.e2eSeconds * 1000, tag: `r${rate}`, customerTag: POOL, customers: opts.customers, duplicateRate: opts.duplicateRate, recordSends: true })),
      );
      const res = await meter.end(m0);
      const drainMs = await drain(Math.max(120_000, opts.e2eSeconds * 4000));
      const lag = await endToEndLag(s, r.sends ?? []);
      e2e.push({ offeredPerSec: rate, result: r, resources: res, ...lag, drainMs, bottleneck: bottleneck(res, r.okPerSecond), ...(rate === targetRate ? { target: '40 % of Temporal alone' } : {}) });
      log(`  achieved ${r.okPerSecond}/s; e2e p50 ${lag.lagMs.p50} p99 ${lag.lagMs.p99} ms (${lag.notApplied} not applied); ${e2e.at(-1)!.bottleneck}`);
    }

    // 3. Renewal storm and overload (scripts/bench/storm.ts).
    const phaseCtx = { s, apiUrl, runJob, job, after, drain, log, workerMetrics: () => meter.workerMetrics() };
    const storm: StormRow | null = opts.stormCustomers > 0 ? await runRenewalStorm(phaseCtx, opts.stormCustomers, ceilingPerSec) : null;
    let overload: OverloadRow | null = null;
    if (opts.overloadSeconds > 0) {
      // Sustainable: the highest offered e2e rate applied in full with p99 < 1 s; else the applied rate under saturation.
      const kept = e2e.filter((e) => e.notApplied === 0 && e.lagMs.p99 < 1000).map((e) => e.offeredPerSec);
      const saturated = ack.map((a) => a.appliedPerSec ?? 0);
      const sustainable = kept.length ? { perSec: Math.max(...kept), from: 'highest e2e rate with p99 < 1 s' } : { perSec: Math.max(1, ...saturated), from: 'applied rate after a closed-loop burst' };
      overload = await runOverload(phaseCtx, { sustainablePerSec: sustainable.perSec, sustainableFrom: sustainable.from, seconds: opts.overloadSeconds, poolTag: POOL, customers: opts.customers });
    }

    // 4. Scale: many new customers (one workflow each), worker memory, a reconciliation over all of them.
    let scale: ScaleRow | null = null;
    if (opts.scalePhase) {
      log(`scale: ${opts.scale} new customers`);
      const before = heaviestProcess(s.worker.pid ?? 0);
      const m0 = await meter.start();
      const r = after(
        await runJob(job({ url: apiUrl, mode: 'closed', concurrency: 64, durationMs: 3_600_000, maxRequests: opts.scale, tag: 'scale', customerTag: 'scale', customers: opts.scale, roundRobin: true, duplicateRate: 0 })),
      );
      const drainMs = await drain(Math.max(300_000, opts.scale * 100));
      const res = await meter.end(m0);
      await sleep(1000);
      const live = await s.client.workflow.count('WorkflowType = "customerWorkflow" AND ExecutionStatus = "Running"');
      const mem = heaviestProcess(s.worker.pid ?? 0);
      const mb = (kb: number | undefined) => (kb === undefined ? null : Math.round(kb / 102.4) / 10);
      scale = {
        newCustomers: r.freshOk,
        createdPerSec: drainMs === null ? 0 : Math.round((r.freshOk / ((r.elapsedMs + drainMs) / 1000)) * 10) / 10,
        drainMs,
        liveCustomerWorkflows: live.count,
        workerRssMb: mb(mem?.rssKb),
        workerPeakRssMb: mb(mem?.hwmKb),
        workerRssBeforeMb: mb(before?.rssKb),
        workerTuning: { ...workerTuning(), ...Object.fromEntries(Object.entries(opts.workerOptions ?? {}).map(([k, v]) => [k, `${JSON.stringify(v)} (override)`])) },
        resources: res,
      };
      log(`  ${live.count} live customer workflows; worker RSS ${scale.workerRssMb} MB (peak ${scale.workerPeakRssMb} MB)`);
    }

    let reconciliation: ReconciliationRow;
    if (!opts.reconciliation) reconciliation = { available: false, note: 'skipped (--no-reconciliation)' };
    else if (!reconciliationAvailable()) reconciliation = { available: false, note: 'n/a (reconciliation not available)' };
    else reconciliation = await runReconciliation(s, fake!, meter, log);

    const report = {
      generatedAt: new Date().toISOString(),
      command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
      machine,
      versions,
      options: { ...opts, out: path.relative(ROOT, opts.out) },
      ack: ack.map(slim),
      floor: floorRows.map(slim),
      ceiling: ceilingRows.map(slim),
      ratios: ack.map((a) => {
        const f = floorRows.find((x) => x.concurrency === a.concurrency);
        return { concurrency: a.concurrency, throughput: f ? round2(a.result.okPerSecond / f.result.okPerSecond) : null, p99: f ? round2(a.result.latencyMs.p99 / f.result.latencyMs.p99) : null };
      }),
      e2e: e2e.map((e) => ({ ...e, result: { ...e.result, sends: undefined } })),
      e2eTarget: { ceilingPerSec, ratePerSec: targetRate },
      storm,
      overload,
      scale,
      reconciliation,
    };
    mkdirSync(path.dirname(opts.out), { recursive: true });
    writeFileSync(opts.out, `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(renderMarkdown(report));
    log(`wrote ${path.relative(ROOT, opts.out)}`);
  } finally {
    await stopAll(opts.profile.length > 0 ? () => printProfiles(dir, opts.profile) : undefined);
  }
}

/** Summarizes the largest .cpuprofile of each profiled service: self time by function and by package. */

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`[bench] failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
