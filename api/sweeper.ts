/**
 * The API's sweeper, the dispatcher's fallback: every tick wakes the dispatcher (deliveries left
 * 'received' while Temporal was down or a Stripe lookup failed) and re-sends deliveries stuck in
 * 'dispatched' (the workflow dedups by event id).
 */
import type { Logger } from '../lib/logger';
import type { Ingest } from './ingest';
import type { Metrics } from './metrics';

export interface SweeperDeps {
  ingest: Ingest;
  metrics: Metrics;
  logger: Logger;
  /** The dispatcher to wake each tick (its own timer is the first fallback, this the second). */
  dispatcher?: { wake(): void };
  /** Age of a 'dispatched' row before it is stuck and re-sent (STUCK_DISPATCH_THRESHOLD_MS). */
  stuckThresholdMs: number;
}

/** What one tick did: stuck rows selected and re-sent. */
export interface SweepReport {
  stuck: { attempted: number; dispatched: number };
}

/** Creates the sweeper; `start` runs it on an interval, `tick` runs one pass (tests). */
export function createSweeper(deps: SweeperDeps) {
  const { ingest, metrics, logger } = deps;

  /** Wakes the dispatcher, then one pass over stuck 'dispatched' rows. */
  async function tick(): Promise<SweepReport> {
    deps.dispatcher?.wake();
    const stuck = await ingest.sweepStuck(deps.stuckThresholdMs);
    if (stuck.attempted > 0) {
      metrics.sweeperStuckRedispatched.inc(stuck.dispatched);
      logger.warn(stuck, 'sweeper re-sent deliveries stuck in dispatched');
    }
    return { stuck };
  }

  return {
    tick,
    /** Ticks every intervalMs, never two at once; a failed tick is logged and the next one runs. Returns stop. */
    start(intervalMs: number): () => void {
      let running = false;
      const timer = setInterval(() => {
        if (running) return;
        running = true;
        tick()
          .catch((err: unknown) => logger.warn({ error: err instanceof Error ? err.message : String(err) }, 'sweep failed'))
          .finally(() => {
            running = false;
          });
      }, intervalMs);
      return () => clearInterval(timer);
    },
  };
}

export type Sweeper = ReturnType<typeof createSweeper>;
