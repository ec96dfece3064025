/**
 * The dispatcher: hands deliveries the request path stored ('received') to their customer workflows.
 *
 * Every API replica runs one. Each pass claims the oldest claimable rows with FOR UPDATE SKIP LOCKED
 * and a lease (a replica that dies mid-pass leaves rows any replica takes again when the lease ends),
 * coalesces each customer's events into `stripeEvents` signals bounded by count and bytes, sends them
 * with at most `maxInFlight` signals in flight, and marks the rows 'dispatched'.
 *
 * Admission control: before a pass it reads how many workflows have deliveries dispatched but not yet
 * applied, and the oldest one's age. It admits new workflows only up to a window, and the window
 * shrinks (×0.7) while the oldest pending delivery is older than `targetLagMs` and grows back (+2 per
 * pass) while it is young. So under overload the worker keeps applying at its sustainable rate without
 * falling into sticky-queue timeouts, and the backlog waits in Postgres, where it is cheap and visible.
 *
 * Ingest first: while DISPATCH_YIELD_IN_FLIGHT webhook requests are in flight in this process, it
 * holds back, unless the oldest stored delivery has waited DISPATCH_MAX_DEFER_MS: a burst is acknowledged
 * at the speed of the INSERT and applied right after it, coalesced.
 *
 * Temporal down: a failed signal leaves its rows 'received' with the error and a lease pushed out
 * (backoff 0.5 s doubling to 15 s); the webhook endpoint keeps answering 200 meanwhile.
 * It wakes on LISTEN billing_inbox (the API sends a coalesced NOTIFY after its inserts, lib/inbox.ts),
 * on this process's own inserts at once, and on a timer as the fallback.
 *
 * Tracing on (the ingest's tracer): each signal runs in a `dispatch stripeEvents` span parented to its first
 * delivery's stored trace context and linked to the others' (lib/tracing.ts inStoredTrace), so the Temporal
 * client interceptor carries that trace into the signal's headers.
 */
import type { Tracer } from '@opentelemetry/api';
import { isGrpcServiceError } from '@temporalio/client';
import type { BillingEvent } from '../domain/billing-event';
import { customerWorkflowId } from '../domain/ids';
import type { Config } from '../lib/config';
import type { Sql } from '../lib/db';
import { INBOX_CHANNEL } from '../lib/inbox';
import type { Logger } from '../lib/logger';
import { inStoredTrace } from '../lib/tracing';
import { createInboxQueries } from './inbox-queries';
import type { Ingest } from './ingest';
import type { Metrics } from './metrics';

export interface DispatcherOptions {
  /** Signals in flight at once (DISPATCH_MAX_IN_FLIGHT). */
  maxInFlight: number;
  /** Upper bound of the admission window: workflows with deliveries dispatched but not applied (DISPATCH_MAX_PENDING_WORKFLOWS). */
  maxPendingWorkflows: number;
  /** Lower bound of the window. */
  minPendingWorkflows: number;
  /** The window shrinks while the oldest pending delivery is older than this (DISPATCH_TARGET_LAG_MS). */
  targetLagMs: number;
  /** Events per signal (DISPATCH_BATCH_MAX_EVENTS). */
  batchMaxEvents: number;
  /** JSON bytes per signal (DISPATCH_BATCH_MAX_BYTES); a single larger event still goes alone. */
  batchMaxBytes: number;
  /** Rows looked at per pass (the oldest claimable ones); those of admitted customers are claimed. */
  claimMax: number;
  /** Fallback wake-up (DISPATCH_POLL_MS). */
  pollMs: number;
  /** How long a claim holds a row. */
  leaseMs: number;
  /** How long a row waits after a Stripe call it needs failed (a dispute's charge lookup, a truncated payload's re-fetch). */
  deferMs: number;
  /** Rows dispatched longer ago are the stuck sweeper's (not counted as pending). */
  stuckThresholdMs: number;
  /** LISTEN for inserts by other processes (off in tests that run one process). */
  listen: boolean;
  /**
   * Ingest first: while at least this many webhook requests are in flight in this process, the
   * dispatcher holds back (DISPATCH_YIELD_IN_FLIGHT; 0 never holds back)…
   */
  yieldInFlight: number;
  /** …unless the oldest stored delivery waits longer than this (DISPATCH_MAX_DEFER_MS). */
  maxDeferMs: number;
}

export const DEFAULT_DISPATCHER_OPTIONS: DispatcherOptions = {
  maxInFlight: 16,
  maxPendingWorkflows: 200,
  minPendingWorkflows: 8,
  targetLagMs: 2000,
  batchMaxEvents: 100,
  batchMaxBytes: 256 * 1024,
  claimMax: 500,
  pollMs: 1000,
  leaseMs: 30_000,
  deferMs: 5000,
  stuckThresholdMs: 300_000,
  listen: true,
  yieldInFlight: 8,
  maxDeferMs: 10_000,
};

