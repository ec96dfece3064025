/**
 * The benchmark's storm and overload phases (run by scripts/bench/main.ts on its stack).
 *
 * Renewal storm: N customers (existing workflows) each receive the events a real renewal emits within
 * one second, sent as fast as the load generator can; measured: non-2xx, the drain after the last
 * send, every event applied, the coalescing factor, the worker's sticky-cache misses.
 *
 * Overload: 3× the sustainable e2e rate offered for a while; measured: the applied rate per 5 s
 * window against the sustainable rate, sticky-cache misses (full-history replays), loss, the drain.
 */
import type { LoadJob, LoadResult, LatencySummary } from './load';
import type { BillingStack } from '../../support/billing-stack/stack';
import { sleep } from '../../support/billing-stack/stack';

/** What a real renewal emits, in Stripe's order (which it does not guarantee). */
export const RENEWAL_SEQUENCE = [
  'invoice.created',
  'invoice.finalized',
  'invoice.paid',
  'invoice.payment_succeeded',
  'payment_intent.succeeded',
  'charge.succeeded',
  'customer.subscription.updated',
];

type Counters = Map<string, number>;

/** What the phases need from the bench run. */
export interface PhaseContext {
  s: BillingStack;
  apiUrl: string;
  runJob: (job: LoadJob) => Promise<LoadResult>;
  job: (j: Omit<LoadJob, 'secret' | 'createdBase' | 'seed'>) => LoadJob;
  after: (r: LoadResult) => LoadResult;
  drain: (timeoutMs: number) => Promise<number | null>;
  log: (s: string) => void;
  /** The worker's Prometheus metrics (SDK core), or null. */
  workerMetrics: () => Promise<Counters | null>;
}

/** The SDK's signals of full-history replays: sticky-cache misses and forced evictions. */
export interface StickyCounters {
  /** temporal_sticky_cache_miss: workflow tasks for a workflow not in the worker's cache (replayed from full history). */
  cacheMiss: number | null;
  /** temporal_sticky_cache_total_forced_eviction: cached workflows evicted to make room. */
  forcedEvictions: number | null;
}

export interface StormRow {
  customers: number;
  events: number;
  ok: number;
  non2xx: number;
  failures: Record<string, number>;
  sendMs: number;
  ackPerSec: number;
  ackLatencyMs: LatencySummary;
  /** From the last answer to every storm event applied (null: not drained in time). */
  drainMs: number | null;
  /** From the first send to every storm event applied. */
  totalMs: number | null;
  applied: number;
  notApplied: number;
  quarantined: number;
  /** 2 × customers ÷ Temporal-alone signals/s (the issue's bound on the drain). */
  targetDrainMs: number | null;
  ceilingSignalsPerSec: number | null;
  /** Events per stripeEvents signal over the storm (API metrics). */
  coalescing: number | null;
  sticky: StickyCounters;
}

export interface OverloadWindow {
  fromS: number;
  applied: number;
  perSec: number;
}

export interface OverloadRow {
  sustainablePerSec: number;
  sustainableFrom: string;
  offeredPerSec: number;
  seconds: number;
  result: LoadResult;
  /** Applied overload events per 5 s window of the offered period. */
  windows: OverloadWindow[];
  minWindowPerSec: number;
  /** min window ÷ sustainable (must stay ≥ 0.8). */
  minWindowRatio: number;
  lost: number;
  /** From the end of the offered load to an empty inbox. */
  drainMs: number | null;
  /** Most deliveries waiting in the inbox (received) seen during the phase. */
  peakInboxDepth: number;
  peakPendingWorkflows: number;
  coalescing: number | null;
  sticky: StickyCounters;
}

const sum = (m: Counters | null, re: RegExp): number | null => {
  if (!m) return null;
  let total = 0;
  let seen = false;
  for (const [k, v] of m) {
    if (re.test(k)) {
      total += v;
      seen = true;
    }
  }
  return seen ? total : null;
};

