/** Start-up waits for a dependency (Postgres, Temporal): retry with capped, jittered backoff and say what is awaited. */
import { setTimeout as sleep } from 'node:timers/promises';

/** The logger calls waitFor makes (a pino Logger fits). */
export interface WaitForLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface WaitForOptions {
  logger?: WaitForLogger;
  /** First retry delay; doubles per attempt up to maxDelayMs (default 500 ms). */
  initialDelayMs?: number;
  /** Cap of one retry delay (default 15 s). */
  maxDelayMs?: number;
  /** Give up after this long, rethrowing the last error (default: never). */
  timeoutMs?: number;
  /** Whether an error is worth waiting out (default: every error). Others are rethrown at once. */
  retryIf?: (err: unknown) => boolean;
}

/** Thrown when a wait with timeoutMs runs out; `cause` is the last error. */
export class WaitTimeoutError extends Error {
  constructor(what: string, timeoutMs: number, cause: unknown) {
    super(`gave up waiting for ${what} after ${Math.round(timeoutMs / 1000)} s: ${describeError(cause)}`, { cause });
    this.name = 'WaitTimeoutError';
  }
}

/**
 * Calls fn until it resolves and returns its value. Each failure is logged as
 * "waiting for <what>: <error>; retrying in Xs" and retried after a jittered, doubling delay
 * (capped at maxDelayMs). Unbounded unless timeoutMs is set.
 */
export async function waitFor<T>(what: string, fn: () => Promise<T>, opts: WaitForOptions = {}): Promise<T> {
  const initial = opts.initialDelayMs ?? 500;
  const cap = Math.max(opts.maxDelayMs ?? 15_000, initial);
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      const value = await fn();
      if (attempt > 1) opts.logger?.info({ attempts: attempt, waitedMs: Date.now() - started }, `${what} is reachable`);
      return value;
    } catch (err) {
      if (opts.retryIf && !opts.retryIf(err)) throw err;
      const elapsed = Date.now() - started;
      if (opts.timeoutMs !== undefined && elapsed >= opts.timeoutMs) throw new WaitTimeoutError(what, opts.timeoutMs, err);
      // Half fixed, half random: replicas restarted together do not retry in lockstep.
      const base = Math.min(cap, initial * 2 ** (attempt - 1));
      let delay = Math.round(base / 2 + (Math.random() * base) / 2);
      if (opts.timeoutMs !== undefined) delay = Math.max(0, Math.min(delay, opts.timeoutMs - elapsed));
      opts.logger?.warn({ attempt, err: describeError(err) }, `waiting for ${what}: ${describeError(err)}; retrying in ${(delay / 1000).toFixed(1)}s`);
      await sleep(delay);
    }
  }
}

/** One line for a log: the message, plus the cause's when it adds something (Temporal wraps transport errors). */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error && !err.message.includes(err.cause.message) ? `: ${err.cause.message}` : '';
  return `${err.message}${cause}`.replace(/\s+/g, ' ').trim();
}

/**
 * Whether a Postgres error is about the server not being there (connection refused or reset, the
 * server starting up or shutting down, too many connections), rather than about the statement.
 */
export function isTransientPostgresError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== 'string') return err instanceof Error; // a socket error without a SQLSTATE
  // 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now; 53300: too many connections.
  return code.startsWith('08') || /^57P0[1-3]$/.test(code) || code === '53300' || /^E(CONNREFUSED|CONNRESET|PIPE|TIMEDOUT)$|^CONNECT(ION)?_/.test(code);
}

/** `p`, or a rejection after `ms` (the work itself goes on; the caller stops waiting for it). */
export const within = <T>(ms: number, p: Promise<T>): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms).unref())]);
