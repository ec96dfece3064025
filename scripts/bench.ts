/**
 * `npm run bench [-- --quick]`: starts the real stack in a temp dir (durable PostgreSQL, Temporal dev
 * server on a db file, stripe-mock behind a paging fake, API and worker as child processes), drives
 * signed webhooks from a separate load-generator process, and prints a markdown report (also written to
 * bench-results/latest.json): ack path, end-to-end lag, the floor (a bare verify+insert endpoint under
 * the same load), scale (live workflows, worker memory, reconciliation time) and what limited each number.
 *
 * Flags: --quick · --ack-seconds N · --e2e-seconds N · --concurrency 8,32,64 · --rates 100,300
 *        --customers N (steady-state pool) · --scale N (new customers) · --duplicates 0.1
 *        --no-floor · --no-ceiling (Temporal alone) · --no-scale · --no-reconciliation · --env KEY=VALUE (API+worker, repeatable)
 *        --storm-customers N (renewal storm, default 2000; 0 skips it) · --overload-seconds N (default 60; 0 skips it)
 *        --temporal-journal wal|wal-normal|default (dev server SQLite: wal and default fsync every commit;
 *        wal-normal only at checkpoints, a sensitivity run)
 *        --profile api,worker (V8 CPU profiles; the top functions are printed at the end)
 *        --eager-activities (dev server: system.enableActivityEagerExecution=true)
 *        --worker-options '{"maxCachedWorkflows":2000}' (experiment, via scripts/bench-worker-variant.ts:
 *        worker/main.ts stays unchanged)
 *        --native-client (experiment: the API's Temporal client on a NativeConnection, scripts/bench-api-variant.ts)
 *        --out FILE · --keep (keep the temp dir) · --render [FILE] (re-print the markdown of a JSON result)
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import v8 from 'node:v8';
import path from 'node:path';
import { createSql } from '../lib/db';
import { benchCustomerId, summarize, type LatencySummary, type LoadJob, type LoadResult } from './bench-load';
import { createFloorSchema } from './bench-floor';
import { CpuSampler, findPid, heaviestProcess, postmasterPid, type CpuSnapshot, type CpuUsage } from './bench-proc';
import { sleep, startBillingStack, type BillingStack, type ServiceProcess, type TemporalJournal } from './bench-stack';
import { renderOverload, renderStorm, runOverload, runRenewalStorm, type OverloadRow, type StormRow } from './bench-storm';
import { startPagingStripeFake, type FakeSubscription, type PagingStripeFake } from './bench-stripe-fake';
import { ROOT, TOOLS_BIN, freePort, tempDir, waitForPort } from './stack';

// ---------------------------------------------------------------- options

interface BenchOptions {
  quick: boolean;
  ackSeconds: number;
  e2eSeconds: number;
  concurrency: number[];
  rates: number[];
  customers: number;
  scale: number;
  duplicateRate: number;
  floor: boolean;
  /** Measure signal-with-start alone against the same Temporal server. */
  ceiling: boolean;
  scalePhase: boolean;
  reconciliation: boolean;
  /** Customers of the renewal storm (0: skip). */
  stormCustomers: number;
  /** Seconds of offered overload (0: skip). */
  overloadSeconds: number;
  env: Record<string, string>;
  temporalJournal: TemporalJournal;
  temporalEagerActivities: boolean;
  /** Experiments through scripts/bench-worker-variant.ts (worker/main.ts itself is unchanged). */
  workerOptions: Record<string, unknown> | null;
  nativeClient: boolean;
  /** Write a V8 CPU profile of these services and print where their time went. */
  profile: string[];
  out: string;
  keep: boolean;
}