function stickyOf(m: Counters | null): StickyCounters {
  // Core registers a counter on its first increment: with the hit counter present (the names are
  // right and the endpoint answered), an absent miss or eviction counter means none happened.
  const seen = sum(m, /^temporal_sticky_cache_hit(_total)?(\{|$)/) !== null;
  const orZero = (v: number | null) => (v === null && seen ? 0 : v);
  return {
    cacheMiss: orZero(sum(m, /^temporal_sticky_cache_miss(_total)?(\{|$)/)),
    forcedEvictions: orZero(sum(m, /^temporal_sticky_cache_total_forced_eviction(_total)?(\{|$)/)),
  };
}

const delta = (a: number | null, b: number | null) => (a === null || b === null ? null : b - a);
const stickyDelta = (a: StickyCounters, b: StickyCounters): StickyCounters => ({
  cacheMiss: delta(a.cacheMiss, b.cacheMiss),
  forcedEvictions: delta(a.forcedEvictions, b.forcedEvictions),
});

function parse(text: string): Counters {
  const m: Counters = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    const v = Number(line.slice(sp + 1));
    if (Number.isFinite(v)) m.set(line.slice(0, sp), v);
  }
  return m;
}

/** The API's dispatch counters: events and signals (their ratio is the coalescing factor). */
async function dispatchCounters(ctx: PhaseContext): Promise<{ events: number; signals: number } | null> {
  try {
    const m = parse(await (await fetch(`${ctx.s.apiUrl}/metrics`)).text());
    return { events: m.get('billing_dispatch_events_total') ?? 0, signals: m.get('billing_dispatch_signals_total') ?? 0 };
  } catch {
    return null;
  }
}

const coalescingBetween = (a: { events: number; signals: number } | null, b: { events: number; signals: number } | null) =>
  a && b && b.signals > a.signals ? Math.round(((b.events - a.events) / (b.signals - a.signals)) * 100) / 100 : null;

/** Waits until no event of `prefix` is received or dispatched; ms waited, or null on timeout. */
async function drainPrefix(ctx: PhaseContext, prefix: string, timeoutMs: number): Promise<number | null> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const [r] = await ctx.s.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM webhook_events WHERE status IN ('received', 'dispatched') AND starts_with(event_id, ${prefix})`;
    if (r!.n === 0) return Date.now() - t0;
    await sleep(100);
  }
  return null;
}

/** The renewal storm over `customers` customers of their own tag (created first, then drained). */
export async function runRenewalStorm(ctx: PhaseContext, customers: number, ceilingSignalsPerSec: number | null): Promise<StormRow> {
  const { log } = ctx;
  log(`renewal storm: creating ${customers} customers`);
  ctx.after(await ctx.runJob(ctx.job({ url: ctx.apiUrl, mode: 'closed', concurrency: 32, durationMs: 600_000, maxRequests: customers, tag: 'stormwarm', customerTag: 'storm', customers, roundRobin: true, duplicateRate: 0 })));
  await ctx.drain(300_000);

  const events = customers * RENEWAL_SEQUENCE.length;
  log(`renewal storm: ${events} events (${RENEWAL_SEQUENCE.length} per customer), as fast as the load generator can`);
  const sticky0 = stickyOf(await ctx.workerMetrics());
  const d0 = await dispatchCounters(ctx);
  const t0 = Date.now();
  const r = ctx.after(
    await ctx.runJob(ctx.job({ url: ctx.apiUrl, mode: 'closed', concurrency: 64, durationMs: 600_000, maxRequests: events, tag: 'storm', customerTag: 'storm', customers, duplicateRate: 0, sequence: RENEWAL_SEQUENCE })),
  );
  const sentAt = Date.now();
  const drainMs = await drainPrefix(ctx, 'evt_storm_', 600_000);
  const doneAt = Date.now();
  const wm1 = await ctx.workerMetrics();
  const sticky1 = stickyOf(wm1);
  log(`  worker sticky-cache series: ${[...(wm1?.keys() ?? [])].filter((k) => k.includes('sticky')).map((k) => k.replace(/\{.*$/, '')).filter((k, i, a) => a.indexOf(k) === i).join(', ') || 'none'}`);
  const d1 = await dispatchCounters(ctx);
  const [counts] = await ctx.s.sql<{ applied: number; quarantined: number }[]>`
    SELECT count(*) FILTER (WHERE status = 'applied')::int AS applied, count(*) FILTER (WHERE status = 'quarantined')::int AS quarantined
    FROM webhook_events WHERE starts_with(event_id, 'evt_storm_')`;
  const non2xx = Object.values(r.failures).reduce((a, b) => a + b, 0);
  const row: StormRow = {
    customers,
    events,
    ok: r.ok,
    non2xx,
    failures: r.failures,
    sendMs: r.elapsedMs,
    ackPerSec: r.okPerSecond,
    ackLatencyMs: r.latencyMs,
    drainMs,
    totalMs: drainMs === null ? null : doneAt - t0,
    applied: counts!.applied,
    notApplied: events - counts!.applied,
    quarantined: counts!.quarantined,
    targetDrainMs: ceilingSignalsPerSec ? Math.round((2 * customers * 1000) / ceilingSignalsPerSec) : null,
    ceilingSignalsPerSec,
    coalescing: coalescingBetween(d0, d1),
    sticky: stickyDelta(sticky0, sticky1),
  };
  log(`  sent in ${r.elapsedMs} ms (${r.okPerSecond}/s, ${non2xx} non-2xx), drained ${drainMs} ms after the last send (${sentAt - t0} + ${drainMs} ms in all); ${row.applied}/${events} applied; coalescing ${row.coalescing}; sticky misses ${row.sticky.cacheMiss}`);
  return row;
}

/** Offers 3× the sustainable rate over the pool customers for `seconds`, then drains. */
export async function runOverload(
  ctx: PhaseContext,
  opts: { sustainablePerSec: number; sustainableFrom: string; seconds: number; poolTag: string; customers: number },
): Promise<OverloadRow> {
  const { log, s } = ctx;
  const offered = Math.round(opts.sustainablePerSec * 3);
  log(`overload: ${offered}/s offered (3 × ${opts.sustainablePerSec}/s sustainable, ${opts.sustainableFrom}) for ${opts.seconds} s`);
  const sticky0 = stickyOf(await ctx.workerMetrics());
  const d0 = await dispatchCounters(ctx);
  let peakInbox = 0;
  let peakPending = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [r] = await s.sql<{ inbox: number; pending: number }[]>`
        SELECT count(*) FILTER (WHERE status = 'received')::int AS inbox,
               count(DISTINCT customer_id) FILTER (WHERE status = 'dispatched')::int AS pending
        FROM webhook_events WHERE status IN ('received', 'dispatched')`;
      peakInbox = Math.max(peakInbox, r!.inbox);
      peakPending = Math.max(peakPending, r!.pending);
      await sleep(500);
    }
  })();
  const t0 = Date.now();
  const r = ctx.after(
    await ctx.runJob(ctx.job({ url: ctx.apiUrl, mode: 'open', ratePerSecond: offered, concurrency: 1024, durationMs: opts.seconds * 1000, tag: 'ov', customerTag: opts.poolTag, customers: opts.customers, duplicateRate: 0, recordSends: true })),
  );
  const offeredEnd = Date.now();
  const drainMs = await drainPrefix(ctx, 'evt_ov_', 900_000);
  const sticky1 = stickyOf(await ctx.workerMetrics());
  sampling = false;
  await sampler;
  const d1 = await dispatchCounters(ctx);

  // Applied per 5 s window of the offered period, from the rows' applied_at.
  const rows = await s.sql<{ w: number; n: number }[]>`
    SELECT floor(EXTRACT(EPOCH FROM applied_at - ${new Date(t0)}::timestamptz) / 5)::int AS w, count(*)::int AS n
    FROM webhook_events
    WHERE starts_with(event_id, 'evt_ov_') AND applied_at IS NOT NULL
    GROUP BY 1 ORDER BY 1`;
  const windowsInLoad = Math.floor((offeredEnd - t0) / 5000);
  const windows: OverloadWindow[] = [];
  for (let w = 0; w < windowsInLoad; w++) {
    const n = rows.find((x) => x.w === w)?.n ?? 0;
    windows.push({ fromS: w * 5, applied: n, perSec: Math.round((n / 5) * 10) / 10 });
  }
  const sent = (r.sends ?? []).map(([id]) => id);
  let applied = 0;
  for (let i = 0; i < sent.length; i += 5000) {
    const [c] = await s.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM applied_events WHERE event_id IN ${s.sql(sent.slice(i, i + 5000))}`;
    applied += c!.n;
  }
  const minWindowPerSec = windows.length ? Math.min(...windows.map((w) => w.perSec)) : 0;
  const row: OverloadRow = {
    sustainablePerSec: opts.sustainablePerSec,
    sustainableFrom: opts.sustainableFrom,
    offeredPerSec: offered,
    seconds: opts.seconds,
    result: { ...r, sends: undefined },
    windows,
    minWindowPerSec,
    minWindowRatio: Math.round((minWindowPerSec / opts.sustainablePerSec) * 100) / 100,
    lost: sent.length - applied,
    drainMs,
    peakInboxDepth: peakInbox,
    peakPendingWorkflows: peakPending,
    coalescing: coalescingBetween(d0, d1),
    sticky: stickyDelta(sticky0, sticky1),
  };
  log(`  acked ${r.ok} (${r.okPerSecond}/s); applied per 5 s window ${windows.map((w) => w.perSec).join(', ')} /s; min ${row.minWindowRatio} × sustainable; lost ${row.lost}; drained ${drainMs} ms after; peak inbox ${peakInbox}, peak pending workflows ${peakPending}; sticky misses ${row.sticky.cacheMiss}`);
  return row;
}

const n0 = (x: number) => Math.round(x).toLocaleString('en-US');
const ms = (x: number | null | undefined) => (x === null || x === undefined ? '–' : x >= 100 ? String(Math.round(x)) : String(x));
const failures = (r: { failures: Record<string, number>; skipped: number }) => {
  const f = Object.entries(r.failures).map(([k, v]) => `${v}×${k}`);
  if (r.skipped) f.push(`${r.skipped} not sent (in-flight cap)`);
  return f.length ? f.join(' ') : '0';
};

/** The storm's markdown section. */
export function renderStorm(st: StormRow): string[] {
  const out: string[] = [];
  out.push('### Renewal storm', '');
  out.push(
    `${n0(st.customers)} customers with live workflows each receive the ${n0(st.events / st.customers)} events of a renewal (invoice.created, invoice.finalized, invoice.paid, invoice.payment_succeeded, payment_intent.succeeded, charge.succeeded, customer.subscription.updated), sent by 64 senders as fast as the load generator goes.`,
    '',
    '| measure | value |',
    '|---|---|',
    `| sent | ${n0(st.events)} in ${(st.sendMs / 1000).toFixed(1)} s (${n0(st.ackPerSec)}/s), ack p50 / p99 ${ms(st.ackLatencyMs.p50)} / ${ms(st.ackLatencyMs.p99)} ms |`,
    `| non-2xx | ${st.non2xx}${st.non2xx ? ` (${Object.entries(st.failures).map(([k, v]) => `${v}×${k}`).join(', ')})` : ''} |`,
    `| applied | ${n0(st.applied)} / ${n0(st.events)}${st.quarantined ? ` (${st.quarantined} quarantined)` : ''} |`,
    `| drain after the last send | ${st.drainMs === null ? 'timeout' : `${(st.drainMs / 1000).toFixed(1)} s`} (first send to all applied: ${st.totalMs === null ? '–' : `${(st.totalMs / 1000).toFixed(1)} s`}) |`,
    `| bound: 2 × customers ÷ Temporal-alone signals/s | ${st.targetDrainMs === null ? '–' : `${(st.targetDrainMs / 1000).toFixed(1)} s (${n0(st.ceilingSignalsPerSec ?? 0)} signals/s)`} |`,
    `| coalescing (events per signal) | ${st.coalescing ?? '–'} |`,
    `| sticky-cache misses / forced evictions (worker) | ${st.sticky.cacheMiss ?? '–'} / ${st.sticky.forcedEvictions ?? '–'} |`,
    '',
  );
  return out;
}

/** The overload's markdown section. */
export function renderOverload(ov: OverloadRow): string[] {
  const out: string[] = [];
  out.push('### Overload', '');
  out.push(
    `${n0(ov.offeredPerSec)}/s offered for ${ov.seconds} s: 3 × the sustainable ${n0(ov.sustainablePerSec)}/s (${ov.sustainableFrom}), over the steady-state customers.`,
    '',
    '| measure | value |',
    '|---|---|',
    `| acknowledged | ${n0(ov.result.ok)} (${n0(ov.result.okPerSecond)}/s), non-2xx ${failures(ov.result)}, ack p99 ${ms(ov.result.latencyMs.p99)} ms |`,
    `| applied per 5 s window (events/s) | ${ov.windows.map((w) => n0(w.perSec)).join(', ')} |`,
    `| lowest window ÷ sustainable | ${ov.minWindowRatio} |`,
    `| peak inbox (received) / peak workflows pending | ${n0(ov.peakInboxDepth)} / ${n0(ov.peakPendingWorkflows)} |`,
    `| coalescing (events per signal) | ${ov.coalescing ?? '–'} |`,
    `| sticky-cache misses / forced evictions (worker) | ${ov.sticky.cacheMiss ?? '–'} / ${ov.sticky.forcedEvictions ?? '–'} |`,
    `| lost | ${ov.lost} |`,
    `| backlog drained after the load | ${ov.drainMs === null ? 'timeout' : `${(ov.drainMs / 1000).toFixed(1)} s`} |`,
    '',
  );
  return out;
}
