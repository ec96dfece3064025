/**
 * What every reconciliation activity shares: the dependencies, Stripe calls paced by a token bucket
 * (429s waited out inside the activity), heartbeats, and the signal-with-start of a customer workflow.
 */
import { heartbeat } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import Stripe from 'stripe';
import { customerWorkflowId } from '../domain/ids';
import type { Config } from '../lib/config';
import type { Sql } from '../lib/db';
import { BillingWorkflowKindKey, StripeCustomerIdKey } from '../workflows/contracts';
import { createTokenBucket, type RateLimiter } from './rate-limit';


export interface ReconciliationDeps {
  sql: Sql;
  stripe: Pick<Stripe, 'subscriptions' | 'events' | 'invoices'>;
  config: Pick<Config, 'TEMPORAL_TASK_QUEUE' | 'STRIPE_RATE_LIMIT_PER_SECOND'>;
  /** Sends the repair signals; required by sendReconcileSignals only. */
  temporalClient?: Client | undefined;
  /** Shared by every reconciliation call in this worker process (default: STRIPE_RATE_LIMIT_PER_SECOND). */
  rateLimiter?: RateLimiter;
  /** First in-activity wait after a 429, doubled per attempt (default 1000 ms). */
  rateLimitBackoffMs?: number;
  now?: () => number;
}


/** 429s retried inside the activity before it fails the attempt (Temporal then retries it, without limit). */
const IN_ACTIVITY_RATE_LIMIT_RETRIES = 4;
const MAX_RATE_LIMIT_BACKOFF_MS = 20_000;
/** Signals in flight at once. */
export const SIGNAL_CONCURRENCY = 10;

/** Heartbeats when running as an activity; a no-op when called directly. */
export function beat(details?: unknown): void {
  try {
    heartbeat(details);
  } catch {
    /* not in an activity context */
  }
}

const isRateLimited = (err: unknown): boolean =>
  err instanceof Stripe.errors.StripeRateLimitError || (err instanceof Stripe.errors.StripeError && err.statusCode === 429);

/** The shared helpers, bound to one set of dependencies. */
export function createReconciliationContext(deps: ReconciliationDeps) {
  const { sql } = deps;
  const limiter = deps.rateLimiter ?? createTokenBucket({ ratePerSecond: deps.config.STRIPE_RATE_LIMIT_PER_SECOND });
  const backoffMs = deps.rateLimitBackoffMs ?? 1000;
  const nowSeconds = () => Math.floor((deps.now?.() ?? Date.now()) / 1000);

  /** Paces one Stripe call and waits out 429s; other errors are rethrown untouched for the caller to map. */
  async function paced<T>(call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      await limiter.acquire();
      try {
        return await call();
      } catch (err) {
        if (!isRateLimited(err)) throw err;
        limiter.backOff(Math.min(MAX_RATE_LIMIT_BACKOFF_MS, backoffMs * 2 ** (attempt - 1)));
        beat({ rateLimited: attempt });
        if (attempt >= IN_ACTIVITY_RATE_LIMIT_RETRIES) throw err;
      }
    }
  }

  async function dbNow(): Promise<Date> {
    const rows = await sql<{ t: Date }[]>`SELECT clock_timestamp() AS t`;
    return rows[0]!.t;
  }

  /** The start half of a signal-with-start of one customer workflow, as the webhook dispatcher sends it. */
  function customerStart(customerId: string) {
    return {
      workflowId: customerWorkflowId(customerId),
      taskQueue: deps.config.TEMPORAL_TASK_QUEUE,
      args: [{ customerId }],
      typedSearchAttributes: [
        { key: StripeCustomerIdKey, value: customerId },
        { key: BillingWorkflowKindKey, value: 'customer' },
      ],
    };
  }

  function requireClient(): Client {
    if (!deps.temporalClient) throw ApplicationFailure.nonRetryable('no Temporal client configured for reconciliation repairs', 'ConfigurationError');
    return deps.temporalClient;
  }

  /** Maps every item through `call`, `concurrency` at a time, heartbeating per chunk; results in item order. */
  async function inChunks<T, R>(items: T[], concurrency: number, call: (item: T) => Promise<R>): Promise<R[]> {
    const out: R[] = [];
    for (let i = 0; i < items.length; i += concurrency) {
      out.push(...(await Promise.all(items.slice(i, i + concurrency).map(call))));
      beat({ done: out.length });
    }
    return out;
  }

  return { deps, sql, stripe: deps.stripe, nowSeconds, paced, dbNow, customerStart, requireClient, inChunks };
}

export type ReconciliationContext = ReturnType<typeof createReconciliationContext>;