/** The dispatcher's options from the configuration. */
export function dispatcherOptions(config: Config): Partial<DispatcherOptions> {
  return {
    maxInFlight: config.DISPATCH_MAX_IN_FLIGHT,
    maxPendingWorkflows: config.DISPATCH_MAX_PENDING_WORKFLOWS,
    minPendingWorkflows: Math.min(DEFAULT_DISPATCHER_OPTIONS.minPendingWorkflows, config.DISPATCH_MAX_PENDING_WORKFLOWS),
    targetLagMs: config.DISPATCH_TARGET_LAG_MS,
    batchMaxEvents: config.DISPATCH_BATCH_MAX_EVENTS,
    batchMaxBytes: config.DISPATCH_BATCH_MAX_BYTES,
    pollMs: config.DISPATCH_POLL_MS,
    leaseMs: config.DISPATCH_LEASE_MS,
    stuckThresholdMs: config.STUCK_DISPATCH_THRESHOLD_MS,
    yieldInFlight: config.DISPATCH_YIELD_IN_FLIGHT,
    maxDeferMs: config.DISPATCH_MAX_DEFER_MS,
  };
}

export interface DispatcherDeps {
  sql: Sql;
  ingest: Pick<Ingest, 'resolveStored' | 'signalEvents'> & { tracer?: Tracer };
  /** Webhook requests in flight in this process (api/routes/webhooks.ts counts them). */
  webhookInFlight?: () => number;
  logger: Logger;
  metrics: Metrics;
  options?: Partial<DispatcherOptions>;
}

/** What one pass did. */
export interface PassReport {
  claimed: number;
  dispatched: number;
  signals: number;
  /** Rows left 'received' for a later pass (Temporal or Stripe unavailable). */
  retried: number;
  /** Rows settled without a hand-over (ignored, failed). */
  settled: number;
  temporalDown: boolean;
}

/** The admission reading: pending workflows and the oldest pending delivery's age. */
export interface Admission {
  pendingWorkflows: number;
  oldestPendingMs: number;
  window: number;
  available: number;
}

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;
/** While the window is full, admission is read again this often. */
const ADMISSION_POLL_MS = 50;
/** While ingest has priority, its load is looked at again this often. */
const YIELD_POLL_MS = 25;

