/** The benchmark's result rows and the phases and facts main.ts gathers besides the load itself. */
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
import type { Meter, PhaseResources } from './measure';

// ---------------------------------------------------------------- the run

export interface AckRow {
  concurrency: number;
  result: LoadResult;
  resources: PhaseResources;
  drainMs: number | null;
  appliedPerSec: number | null;
  bottleneck: string;
}

export interface E2eRow {
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

export interface ScaleRow {
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

export interface ReconciliationRow {
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

export function printProfiles(dir: string, names: string[]): void {
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

export const round2 = (x: number) => Math.round(x * 100) / 100;

export function slim(a: AckRow) {
  return { ...a, result: { ...a.result, sends: undefined } };
}

export async function endToEndLag(s: BillingStack, sends: [string, number][]): Promise<{ lagMs: LatencySummary; serverLagMs: LatencySummary; notApplied: number }> {
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

export function reconciliationAvailable(): boolean {
  const index = path.join(ROOT, 'workflows', 'index.ts');
  return existsSync(path.join(ROOT, 'workflows', 'reconciliation.ts')) && existsSync(index) && /reconciliationWorkflow/.test(readFileSync(index, 'utf8'));
}

/** Serves every local subscription from the paging fake (1% drifted) and times one full reconciliation. */
export async function runReconciliation(s: BillingStack, fake: PagingStripeFake, meter: Meter, log: (s: string) => void): Promise<ReconciliationRow> {
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
export function workerTuning(): Record<string, string> {
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

export function machineInfo() {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export async function versionInfo(s: BillingStack) {
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

