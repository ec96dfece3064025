/** A process-wide token bucket that paces Stripe calls and pauses everyone after a 429. */

export interface RateLimiter {
  /** Resolves when the caller may make one call. */
  acquire(): Promise<void>;
  /** Hands out no token for `ms` (Stripe answered 429: every caller in this process slows down). */
  backOff(ms: number): void;
}

export interface TokenBucketOptions {
  ratePerSecond: number;
  /** Tokens available at once (default: one second's worth, at least 1). */
  burst?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/** Creates a token bucket; callers are served in arrival order. */
export function createTokenBucket(opts: TokenBucketOptions): RateLimiter {
  const rate = opts.ratePerSecond;
  if (!(rate > 0)) throw new Error('ratePerSecond must be positive');
  const burst = Math.max(1, opts.burst ?? Math.ceil(rate));
  const now = opts.now ?? (() => Date.now());
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let tokens = burst;
  let refilledAt = now();
  let pausedUntil = 0;
  // One waiter at a time: FIFO, and no thundering herd when a token frees up.
  let line: Promise<void> = Promise.resolve();

  async function take(): Promise<void> {
    for (;;) {
      const t = now();
      if (t < pausedUntil) {
        await sleep(pausedUntil - t);
        continue;
      }
      tokens = Math.min(burst, tokens + ((t - refilledAt) / 1000) * rate);
      refilledAt = t;
      if (tokens >= 1) {
        tokens -= 1;
        return;
      }
      await sleep(Math.ceil(((1 - tokens) / rate) * 1000));
    }
  }

  return {
    acquire() {
      const turn = line.then(take);
      line = turn.catch(() => {});
      return turn;
    },
    backOff(ms: number) {
      pausedUntil = Math.max(pausedUntil, now() + ms);
      tokens = 0;
    },
  };
}