/** Splits one customer's ordered events into signals bounded by count and JSON bytes. */
export function chunkEvents(events: BillingEvent[], maxEvents: number, maxBytes: number): BillingEvent[][] {
  const chunks: BillingEvent[][] = [];
  let current: BillingEvent[] = [];
  let bytes = 0;
  for (const event of events) {
    const size = JSON.stringify(event).length;
    if (current.length > 0 && (current.length >= maxEvents || bytes + size > maxBytes)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(event);
    bytes += size;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

/** INVALID_ARGUMENT and the like: the same signal would fail again, so its rows are marked failed. */
function rejectedByTemporal(err: unknown): boolean {
  const code = isGrpcServiceError(err) ? err.code : (err as { cause?: { code?: number } })?.cause?.code;
  // 3 INVALID_ARGUMENT, 7 PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED is transient, 9 FAILED_PRECONDITION
  return code === 3 || code === 7 || code === 9;
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Creates the dispatcher; `start` runs it, `pass` runs one pass (tests, admin). */
export function createDispatcher(deps: DispatcherDeps) {
  const { sql, ingest, logger, metrics } = deps;
  const o: DispatcherOptions = { ...DEFAULT_DISPATCHER_OPTIONS, ...deps.options };
  let window = o.maxPendingWorkflows;
  let lastShrink = 0;
  let inFlight = 0;
  let temporalUp = true;
  let lastError: string | null = null;
  metrics.dispatchWindow.set(window);

  /** Reads the pending work in Temporal's hands and moves the window. */
  async function admission(): Promise<Admission> {
    const { pendingWorkflows, oldestPendingMs } = await queries.pending();
    const now = Date.now();
    if (oldestPendingMs > o.targetLagMs) {
      // Multiplicative decrease, at most once per target period: the worker is behind.
      if (now - lastShrink >= o.targetLagMs && window > o.minPendingWorkflows) {
        window = Math.max(o.minPendingWorkflows, Math.floor(window * 0.7));
        lastShrink = now;
        metrics.dispatchWindowShrinks.inc();
      }
    } else if (oldestPendingMs < o.targetLagMs / 2 && window < o.maxPendingWorkflows) {
      window = Math.min(o.maxPendingWorkflows, window + 2);
    }
    metrics.dispatchWindow.set(window);
    metrics.dispatchPendingWorkflows.set(pendingWorkflows);
    metrics.dispatchPendingOldestAge.set(oldestPendingMs / 1000);
    return { pendingWorkflows, oldestPendingMs, window, available: window - pendingWorkflows };
  }

  const queries = createInboxQueries(sql, { leaseMs: o.leaseMs, stuckThresholdMs: o.stuckThresholdMs });
  const { claim, release, markDispatched, markRejected } = queries;

  /** Runs `work` over `items` with at most `limit` at once. */
  async function pool<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
    let next = 0;
    const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    });
    await Promise.all(lanes);
  }

  let backoffMs = BACKOFF_MIN_MS;

  /** One pass: claim, resolve, coalesce per customer, signal, mark. Admits at most `maxWorkflows` customers. */
  async function pass(maxWorkflows = Number.POSITIVE_INFINITY): Promise<PassReport> {
    const report: PassReport = { claimed: 0, dispatched: 0, signals: 0, retried: 0, settled: 0, temporalDown: false };
    const rows = await claim(o.claimMax, Number.isFinite(maxWorkflows) ? Math.max(1, Math.floor(maxWorkflows)) : o.claimMax);
    report.claimed = rows.length;
    if (rows.length === 0) return report;

    // Resolve in order; rows of customers beyond the admitted count go back at once.
    const byCustomer = new Map<string, { events: BillingEvent[]; ids: string[] }>();
    const unadmitted: string[] = [];
    for (const row of rows) {
      if (row.customer_id && !byCustomer.has(row.customer_id) && byCustomer.size >= maxWorkflows) {
        unadmitted.push(row.event_id);
        continue;
      }
      let resolved;
      try {
        resolved = await ingest.resolveStored(row);
      } catch (err) {
        // Postgres hiccup while resolving: this row waits for a later pass.
        await release([row.event_id], BACKOFF_MIN_MS, messageOf(err)).catch(() => {});
        report.retried++;
        continue;
      }
      if (resolved.kind === 'settled') {
        if (resolved.outcome.status === 'deferred') {
          await release([row.event_id], o.deferMs, null);
          report.retried++;
          metrics.dispatchErrors.inc({ reason: 'deferred' });
        } else report.settled++;
        continue;
      }
      const customerId = resolved.event.customerId;
      if (!byCustomer.has(customerId) && byCustomer.size >= maxWorkflows) {
        unadmitted.push(row.event_id);
        continue;
      }
      const entry = byCustomer.get(customerId) ?? { events: [], ids: [] };
      entry.events.push(resolved.event);
      entry.ids.push(row.event_id);
      byCustomer.set(customerId, entry);
    }
    await release(unadmitted, 0, null);
    const tracer = ingest.tracer;
    const traces = tracer ? new Map(rows.map((r) => [r.event_id, r.trace_context])) : null;
    /** One hand-over; tracing on, in a span that continues the deliveries' stored traces. */
    const signal = (customerId: string, chunk: BillingEvent[]) =>
      tracer && traces
        ? inStoredTrace(
            tracer,
            'dispatch stripeEvents',
            chunk.map((e) => ({ eventId: e.eventId, traceparent: traces.get(e.eventId) ?? null })),
            { 'billing.customer.id': customerId, 'billing.event.count': chunk.length, 'billing.event.ids': chunk.map((e) => e.eventId) },
            () => ingest.signalEvents(customerId, chunk),
          )
        : ingest.signalEvents(customerId, chunk);

    const done: { eventId: string; workflowId: string }[] = [];
    const failed: { ids: string[]; error: string }[] = [];
    const rejected: { ids: string[]; error: string }[] = [];
    await pool([...byCustomer.entries()], o.maxInFlight, async ([customerId, { events }]) => {
      // One customer's chunks go in order, one after the other.
      let offset = 0;
      for (const chunk of chunkEvents(events, o.batchMaxEvents, o.batchMaxBytes)) {
        const chunkIds = chunk.map((e) => e.eventId);
        if (report.temporalDown) {
          failed.push({ ids: events.slice(offset).map((e) => e.eventId), error: lastError ?? 'temporal unavailable' });
          return;
        }
        inFlight++;
        metrics.dispatchInFlight.set(inFlight);
        try {
          await signal(customerId, chunk);
          const workflowId = customerWorkflowId(customerId);
          for (const id of chunkIds) done.push({ eventId: id, workflowId });
          report.signals++;
          report.dispatched += chunk.length;
          metrics.dispatchSignals.inc();
          metrics.dispatchEvents.inc(chunk.length);
          metrics.dispatchBatchEvents.observe(chunk.length);
          logger.info({ customerId, workflowId, events: chunk.length, eventIds: chunkIds }, 'events dispatched');
        } catch (err) {
          const error = messageOf(err);
          if (rejectedByTemporal(err)) {
            rejected.push({ ids: chunkIds, error });
            metrics.dispatchErrors.inc({ reason: 'rejected' });
            logger.error({ customerId, workflowId: customerWorkflowId(customerId), eventIds: chunkIds, error }, 'Temporal rejected a hand-over; deliveries marked failed');
          } else {
            report.temporalDown = true;
            lastError = error;
            failed.push({ ids: events.slice(offset).map((e) => e.eventId), error });
            metrics.dispatchErrors.inc({ reason: 'temporal_unavailable' });
            return;
          }
        } finally {
          inFlight--;
          metrics.dispatchInFlight.set(inFlight);
        }
        offset += chunk.length;
      }
    });
    await markDispatched(done);
    for (const r of rejected) await markRejected(r.ids, r.error);
    if (report.temporalDown) {
      for (const f of failed) await release(f.ids, backoffMs, f.error);
      report.retried += failed.reduce((n, f) => n + f.ids.length, 0);
    }
    return report;
  }

  let stopped = true;
  let wakeUp: (() => void) | null = null;
  let woken = false;
  let loopDone: Promise<void> = Promise.resolve();

  function wake(): void {
    woken = true;
    wakeUp?.();
  }

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        wakeUp = null;
        resolve();
      }, ms);
      wakeUp = () => {
        clearTimeout(t);
        wakeUp = null;
        resolve();
      };
    });

  /** Sleeps without being cut short by wake-ups (admission waits, backoff). */
  const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

  async function loop(): Promise<void> {
    while (!stopped) {
      if (!woken) await sleep(o.pollMs);
      if (stopped) break;
      woken = false;
      try {
        // Drain: pass after pass while rows come back full, as long as admission allows.
        for (;;) {
          if (stopped) break;
          // Ingest first: a burst of webhooks gets the CPU (and Postgres) before the hand-over does,
          // as long as nothing stored has waited past maxDeferMs; the burst is coalesced afterwards.
          if (o.yieldInFlight > 0 && (deps.webhookInFlight?.() ?? 0) >= o.yieldInFlight) {
            if ((await queries.oldestReceivedMs()) < o.maxDeferMs) {
              metrics.dispatchIngestYields.inc();
              await pause(YIELD_POLL_MS);
              continue;
            }
          }
          const adm = await admission();
          if (adm.available <= 0) {
            metrics.dispatchAdmissionWaits.inc();
            await pause(ADMISSION_POLL_MS);
            continue;
          }
          const r = await pass(adm.available);
          if (r.temporalDown) {
            if (temporalUp) logger.warn({ error: lastError, retryInMs: backoffMs }, 'temporal unavailable; deliveries kept in the inbox');
            temporalUp = false;
            metrics.dispatchTemporalUp.set(0);
            await pause(backoffMs);
            backoffMs = Math.min(BACKOFF_MAX_MS, backoffMs * 2);
            continue;
          }
          if (r.signals > 0 && !temporalUp) {
            logger.info('temporal reachable again; dispatching the inbox');
            temporalUp = true;
            lastError = null;
            metrics.dispatchTemporalUp.set(1);
          }
          if (r.signals > 0) backoffMs = BACKOFF_MIN_MS;
          if (r.claimed === 0 || (r.signals === 0 && r.settled === 0)) break;
        }
      } catch (err) {
        // Postgres unreachable: the rows are safe where they are; try again on the next wake-up.
        logger.warn({ error: messageOf(err) }, 'dispatch pass failed');
        metrics.dispatchErrors.inc({ reason: 'postgres' });
        await pause(BACKOFF_MIN_MS);
      }
    }
  }

  let unlisten: (() => Promise<void>) | null = null;

  return {
    pass,
    admission,
    wake,
    /** What /readyz and the admin API show. */
    status: () => ({ running: !stopped, temporalUp, lastError, window, inFlight }),
    /** Starts the loop (and LISTEN when configured); returns once listening. */
    async start(): Promise<void> {
      if (!stopped) return;
      stopped = false;
      metrics.dispatchTemporalUp.set(1);
      if (o.listen) {
        try {
          const sub = await sql.listen(INBOX_CHANNEL, () => wake());
          unlisten = () => sub.unlisten();
        } catch (err) {
          logger.warn({ error: messageOf(err), pollMs: o.pollMs }, 'LISTEN billing_inbox failed; dispatching on the timer only');
        }
      }
      woken = true;
      loopDone = loop();
    },
    /** Stops after the current pass (its claims are marked or released). */
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      wakeUp?.();
      await unlisten?.().catch(() => {});
      unlisten = null;
      await loopDone;
    },
  };
}

export type Dispatcher = ReturnType<typeof createDispatcher>;