function parseArgs(argv: string[]): BenchOptions {
  const quick = argv.includes('--quick');
  const opts: BenchOptions = {
    quick,
    ackSeconds: quick ? 5 : 20,
    e2eSeconds: quick ? 10 : 60,
    concurrency: [8, 32, 64],
    rates: [50, 100, 300],
    customers: quick ? 300 : 2000,
    scale: quick ? 500 : 10_000,
    duplicateRate: 0.1,
    floor: true,
    ceiling: true,
    scalePhase: true,
    reconciliation: true,
    stormCustomers: 2000,
    overloadSeconds: 60,
    env: {},
    temporalJournal: 'wal',
    temporalEagerActivities: false,
    workerOptions: null,
    nativeClient: false,
    profile: [],
    out: path.join(ROOT, 'bench-results', 'latest.json'),
    keep: false,
  };
  const list = (v: string) => v.split(',').map(Number).filter((n) => Number.isFinite(n) && n > 0);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${a} needs a value`);
      return next;
    };
    switch (a) {
      case '--quick':
        break;
      case '--ack-seconds':
        opts.ackSeconds = Number(v());
        break;
      case '--e2e-seconds':
      case '--duration':
        opts.e2eSeconds = Number(v());
        break;
      case '--concurrency':
        opts.concurrency = list(v());
        break;
      case '--rates':
        opts.rates = list(v());
        break;
      case '--customers':
        opts.customers = Number(v());
        break;
      case '--scale':
        opts.scale = Number(v());
        break;
      case '--duplicates':
        opts.duplicateRate = Number(v());
        break;
      case '--no-floor':
        opts.floor = false;
        break;
      case '--no-ceiling':
        opts.ceiling = false;
        break;
      case '--no-scale':
        opts.scalePhase = false;
        break;
      case '--no-reconciliation':
        opts.reconciliation = false;
        break;
      case '--storm-customers':
        opts.stormCustomers = Number(v());
        break;
      case '--overload-seconds':
        opts.overloadSeconds = Number(v());
        break;
      case '--env': {
        const [k, ...rest] = v().split('=');
        if (!k || rest.length === 0) throw new Error('--env takes KEY=VALUE');
        opts.env[k] = rest.join('=');
        break;
      }
      case '--temporal-journal': {
        const j = v();
        if (j !== 'wal' && j !== 'wal-normal' && j !== 'default') throw new Error('--temporal-journal is wal, wal-normal or default');
        opts.temporalJournal = j;
        break;
      }
      case '--eager-activities':
        opts.temporalEagerActivities = true;
        break;
      case '--worker-options':
        opts.workerOptions = JSON.parse(v()) as Record<string, unknown>;
        break;
      case '--native-client':
        opts.nativeClient = true;
        break;
      case '--profile':
        opts.profile = v().split(',');
        break;
      case '--out':
        opts.out = path.resolve(v());
        break;
      case '--keep':
        opts.keep = true;
        break;
      default:
        throw new Error(`unknown flag ${a} (see the header of scripts/bench.ts)`);
    }
  }
  return opts;
}

// ---------------------------------------------------------------- measurements

interface PgCounters {
  commits: number;
  rollbacks: number;
  walSync: number;
  walRecords: number;
}

/** Per-phase resource use: CPU by process, Postgres commits and WAL flushes, worker RPCs. */
interface PhaseResources {
  cpu: CpuUsage;
  pgCommitsPerSec: number;
  walSyncsPerSec: number;
  /** Temporal RPCs the worker made (SDK core metrics), per second, by operation. */
  workerRpcPerSec: Record<string, number> | null;
  /** Mean schedule-to-start of workflow / activity tasks (ms): high = worker short of CPU or slots. */
  wfTaskScheduleToStartMs: number | null;
  activityScheduleToStartMs: number | null;
}

type Metrics = Map<string, number>;

function parsePrometheus(text: string): Metrics {
  const m: Metrics = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    const key = line.slice(0, sp);
    const value = Number(line.slice(sp + 1));
    if (Number.isFinite(value)) m.set(key, value);
  }
  return m;
}

function metricDelta(a: Metrics, b: Metrics, name: RegExp): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of b) if (name.test(k)) out.set(k, v - (a.get(k) ?? 0));
  return out;
}

function histogramMean(a: Metrics, b: Metrics, base: string): number | null {
  const sum = [...metricDelta(a, b, new RegExp(`^${base}_sum`)).values()].reduce((x, y) => x + y, 0);
  const count = [...metricDelta(a, b, new RegExp(`^${base}_count`)).values()].reduce((x, y) => x + y, 0);
  // Core reports these latencies in milliseconds (or seconds with the `_seconds` suffix).
  if (count === 0) return null;
  const mean = sum / count;
  return Math.round((base.endsWith('_seconds') ? mean * 1000 : mean) * 10) / 10;
}

class Meter {
  private readonly sampler: CpuSampler;

  constructor(private readonly stack: BillingStack, roots: Record<string, () => number | null>, self: Record<string, number>) {
    this.sampler = new CpuSampler(roots, self);
  }

  private async pg(): Promise<PgCounters> {
    const [d] = await this.stack.sql<{ commits: number; rollbacks: number }[]>`
      SELECT sum(xact_commit)::float8 AS commits, sum(xact_rollback)::float8 AS rollbacks FROM pg_stat_database`;
    const [w] = await this.stack.sql<{ wal_sync: number; wal_records: number }[]>`SELECT wal_sync::float8, wal_records::float8 FROM pg_stat_wal`;
    return { commits: d!.commits, rollbacks: d!.rollbacks, walSync: w!.wal_sync, walRecords: w!.wal_records };
  }

  /** The worker's SDK metrics now (null without WORKER_METRICS_ADDRESS). */
  workerMetrics(): Promise<Metrics | null> {
    return this.worker();
  }

  private async worker(): Promise<Metrics | null> {
    if (!this.stack.workerMetricsUrl) return null;
    return fetch(this.stack.workerMetricsUrl).then(
      async (r) => parsePrometheus(await r.text()),
      () => null,
    );
  }

  async start(): Promise<{ cpu: CpuSnapshot; pg: PgCounters; wm: Metrics | null }> {
    const [pg, wm] = await Promise.all([this.pg(), this.worker()]);
    return { cpu: this.sampler.snapshot(), pg, wm };
  }

  async end(s: { cpu: CpuSnapshot; pg: PgCounters; wm: Metrics | null }): Promise<PhaseResources> {
    const cpuEnd = this.sampler.snapshot();
    // Backends publish their statistics at most once a second.
    await sleep(1100);
    const [pg, wm] = await Promise.all([this.pg(), this.worker()]);
    const cpu = CpuSampler.usage(s.cpu, cpuEnd);
    const per = (x: number) => Math.round((x / cpu.seconds) * 10) / 10;
    let rpc: Record<string, number> | null = null;
    if (s.wm && wm) {
      rpc = {};
      // Unary RPCs (temporal_request) and long polls (temporal_long_request), by operation.
      for (const [k, v] of metricDelta(s.wm, wm, /^temporal_(long_)?request(_total)?\{/)) {
        const op = /operation="([^"]+)"/.exec(k)?.[1] ?? 'other';
        rpc[op] = (rpc[op] ?? 0) + per(v);
      }
    }
    const base = (name: string) => (wm ? [...wm.keys()].find((k) => k.startsWith(name))?.replace(/(_sum|_count|_bucket).*$/, '') ?? name : name);
    return {
      cpu,
      pgCommitsPerSec: per(pg.commits - s.pg.commits),
      walSyncsPerSec: per(pg.walSync - s.pg.walSync),
      workerRpcPerSec: rpc,
      wfTaskScheduleToStartMs: s.wm && wm ? histogramMean(s.wm, wm, base('temporal_workflow_task_schedule_to_start_latency')) : null,
      activityScheduleToStartMs: s.wm && wm ? histogramMean(s.wm, wm, base('temporal_activity_schedule_to_start_latency')) : null,
    };
  }
}

/** One sentence on what limited a phase, from its measurements. */
function bottleneck(r: PhaseResources, requestsPerSec: number): string {
  const procs = Object.entries(r.cpu.processes)
    .filter(([name]) => name !== 'bench')
    .sort((a, b) => b[1] - a[1]);
  const fmt = (list: [string, number][]) => list.map(([n, p]) => `${n} ${Math.round(p)}%`).join(', ');
  const perReq = (x: number) => (requestsPerSec > 0 ? Math.round((x / requestsPerSec) * 10) / 10 : 0);
  const rpcTotal = r.workerRpcPerSec ? Object.values(r.workerRpcPerSec).reduce((a, b) => a + b, 0) : 0;
  const wft = r.workerRpcPerSec?.RespondWorkflowTaskCompleted ?? 0;
  const act = r.workerRpcPerSec?.RespondActivityTaskCompleted ?? 0;
  const io = `${r.pgCommitsPerSec} PG commits/s (${perReq(r.pgCommitsPerSec)}/req), ${r.walSyncsPerSec} WAL fsyncs/s${
    r.workerRpcPerSec && rpcTotal >= 1
      ? `, worker ${Math.round(rpcTotal)} Temporal RPCs/s incl. polls (${Math.round(wft)} workflow tasks/s, ${Math.round(act)} activity tasks/s; Postgres writes are local activities)`
      : ''
  }`;
  const oneCore = procs.find(([name, p]) => p >= 90 && (name === 'api' || name === 'floor' || name === 'loadgen' || name === 'temporal'));
  if (r.cpu.machineBusyPct >= 85) {
    return `CPU: machine ${r.cpu.machineBusyPct}% busy (${fmt(procs.slice(0, 4))}, other ${Math.round(r.cpu.other)}% of a core); ${io}`;
  }
  if (oneCore?.[0] === 'temporal') {
    return `one core: the Temporal dev server at ${Math.round(oneCore[1])}% of a core (its SQLite persistence has a single writer) while the machine is ${r.cpu.machineBusyPct}% busy; ${io}`;
  }
  if (oneCore) return `one core: ${oneCore[0]} event loop at ${Math.round(oneCore[1])}%; ${io}`;
  return `not CPU-bound (machine ${r.cpu.machineBusyPct}% busy: ${fmt(procs.slice(0, 3))}): waiting on round trips — ${io}`;
}

// ---------------------------------------------------------------- the run

interface AckRow {
  concurrency: number;
  result: LoadResult;
  resources: PhaseResources;
  drainMs: number | null;
  appliedPerSec: number | null;
  bottleneck: string;
}

interface E2eRow {
  offeredPerSec: number;
  /** Set on the rate the issue's target names (40 % of the Temporal-alone ceiling). */
  target?: string;
  result: LoadResult;
  resources: PhaseResources;
  lagMs: LatencySummary;
  serverLagMs: LatencySummary;
  notApplied: number;
  drainMs: number | null;
  bottleneck: string;
}

interface ScaleRow {
  newCustomers: number;
  createdPerSec: number;
  drainMs: number | null;
  liveCustomerWorkflows: number;
  workerRssMb: number | null;
  workerPeakRssMb: number | null;
  workerRssBeforeMb: number | null;
  workerTuning: Record<string, string>;
  resources: PhaseResources;
}

interface ReconciliationRow {
  available: boolean;
  note?: string;
  subscriptions?: number;
  seconds?: number;
  scanned?: number;
  drifted?: number;
  repaired?: number;
  injectedDrift?: number;
  stripePages?: number;
  rateLimitPerSecond?: number;
  resources?: PhaseResources;
}

async function main(): Promise<void> {
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
      ...(opts.nativeClient ? { apiEntry: 'scripts/bench-api-variant.ts', apiEnv: { BENCH_NATIVE_CLIENT: '1' } } : {}),
      ...(opts.workerOptions
        ? { workerEntry: 'scripts/bench-worker-variant.ts', workerEnv: { BENCH_WORKER_OPTIONS: JSON.stringify(opts.workerOptions) } }
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
      floor = s.spawnService('floor', 'scripts/bench-floor.ts', { PORT: String(port), DATABASE_URL: s.pg.urlFor('floor') });
      floor.start();
      await waitForPort(port, '127.0.0.1', 60_000, 'floor server');
      floorUrl = `http://127.0.0.1:${port}/webhooks/stripe`;
    }

    loadgen = fork(path.join(__dirname, 'bench-load.ts'), [], { execArgv: ['--import', 'tsx'], cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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

    // 3. Renewal storm and overload (scripts/bench-storm.ts).
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
function printProfiles(dir: string, names: string[]): void {
  for (const name of names) {
    const pdir = path.join(dir, 'profiles', name);
    if (!existsSync(pdir)) continue;
    const files = readdirSync(pdir).map((f) => path.join(pdir, f)).sort((a, b) => statSync(b).size - statSync(a).size);
    if (!files[0]) continue;
    const prof = JSON.parse(readFileSync(files[0], 'utf8')) as {
      nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
      samples: number[];
      timeDeltas: number[];
    };
    const frame = new Map(prof.nodes.map((n) => [n.id, n.callFrame]));
    const byFn = new Map<string, number>();
    const byPkg = new Map<string, number>();
    let total = 0;
    prof.samples.forEach((id, i) => {
      const f = frame.get(id)!;
      const dt = prof.timeDeltas[i] ?? 0;
      total += dt;
      const where = f.url.replace(/^file:\/\//, '').replace(ROOT + '/', '');
      const fn = `${f.functionName || '(anonymous)'} ${where}:${f.lineNumber + 1}`;
      byFn.set(fn, (byFn.get(fn) ?? 0) + dt);
      const pkg = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(where)?.[1] ?? (where.startsWith('node:') ? 'node internals' : where === '' ? f.functionName || '(native)' : 'project code');
      byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + dt);
    });
    const top = (m: Map<string, number>, n: number) =>
      [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `  ${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`).join('\n');
    process.stdout.write(`\n### CPU profile: ${name} (${(total / 1e6).toFixed(1)} s sampled, ${path.basename(files[0])})\nby package:\n${top(byPkg, 12)}\nby function (self time):\n${top(byFn, 25)}\n`);
  }
}

const round2 = (x: number) => Math.round(x * 100) / 100;

function slim(a: AckRow) {
  return { ...a, result: { ...a.result, sends: undefined } };
}

async function endToEndLag(s: BillingStack, sends: [string, number][]): Promise<{ lagMs: LatencySummary; serverLagMs: LatencySummary; notApplied: number }> {
  const lags: number[] = [];
  const server: number[] = [];
  let notApplied = 0;
  for (let i = 0; i < sends.length; i += 5000) {
    const chunk = sends.slice(i, i + 5000);
    const sentAt = new Map(chunk);
    const rows = await s.sql<{ event_id: string; applied: number; server_ms: number | null }[]>`
      SELECT a.event_id, extract(epoch FROM a.applied_at)::float8 * 1000 AS applied,
             extract(epoch FROM (w.applied_at - w.received_at))::float8 * 1000 AS server_ms
      FROM applied_events a LEFT JOIN webhook_events w USING (event_id)
      WHERE a.event_id IN ${s.sql(chunk.map((c) => c[0]))}`;
    notApplied += chunk.length - rows.length;
    for (const r of rows) {
      lags.push(Math.max(0, r.applied - sentAt.get(r.event_id)!));
      if (r.server_ms !== null) server.push(r.server_ms);
    }
  }
  return { lagMs: summarize(lags), serverLagMs: summarize(server), notApplied };
}

function reconciliationAvailable(): boolean {
  const index = path.join(ROOT, 'workflows', 'index.ts');
  return existsSync(path.join(ROOT, 'workflows', 'reconciliation.ts')) && existsSync(index) && /reconciliationWorkflow/.test(readFileSync(index, 'utf8'));
}

/** Serves every local subscription from the paging fake (1% drifted) and times one full reconciliation. */
async function runReconciliation(s: BillingStack, fake: PagingStripeFake, meter: Meter, log: (s: string) => void): Promise<ReconciliationRow> {
  const rows = await s.sql<
    { id: string; customer_id: string; status: string; price_id: string | null; current_period_start: Date | null; current_period_end: Date | null; cancel_at_period_end: boolean }[]
  >`SELECT id, customer_id, status, price_id, current_period_start, current_period_end, cancel_at_period_end FROM subscriptions ORDER BY id`;
  const unix = (d: Date | null) => (d ? Math.floor(d.getTime() / 1000) : null);
  let injected = 0;
  const list: FakeSubscription[] = rows.map((r, i) => {
    const drift = i % 100 === 7;
    if (drift) injected++;
    return {
      id: r.id,
      customer: r.customer_id,
      status: drift ? (r.status === 'canceled' ? 'active' : 'canceled') : r.status,
      priceId: r.price_id,
      currentPeriodStart: unix(r.current_period_start),
      currentPeriodEnd: unix(r.current_period_end),
      cancelAtPeriodEnd: r.cancel_at_period_end,
    };
  });
  fake.setSubscriptions(list);
  const before = fake.served();
  log(`reconciliation over ${list.length} subscriptions (${injected} drifted in the fake)`);
  const m0 = await meter.start();
  const t0 = Date.now();
  try {
    const result = (await s.client.workflow.execute('reconciliationWorkflow', {
      taskQueue: s.taskQueue,
      workflowId: `reconciliation:bench-${Date.now()}`,
      args: [{ trigger: 'manual', repairWaitSeconds: 300 }],
      workflowExecutionTimeout: '30 minutes',
    })) as { scanned: number; drifted: number; repaired: number };
    const seconds = Math.round((Date.now() - t0) / 100) / 10;
    const resources = await meter.end(m0);
    const after = fake.served();
    log(`  ${seconds} s: scanned ${result.scanned}, drifted ${result.drifted}, repaired ${result.repaired}`);
    return {
      available: true,
      subscriptions: list.length,
      seconds,
      scanned: result.scanned,
      drifted: result.drifted,
      repaired: result.repaired,
      injectedDrift: injected,
      stripePages: after.pages - before.pages,
      rateLimitPerSecond: Number(s.env.STRIPE_RATE_LIMIT_PER_SECOND ?? 20),
      resources,
    };
  } catch (err) {
    const message = err instanceof Error ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}` : String(err);
    log(`  reconciliation failed: ${message}`);
    return { available: false, note: `failed: ${message}` };
  }
}

/** The Worker.create options set in worker/main.ts (read from its source), SDK defaults where unset. */
function workerTuning(): Record<string, string> {
  const src = readFileSync(path.join(ROOT, 'worker', 'main.ts'), 'utf8');
  const out: Record<string, string> = {};
  for (const key of ['maxCachedWorkflows', 'maxConcurrentWorkflowTaskExecutions', 'maxConcurrentActivityTaskExecutions', 'maxConcurrentWorkflowTaskPolls', 'maxConcurrentActivityTaskPolls', 'workflowThreadPoolSize']) {
    const m = new RegExp(`^\\s*${key}:\\s*([^,\\n]+)`, 'm').exec(src);
    if (m) out[key] = m[1]!.trim();
  }
  if (!out.maxCachedWorkflows) {
    // The SDK's default with reuseV8Context: 600 workflows per GiB of heap above 200 MiB (same node, same machine).
    const heapMiB = v8.getHeapStatistics().heap_size_limit / 2 ** 20;
    out.maxCachedWorkflows = `SDK default ${Math.max(Math.floor((Math.max(heapMiB - 200, 0) * 600) / 1024), 10)} (heap limit ${Math.round(heapMiB)} MiB)`;
  }
  return out;
}

function machineInfo() {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

async function versionInfo(s: BillingStack) {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const temporal = spawnSync(path.join(TOOLS_BIN, 'temporal'), ['--version'], { encoding: 'utf8' }).stdout.trim();
  const [pg] = await s.sql<{ v: string; fsync: string; sc: string }[]>`
    SELECT current_setting('server_version') AS v, current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS sc`;
  return {
    node: process.version,
    temporalCli: temporal,
    postgres: pg!.v,
    postgresDurability: `fsync=${pg!.fsync}, synchronous_commit=${pg!.sc}`,
    temporalSdk: pkg.dependencies['@temporalio/worker'],
    stripeNode: pkg.dependencies.stripe,
    hono: pkg.dependencies.hono,
    postgresJs: pkg.dependencies.postgres,
  };
}

// ---------------------------------------------------------------- report

type Report = {
  generatedAt: string;
  command: string;
  machine: ReturnType<typeof machineInfo>;
  versions: Awaited<ReturnType<typeof versionInfo>>;
  options: BenchOptions | (Omit<BenchOptions, 'out'> & { out: string });
  ack: ReturnType<typeof slim>[];
  floor: ReturnType<typeof slim>[];
  /** Older result files have no ceiling rows. */
  ceiling?: ReturnType<typeof slim>[];
  ratios: { concurrency: number; throughput: number | null; p99: number | null }[];
  e2e: (Omit<E2eRow, 'result'> & { result: Omit<LoadResult, 'sends'> & { sends?: undefined } })[];
  /** Older result files have none of these. */
  e2eTarget?: { ceilingPerSec: number | null; ratePerSec: number | null };
  storm?: StormRow | null;
  overload?: OverloadRow | null;
  scale: ScaleRow | null;
  reconciliation: ReconciliationRow;
};

const n0 = (x: number) => Math.round(x).toLocaleString('en-US');
const ms = (x: number | null | undefined) => (x === null || x === undefined ? '–' : x >= 100 ? String(Math.round(x)) : String(x));
const failures = (r: { failures: Record<string, number>; skipped: number }) => {
  const f = Object.entries(r.failures).map(([k, v]) => `${v}×${k}`);
  if (r.skipped) f.push(`${r.skipped} not sent (in-flight cap)`);
  return f.length ? f.join(' ') : '0';
};

const JOURNAL_NOTE: Record<TemporalJournal, string> = {
  wal: 'WAL, synchronous=FULL (fsync per commit)',
  'wal-normal': 'WAL, synchronous=NORMAL (fsync at checkpoints only: survives a killed process, not a power loss)',
  default: 'rollback journal (CLI default, fsync per commit)',
};

function renderMarkdown(r: Report): string {
  const o = r.options;
  const lines: string[] = [];
  lines.push(`## Benchmark: \`${r.command}\``, '');
  lines.push(
    `Machine: ${r.machine.cores} × ${r.machine.cpuModel}, ${r.machine.memoryGiB} GiB RAM, ${r.machine.kernel} (load average at start ${r.machine.loadAverageAtStart.join(' / ')}).`,
    `Versions: Node ${r.versions.node} · ${r.versions.temporalCli} · PostgreSQL ${r.versions.postgres} (${r.versions.postgresDurability}) · @temporalio/* ${r.versions.temporalSdk} · stripe ${r.versions.stripeNode} · hono ${r.versions.hono} · postgres.js ${r.versions.postgresJs}.`,
    `Load: signed \`customer.subscription.updated\` webhooks from a separate process, ${Math.round(o.duplicateRate * 100)}% duplicates (re-signed redeliveries), ${n0(o.customers)} steady-state customers with live workflows; ack phases ${o.ackSeconds} s, end-to-end phases ${o.e2eSeconds} s. Temporal dev server SQLite: ${JOURNAL_NOTE[o.temporalJournal]}. Run at ${r.generatedAt}.`,
    '',
  );

  lines.push('### Ack path (POST → 2xx: verified and stored in Postgres; the dispatcher hands it to Temporal afterwards), closed loop', '');
  lines.push('| concurrency | ours webhooks/s | p50 ms | p95 ms | p99 ms | non-2xx | floor webhooks/s | floor p50 / p99 ms | ours / floor | Temporal alone signals/s | Temporal alone p50 / p99 ms | ours / Temporal alone | backlog applied in | applied/s |');
  lines.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const a of r.ack) {
    const f = r.floor.find((x) => x.concurrency === a.concurrency);
    const t = r.ceiling?.find((x) => x.concurrency === a.concurrency);
    const ratio = r.ratios.find((x) => x.concurrency === a.concurrency);
    lines.push(
      `| ${a.concurrency} | ${n0(a.result.okPerSecond)} | ${ms(a.result.latencyMs.p50)} | ${ms(a.result.latencyMs.p95)} | ${ms(a.result.latencyMs.p99)} | ${failures(a.result)} | ${f ? n0(f.result.okPerSecond) : '–'} | ${f ? `${ms(f.result.latencyMs.p50)} / ${ms(f.result.latencyMs.p99)}` : '–'} | ${ratio?.throughput !== null && ratio?.throughput !== undefined ? `${Math.round(ratio.throughput * 100)}%` : '–'} | ${t ? n0(t.result.okPerSecond) : '–'} | ${t ? `${ms(t.result.latencyMs.p50)} / ${ms(t.result.latencyMs.p99)}` : '–'} | ${t ? `${Math.round((a.result.okPerSecond / t.result.okPerSecond) * 100)}%` : '–'} | ${a.drainMs === null ? 'timeout' : `${(a.drainMs / 1000).toFixed(1)} s`} | ${a.appliedPerSec === null ? '–' : n0(a.appliedPerSec)} |`,
    );
  }
  lines.push(
    '',
    '"floor": a bare endpoint that verifies the signature and inserts the row. "Temporal alone": signal-with-start from the load generator straight to the same Temporal dev server (no API, no worker, no Postgres), one signal per event: the ceiling of a design that hands each event to Temporal before answering, and the yardstick for the targets below. "backlog applied in": time after the load stopped until every acknowledged event was applied by the worker; "applied/s": fresh events ÷ (load + backlog time).',
    '',
  );

  lines.push('### End to end (POST → state applied in Postgres), open loop at a fixed offered rate', '');
  lines.push('| offered/s | achieved 2xx/s | non-2xx | ack p50 / p99 ms | e2e p50 ms | e2e p95 ms | e2e p99 ms | e2e max ms | received→applied p99 ms | not applied |');
  lines.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const e of r.e2e) {
    lines.push(
      `| ${e.offeredPerSec} | ${n0(e.result.okPerSecond)} | ${failures(e.result)} | ${ms(e.result.latencyMs.p50)} / ${ms(e.result.latencyMs.p99)} | ${ms(e.lagMs.p50)} | ${ms(e.lagMs.p95)} | ${ms(e.lagMs.p99)} | ${ms(e.lagMs.max)} | ${ms(e.serverLagMs.p99)} | ${e.notApplied} |`,
    );
  }
  lines.push('', 'e2e = `applied_events.applied_at` (start of the applying transaction, Postgres clock) − scheduled send time (same machine clock).', '');

  if (r.storm) lines.push(...renderStorm(r.storm));
  if (r.overload) lines.push(...renderOverload(r.overload));

  lines.push('### Scale', '');
  lines.push('| measure | value |', '|---|---|');
  if (r.scale) {
    const sc = r.scale;
    lines.push(`| live customer workflows | ${n0(sc.liveCustomerWorkflows)} (${n0(sc.newCustomers)} created in this phase at ${n0(sc.createdPerSec)}/s end to end) |`);
    lines.push(`| worker RSS after | ${sc.workerRssMb} MB (peak ${sc.workerPeakRssMb} MB; ${sc.workerRssBeforeMb} MB before the phase) |`);
    lines.push(`| worker tuning | ${Object.entries(sc.workerTuning).map(([k, v]) => `${k} ${v}`).join(', ')} |`);
  } else lines.push('| live customer workflows | skipped (--no-scale) |');
  const rc = r.reconciliation;
  if (rc.available) {
    lines.push(
      `| reconciliation over ${n0(rc.subscriptions!)} subscriptions (paging fake) | ${rc.seconds} s: ${rc.stripePages} list pages at ≤ ${rc.rateLimitPerSecond} Stripe calls/s, scanned ${n0(rc.scanned!)}, drifted ${rc.drifted} (${rc.injectedDrift} injected), repaired ${rc.repaired} |`,
    );
  } else lines.push(`| reconciliation | ${rc.note} |`);
  lines.push('');

  lines.push('### CPU by process during each phase (% of one core; machine has ' + r.machine.cores + ' cores)', '');
  const names = ['api', 'worker', 'temporal', 'postgres', 'loadgen', 'floor', 'stripe-mock'];
  lines.push(`| phase | ${names.join(' | ')} | other (not ours) | machine busy |`);
  lines.push(`|---|${names.map(() => '---:').join('|')}|---:|---:|`);
  const row = (label: string, res: PhaseResources | undefined) => {
    if (!res) return;
    lines.push(`| ${label} | ${names.map((n) => Math.round(res.cpu.processes[n] ?? 0)).join(' | ')} | ${Math.round(res.cpu.other)} | ${res.cpu.machineBusyPct}% |`);
  };
  for (const a of r.ack) row(`ack c=${a.concurrency}`, a.resources);
  for (const f of r.floor) row(`floor c=${f.concurrency}`, f.resources);
  for (const t of r.ceiling ?? []) row(`Temporal alone c=${t.concurrency}`, t.resources);
  for (const e of r.e2e) row(`e2e ${e.offeredPerSec}/s`, e.resources);
  if (r.scale) row('scale (create + drain)', r.scale.resources);
  if (rc.resources) row('reconciliation', rc.resources);
  lines.push('');

  lines.push('### Targets (issue 15, this machine)', '');
  lines.push('| target | measured | met |', '|---|---|---|');
  const a32 = r.ack.find((a) => a.concurrency === 32);
  const f32 = r.floor.find((f) => f.concurrency === 32);
  if (a32 && f32) {
    const share = a32.result.okPerSecond / f32.result.okPerSecond;
    const p99x = a32.result.latencyMs.p99 / f32.result.latencyMs.p99;
    lines.push(
      `| ack at c=32 ≥ 50 % of the floor, p99 ≤ 2 × the floor's | ${n0(a32.result.okPerSecond)}/s = ${Math.round(share * 100)} % of ${n0(f32.result.okPerSecond)}/s; p99 ${ms(a32.result.latencyMs.p99)} ms = ${p99x.toFixed(1)} × ${ms(f32.result.latencyMs.p99)} ms | ${share >= 0.5 && p99x <= 2 ? 'yes' : 'no'} |`,
    );
  }
  const tgt = r.e2e.find((e) => e.target);
  if (tgt && r.e2eTarget?.ceilingPerSec) {
    lines.push(
      `| e2e p99 < 1 s at 40 % of Temporal alone (${n0(tgt.offeredPerSec)}/s of ${n0(r.e2eTarget.ceilingPerSec)}/s) | p99 ${ms(tgt.lagMs.p99)} ms, ${tgt.notApplied} not applied | ${tgt.lagMs.p99 < 1000 && tgt.notApplied === 0 ? 'yes' : 'no'} |`,
    );
  }
  if (r.storm) {
    const st = r.storm;
    const ok = st.non2xx === 0 && st.notApplied === 0 && st.drainMs !== null && st.targetDrainMs !== null && st.drainMs <= st.targetDrainMs;
    lines.push(
      `| storm: 0 non-2xx, all applied, drain ≤ 2 × customers ÷ Temporal alone | ${st.non2xx} non-2xx, ${st.notApplied} not applied, drain ${st.drainMs === null ? 'timeout' : `${(st.drainMs / 1000).toFixed(1)} s`} vs ${st.targetDrainMs === null ? '–' : `${(st.targetDrainMs / 1000).toFixed(1)} s`} | ${ok ? 'yes' : 'no'} |`,
    );
  }
  if (r.overload) {
    const ov = r.overload;
    const ok = ov.minWindowRatio >= 0.8 && (ov.sticky.cacheMiss ?? 1) === 0 && ov.lost === 0 && ov.drainMs !== null;
    lines.push(
      `| overload: every 5 s window ≥ 80 % of sustainable, no sticky-cache miss, 0 lost, drains | lowest window ${ov.minWindowRatio} ×, ${ov.sticky.cacheMiss ?? '–'} sticky misses, ${ov.lost} lost, drained ${ov.drainMs === null ? 'no' : 'yes'} | ${ok ? 'yes' : 'no'} |`,
    );
  }
  lines.push('');

  lines.push('### What limits each number', '');
  // Recomputed from the stored measurements, so --render applies the current analysis to old results.
  const why = (x: { resources: PhaseResources; result: { okPerSecond: number } }) => bottleneck(x.resources, x.result.okPerSecond);
  for (const a of r.ack) lines.push(`- ack c=${a.concurrency}: ${why(a)}.${wfNote(a.resources)}`);
  for (const f of r.floor) lines.push(`- floor c=${f.concurrency}: ${why(f)}.`);
  for (const t of r.ceiling ?? []) lines.push(`- Temporal alone c=${t.concurrency}: ${why(t)}.`);
  for (const e of r.e2e) lines.push(`- e2e ${e.offeredPerSec}/s: ${why(e)}.${wfNote(e.resources)}`);
  if (r.scale) lines.push(`- scale: ${bottleneck(r.scale.resources, r.scale.createdPerSec)}.${wfNote(r.scale.resources)}`);
  if (rc.available && rc.resources) {
    const floorSec = rc.stripePages! / rc.rateLimitPerSecond!;
    lines.push(`- reconciliation: Stripe pacing alone needs ≥ ${floorSec.toFixed(1)} s (${rc.stripePages} pages ÷ ${rc.rateLimitPerSecond}/s); ${bottleneck(rc.resources, 0).replace(/ \(0\/req\)/g, '')}.`);
  }
  const noisy = [...r.ack, ...r.e2e].some((x) => x.resources.cpu.other > 20);
  if (noisy) lines.push('- note: processes outside the stack used > 20% of a core during some phases (see "other"): numbers are noisy; rerun on a quiet machine.');
  lines.push('');
  return `${lines.join('\n')}\n`;
}

function wfNote(res: PhaseResources): string {
  const parts: string[] = [];
  if (res.wfTaskScheduleToStartMs !== null) parts.push(`workflow-task schedule-to-start ${res.wfTaskScheduleToStartMs} ms`);
  if (res.activityScheduleToStartMs !== null) parts.push(`activity schedule-to-start ${res.activityScheduleToStartMs} ms`);
  return parts.length ? ` Worker queues: ${parts.join(', ')} (mean).` : '';
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`[bench] failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
