/** The benchmark's measurements: Prometheus deltas, CPU and memory per phase, and what limited a number. */
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
// ---------------------------------------------------------------- measurements

export interface PgCounters {
  commits: number;
  rollbacks: number;
  walSync: number;
  walRecords: number;
}

/** Per-phase resource use: CPU by process, Postgres commits and WAL flushes, worker RPCs. */
export interface PhaseResources {
  cpu: CpuUsage;
  pgCommitsPerSec: number;
  walSyncsPerSec: number;
  /** Temporal RPCs the worker made (SDK core metrics), per second, by operation. */
  workerRpcPerSec: Record<string, number> | null;
  /** Mean schedule-to-start of workflow / activity tasks (ms): high = worker short of CPU or slots. */
  wfTaskScheduleToStartMs: number | null;
  activityScheduleToStartMs: number | null;
}

export type Metrics = Map<string, number>;

export function parsePrometheus(text: string): Metrics {
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

export function metricDelta(a: Metrics, b: Metrics, name: RegExp): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of b) if (name.test(k)) out.set(k, v - (a.get(k) ?? 0));
  return out;
}

export function histogramMean(a: Metrics, b: Metrics, base: string): number | null {
  const sum = [...metricDelta(a, b, new RegExp(`^${base}_sum`)).values()].reduce((x, y) => x + y, 0);
  const count = [...metricDelta(a, b, new RegExp(`^${base}_count`)).values()].reduce((x, y) => x + y, 0);
  // Core reports these latencies in milliseconds (or seconds with the `_seconds` suffix).
  if (count === 0) return null;
  const mean = sum / count;
  return Math.round((base.endsWith('_seconds') ? mean * 1000 : mean) * 10) / 10;
}

export class Meter {
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
export function bottleneck(r: PhaseResources, requestsPerSec: number): string {
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

