/** The benchmark's markdown report. */
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
import type { BenchOptions } from './options';
import { bottleneck, type PhaseResources } from './measure';
import type { AckRow, E2eRow, ReconciliationRow, ScaleRow, machineInfo, slim, versionInfo } from './phases';

// ---------------------------------------------------------------- report

export type Report = {
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

export const n0 = (x: number) => Math.round(x).toLocaleString('en-US');
export const ms = (x: number | null | undefined) => (x === null || x === undefined ? '–' : x >= 100 ? String(Math.round(x)) : String(x));
export const failures = (r: { failures: Record<string, number>; skipped: number }) => {
  const f = Object.entries(r.failures).map(([k, v]) => `${v}×${k}`);
  if (r.skipped) f.push(`${r.skipped} not sent (in-flight cap)`);
  return f.length ? f.join(' ') : '0';
};

export const JOURNAL_NOTE: Record<TemporalJournal, string> = {
  wal: 'WAL, synchronous=FULL (fsync per commit)',
  'wal-normal': 'WAL, synchronous=NORMAL (fsync at checkpoints only: survives a killed process, not a power loss)',
  default: 'rollback journal (CLI default, fsync per commit)',
};

export function renderMarkdown(r: Report): string {
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

export function wfNote(res: PhaseResources): string {
  const parts: string[] = [];
  if (res.wfTaskScheduleToStartMs !== null) parts.push(`workflow-task schedule-to-start ${res.wfTaskScheduleToStartMs} ms`);
  if (res.activityScheduleToStartMs !== null) parts.push(`activity schedule-to-start ${res.activityScheduleToStartMs} ms`);
  return parts.length ? ` Worker queues: ${parts.join(', ')} (mean).` : '';
}

