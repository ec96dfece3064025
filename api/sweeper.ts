/**
 * The API's sweeper: every tick re-dispatches deliveries left 'received' (Temporal was down, or a
 * Stripe lookup failed) and re-sends deliveries stuck in 'dispatched' (the workflow dedups by event id).
 */
import type { Logger } from '../lib/logger';
import type { Ingest } from './ingest';
import type { Metrics } from './metrics';

export interface SweeperDeps {
  ingest: Ingest;
  metrics: Metrics;
  logger: Logger;
  /** Age of a 'received' row before it is re-dispatched (SWEEPER_THRESHOLD_MS). */
  receivedThresholdMs: number;
  /** Age of a 'dispatched' row before it is stuck and re-sent (STUCK_DISPATCH_THRESHOLD_MS). */
  stuckThresholdMs: number;
}

/** What one tick did: rows selected and rows handed to Temporal, per pass. */
export interface SweepReport {
  received: { attempted: number; dispatched: number };
  stuck: { attempted: number; dispatched: number };
}

/** Creates the sweeper; `start` runs it on an interval, `tick` runs one pass (tests). */
export function createSweeper(deps: SweeperDeps) {
  const { ingest, metrics, logger } = deps;

  /** One pass over 'received' rows, then over stuck 'dispatched' rows. */
  async function tick(): Promise<SweepReport> {
    const received = await ingest.sweep(deps.receivedThresholdMs);
    if (received.dispatched > 0) {
      metrics.sweeperRedispatched.inc(received.dispatched);
      logger.info(received, 'sweeper re-dispatched deliveries');
    }
    const stuck = await ingest.sweepStuck(deps.stuckThresholdMs);
    if (stuck.attempted > 0) {
      metrics.sweeperStuckRedispatched.inc(stuck.dispatched);
      logger.warn(stuck, 'sweeper re-sent deliveries stuck in dispatched');
    }
    return { received, stuck };
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
