/**
 * `npm run chaos`: a burst of signed webhooks (default 2,000 events over 200 customers, 20% duplicates,
 * shuffled) against the real stack while the worker is SIGKILLed and restarted (once mid-burst, once
 * right after an apply committed), the Temporal dev server is stopped and restarted on the same db file,
 * PostgreSQL is stopped for a second while deliveries keep coming and started again, and the API is
 * SIGKILLed while its dispatcher holds claimed rows and restarted (their lease, DISPATCH_LEASE_MS, is 3 s
 * here so the new process takes them again soon). The worker also fails a share of applies after their
 * commit (and every apply holding a payment failure or a poison event), and a few customers get a poison
 * event mid-stream: an invoice whose attempt_count overflows its int4 column. The sender retries every
 * non-2xx and connection error like Stripe.
 * Then it checks: no event lost, none applied twice, the poison quarantined and its customer's later
 * events applied, no effect missing or doubled (one dunning cycle, its workflow and one notice per
 * failed, never-paid invoice), every customer's final state equals the state of its events applied in
 * order without faults, and no delivery failed outside the Postgres restart and the API kill (the
 * webhook acknowledges on commit: the worker or Temporal being down only grows the inbox).
 *
 * Replicas (--replicas 2): several API and worker processes on the one Postgres and Temporal. The sender
 * spreads deliveries round-robin over the APIs like a load balancer (a replica that fails to answer
 * leaves the rotation until /readyz answers again; the delivery is retried on another one), and the API
 * and worker kills become `api-replica-kill` / `worker-replica-kill`: the first replica is SIGKILLed and
 * left dead — frozen first (SIGSTOP) while it holds work only a takeover can finish: claims whose signal
 * never landed, events Temporal gave it and it never applied — and the survivors carry the rest: the rows
 * the dead API had claimed are taken over by another dispatcher once their lease ends. The report then counts per replica (deliveries acknowledged, rows
 * claimed, events applied: who claimed and applied what is recorded by chaos-only triggers, keyed by each
 * replica's application_name), and at the end the survivors get SIGTERM and must exit 0 within the bound.
 *
 * Flags: --events N · --customers N · --duplicates 0.2 · --seed N · --concurrency N · --rate N (deliveries/s)
 *        --crash-rate 0.1 (share of applies failed after commit; 0: none) · --poison N (poisoned customers)
 *        --replicas N (API and worker processes) · --api-replicas N · --worker-replicas N
 *        --faults kind:at,… (e.g. api-replica-kill:0.3,worker-replica-kill:0.5) · --graceful-stop
 *        --keep (keep the temp dir with all logs)
 * `runChaos(opts)` is the same run as a function (test/integration/chaos.test.ts runs a lean one).
 */
import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import Stripe from 'stripe';
import { isHandledEventType } from '../domain/events';
import { accessStateFor } from '../domain/subscription-state';
import type { SubscriptionStatus } from '../domain/billing-event';
import { loadFixtureText } from '../test/fixtures';
import { prng } from './bench-load';
import { sleep, startBillingStack, stopActiveStacks, type BillingStack, type ProcessExit, type ServiceProcess } from './bench-stack';
import { startPagingStripeFake, type PagingStripeFake } from './bench-stripe-fake';
import type { Sql } from '../lib/db';
import { freePort, tempDir, waitForPort, type PostgresHandle } from './stack';

/**
 * `api-kill` / `worker-kill` SIGKILL one process (the first replica still running) and restart it;
 * `api-replica-kill` / `worker-replica-kill` SIGKILL it and leave it dead (the other replicas carry on).
 */
export type FaultKind = 'worker-kill' | 'worker-kill-after-commit' | 'temporal-restart' | 'postgres-restart' | 'api-kill' | 'api-replica-kill' | 'worker-replica-kill';

const FAULT_KINDS: readonly FaultKind[] = ['worker-kill', 'worker-kill-after-commit', 'temporal-restart', 'postgres-restart', 'api-kill', 'api-replica-kill', 'worker-replica-kill'];
/** The faults that may fail a delivery: the API cannot store it (Postgres down) or is not there to answer. */
const STORE_FAULTS: ReadonlySet<FaultKind> = new Set(['postgres-restart', 'api-kill', 'api-replica-kill']);
const API_KILLS: ReadonlySet<FaultKind> = new Set(['api-kill', 'api-replica-kill']);
const WORKER_KILLS: ReadonlySet<FaultKind> = new Set(['worker-kill', 'worker-replica-kill']);
/** How long a survivor may take to exit after SIGTERM (the processes' own force timers: api/server.ts, worker/main.ts). */
const STOP_BOUND_MS = { api: 10_000, worker: 30_000 };
/** A delivery failing this soon after Postgres or the API is back still counts as theirs (pool reconnects, recovery). */
const RECOVERY_GRACE_MS = 2000;

export interface ChaosOptions {
  events?: number;
  customers?: number;
  /** Share of events delivered a second time (default 0.2). */
  duplicateRate?: number;
  seed?: number;
  /** Deliveries in flight (default 16). */
  concurrency?: number;
  /** Deliveries started per second (default: events / 20 s), so the faults land inside the burst. */
  ratePerSecond?: number;
  /** Each fault fires once this share of deliveries has been acknowledged (in this order). */
  faults?: { kind: FaultKind; at: number }[];
  /**
   * Share of the worker's applies that fail once after their commit (default 0.1; 0 turns the fault off).
   * Applies holding a payment failure or a poison event always fail once.
   */
  crashAfterCommitRate?: number;
  /** Customers that get a poison event in the middle of their stream (default 1 %, at least 2). */
  poisonCustomers?: number;
  workerDowntimeMs?: number;
  temporalDowntimeMs?: number;
  apiDowntimeMs?: number;
  postgresDowntimeMs?: number;
  /** The API's DISPATCH_LEASE_MS when the API is killed (default 3000): rows it left claimed wait this long. */
  dispatchLeaseMs?: number;
  /** How long to wait after the burst for every event to be applied. */
  drainTimeoutMs?: number;
  /** API processes behind the sender's round-robin balancer (default 1). */
  apiReplicas?: number;
  /** Worker processes on the task queue (default 1). */
  workerReplicas?: number;
  /**
   * At the end, SIGTERM every API and worker still running and record how each exits (code 0 within
   * 10 s for an API, 30 s for a worker, else a violation). Default: on with replicas, off without.
   */
  gracefulStop?: boolean;
  /** PostgreSQL with fsync off (tests only); default durable. */
  fastPostgres?: boolean;
  dir?: string;
  keep?: boolean;
  log?: (line: string) => void;
}

export interface FaultRecord {
  kind: FaultKind;
  /** API and worker kills: the replica killed (`api`, `worker-2`, …). */
  replica?: string;
  /** Deliveries acknowledged when it fired, of the total. */
  firedAtAcked: number;
  /** How long the component was down / the fault took, ms. */
  durationMs: number;
  /**
   * Delivery attempts that got a non-2xx (or no) answer and were in flight while the fault lasted (for
   * Postgres and the API: up to RECOVERY_GRACE_MS after). Each is counted once: for the Postgres restart
   * or the API kill when it overlaps them, otherwise for the first fault it overlaps.
   */
  failedDeliveriesDuring: number;
  /** Those attempts by answer ('503', 'network error', …). */
  failedBy: Record<string, number>;
  /** Longest wait for an answer (2xx or not) among the attempts counted for it as above, failed or not. */
  slowestAnswerMs: number;
  /** Most webhook_events rows waiting 'received' (stored, not yet handed to Temporal) seen while it lasted (null: no reading, Postgres down). */
  inboxPeak: number | null;
  /**
   * api-kill, api-replica-kill: rows the killed API had claimed (its claim the latest, its lease live) and
   * not yet marked 'dispatched'; how many of them an API dispatched again (logged after the kill: after
   * the lease, by the restarted process or a surviving replica); and how long after the kill none of
   * them was 'received' any more.
   */
  orphanedClaims?: {
    rows: number;
    resent: number;
    clearedAfterMs: number | null;
    /** Of those rows, claimed again after the kill (by replica), … */
    takenOver: number;
    reclaimedBy: Record<string, number>;
    /** …and settled without a new claim: the killed API's signal had landed, the worker applied them. */
    settledFromLandedSignal: number;
  };
  /**
   * worker-replica-kill: events handed to Temporal and not yet applied when the worker died (some in its
   * hands), and how long after the kill the survivors had applied them all.
   */
  pendingAtKill?: { events: number; appliedAfterMs: number | null };
}

/** One API replica: deliveries the sender got a 2xx from, and rows its dispatcher claimed. */
export interface ApiReplicaRecord {
  name: string;
  acknowledged: number;
  /** Acknowledged before the first API kill (null: no API was killed). */
  acknowledgedBeforeKill: number | null;
  /** Claims by its dispatcher (a row claimed again after a lease counts again). */
  claimed: number;
  /** SIGKILLed by a replica kill and left dead. */
  killed: boolean;
}

/** One worker replica: events whose apply it committed. */
export interface WorkerReplicaRecord {
  name: string;
  applied: number;
  /** Applied before the first worker kill (null: no worker was killed). */
  appliedBeforeKill: number | null;
  killed: boolean;
}

/** How a process still running at the end answered SIGTERM. */
export interface ShutdownRecord {
  name: string;
  code: number | null;
  signal: string | null;
  ms: number;
  boundMs: number;
}

/** What the crash-after-commit faults did (from the worker's log: the worker is another process). */
export interface CrashRecord {
  rate: number;
  /** Applies failed after their commit (each retried, finding its events applied). */
  injected: number;
  /** Of the payment-failure events (each opens a dunning cycle), how many had an apply crash after commit. */
  paymentFailuresCrashed: number;
  paymentFailures: number;
  /** Poison events whose apply (which quarantined them) crashed after commit. */
  poisonsCrashed: number;
}

export interface ChaosReport {
  ok: boolean;
  violations: string[];
  counts: {
    uniqueEvents: number;
    handled: number;
    ignoredTypes: number;
    deliveries: number;
    duplicateDeliveries: number;
    retriedDeliveries: number;
    non2xx: Record<string, number>;
    /** Failed delivery attempts not in flight during the Postgres restart or the API kill (must be 0). */
    failedOutsideStoreFaults: number;
    applied: number;
    lost: number;
    unexpectedApplied: number;
    notIgnored: number;
    /** Poison events sent; they end 'quarantined', never applied (not counted as lost). */
    poisonEvents: number;
    /** webhook_events rows 'quarantined': poison ones, and any other (a violation). */
    quarantinedPoison: number;
    quarantinedOther: number;
    /** Handled events of poisoned customers created after their poison, and how many of them were applied. */
    laterEventsOfPoisoned: number;
    laterEventsOfPoisonedApplied: number;
    webhookRows: number;
    /** One dunning cycle row per failed, never-paid invoice of the fault-free history. */
    expectedCycles: number;
    cycles: number;
    /** Effects (cycle row, running dunning workflow, delivered notice) of the fault-free history not found. */
    effectsMissing: number;
    /** Effects found more than once (cycle rows, notices for one failure, notification rows per dedup key). */
    effectsDoubled: number;
    /** Effects for customers whose history has no failed payment. */
    effectsUnexpected: number;
    notifications: number;
    distinctNotificationKeys: number;
    expectedNotifications: number;
    deliveredNotifications: number;
    suppressedNotifications: number;
    customersChecked: number;
    stateMismatches: number;
  };
  faults: FaultRecord[];
  crashes: CrashRecord;
  unexpectedExits: { name: string; code: number | null; signal: string | null }[];
  /** Per replica (one entry each without replicas). */
  replicas: { apis: ApiReplicaRecord[]; workers: WorkerReplicaRecord[] };
  /** gracefulStop: the survivors' SIGTERM exits (empty otherwise). */
  shutdowns: ShutdownRecord[];
  timings: { stackMs: number; burstMs: number; drainMs: number; totalMs: number };
  dir: string;
}

// ---------------------------------------------------------------- the event stream

interface Expected {
  customerId: string;
  subscription: { status: SubscriptionStatus; priceId: string; cancelAtPeriodEnd: boolean; currentPeriodEnd: number };
  email: string | null;
  name: string | null;
  invoice: { id: string; status: string; amountPaid: number } | null;
  accessState: string;
  /** Stripe's subscription id (served, in its final state, by the Stripe fake). */
  subscriptionId: string;
  /** A payment failed on a second invoice: one dunning cycle opens and sends exactly one notice. */
  dunning: boolean;
  /** That invoice (never paid): the key of the one dunning cycle. */
  failedInvoiceId: string | null;
}

/** What must become of an event: applied once, recorded as an ignored type, or set aside (a poison). */
type EventFate = 'applied' | 'ignored' | 'quarantined';

/** A poison event and the events of its customer that come after it (all of which must be applied). */
interface Poison {
  eventId: string;
  customerId: string;
  invoiceId: string;
  laterEventIds: string[];
}

interface Stream {
  /** Every unique event, body text as Stripe would send it. */
  events: { id: string; body: string; fate: EventFate }[];
  /** Deliveries in send order: unique events plus duplicates, shuffled. */
  deliveries: string[];
  expected: Expected[];
  poisons: Poison[];
}

/** attempt_count 2^31: a valid integer for Stripe and the ingest, one past what the int4 column holds (SQLSTATE 22003). */
const POISON_ATTEMPT_COUNT = 2 ** 31;
/** Event-id endings of payment failures and poisons (see `id(what)`): every apply holding one fails once after its commit. */
const FAILED_ID_SUFFIX = '_failed';
const POISON_ID_SUFFIX = '_poison';

const SUB_STATUSES: SubscriptionStatus[] = ['active', 'past_due', 'unpaid', 'active', 'trialing', 'canceled', 'active'];
const PRICES = ['price_ProMonthly', 'price_BasicMonthly', 'price_TeamMonthly'];
const IGNORED_TYPES = ['charge.updated', 'product.updated', 'payment_intent.created'];

function fixture(type: string, token: string): any {
  return JSON.parse(loadFixtureText(type).replace(/_Fixture/g, `_${token}`).replace(/Fixture/g, token));
}

/**
 * Builds each customer's events with strictly increasing `created` per customer (no same-second ties),
 * so the fault-free result is computable: the last subscription / customer event wins, the invoice ends
 * paid. A poisoned customer's poison sits in the middle of its stream, on an invoice of its own, so it
 * changes nothing of the fault-free result.
 */
export function buildStream(opts: { events: number; customers: number; duplicateRate: number; seed: number; runTag: string; poisonCustomers: number }): Stream {
  const handledNow = IGNORED_TYPES.filter((t) => isHandledEventType(t));
  if (handledNow.length) throw new Error(`chaos: ${handledNow.join(', ')} is handled now; pick other types for IGNORED_TYPES`);
  const rand = prng(opts.seed);
  const events: Stream['events'] = [];
  const expected: Expected[] = [];
  const poisons: Poison[] = [];
  // Spread over the customers, deterministically.
  const poisoned = new Set(Array.from({ length: Math.min(opts.poisonCustomers, opts.customers) }, (_, i) => Math.floor(((i + 0.5) * opts.customers) / opts.poisonCustomers)));
  const per = Math.floor(opts.events / opts.customers);
  let extra = opts.events - per * opts.customers;
  for (let c = 0; c < opts.customers; c++) {
    const n = per + (extra-- > 0 ? 1 : 0);
    const token = `${opts.runTag}K${c}`;
    const customerId = `cus_${token}Customer01`;
    let created = 1_790_000_000 + c * 10_000;
    let k = 0;
    const id = (what: string) => `evt_${token}_${k++}_${what}`;
    // Composition: an invoice pair when there is room, an ignored type now and then, customer updates, the rest subscription updates.
    const plan: string[] = [];
    if (n >= 5) plan.push('invoice.finalized', 'invoice.paid');
    if (n >= 4 && rand() < 0.6) plan.push(IGNORED_TYPES[Math.floor(rand() * IGNORED_TYPES.length)]!);
    if (n >= 3) plan.push('customer.updated');
    // Every tenth customer with room: a payment fails on a second invoice, which opens a dunning cycle.
    if (n >= 6 && c % 10 === 5) plan.push('invoice.payment_failed');
    while (plan.length < n) plan.push(rand() < 0.2 ? 'customer.updated' : 'customer.subscription.updated');
    // Random order in time, except that the invoice is finalized before it is paid.
    for (let i = plan.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [plan[i], plan[j]] = [plan[j]!, plan[i]!];
    }
    const fin = plan.indexOf('invoice.finalized');
    const paid = plan.indexOf('invoice.paid');
    if (fin > paid && paid >= 0) [plan[fin], plan[paid]] = [plan[paid]!, plan[fin]!];
    if (poisoned.has(c) && plan.length >= 2) plan.splice(Math.floor(plan.length / 2), 0, 'poison');
    const firstOfCustomer = events.length;
    let poison: { eventId: string; invoiceId: string; created: number } | null = null;

    let sub: Expected['subscription'] | null = null;
    let email: string | null = null;
    let name: string | null = null;
    let invoice: Expected['invoice'] = null;
    let subscriptionId = '';
    let lastSubEvent = -1;
    const dunning = plan.includes('invoice.payment_failed');
    const failedInvoiceId = dunning ? `in_${token}Failed01` : null;
    for (const type of plan) {
      created += 1 + Math.floor(rand() * 3);
      if (type === 'customer.subscription.updated') {
        const env = fixture(type, token);
        env.id = id('sub');
        env.created = created;
        const o = env.data.object;
        // Canceled is terminal at Stripe: a customer whose payment fails keeps a live subscription (a
        // 'canceled' event would end its dunning cycle before the notice, whatever order it arrives in).
        const statuses = dunning ? SUB_STATUSES.filter((x) => x !== 'canceled') : SUB_STATUSES;
        o.status = statuses[Math.floor(rand() * statuses.length)];
        const item = o.items.data[0];
        item.price.id = PRICES[Math.floor(rand() * PRICES.length)];
        // Older API versions also carry the legacy `plan` on the item.
        if (item.plan) item.plan.id = item.price.id;
        o.cancel_at_period_end = rand() < 0.3;
        o.items.data[0].current_period_end = 1_800_000_000 + Math.floor(rand() * 1_000_000);
        sub = { status: o.status, priceId: o.items.data[0].price.id, cancelAtPeriodEnd: o.cancel_at_period_end, currentPeriodEnd: o.items.data[0].current_period_end };
        subscriptionId = o.id;
        lastSubEvent = events.length;
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
      } else if (type === 'customer.updated') {
        const env = fixture(type, token);
        env.id = id('cus');
        env.created = created;
        // A profile change only: the fixture's previous_attributes records a default payment method change,
        // which during an open dunning cycle would retry the invoice (not part of this fault-free history).
        env.data.previous_attributes = { email, name };
        env.data.object.email = `c${c}.${k}@example.test`;
        env.data.object.name = `Customer ${c} v${k}`;
        email = env.data.object.email;
        name = env.data.object.name;
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
      } else if (type === 'invoice.finalized' || type === 'invoice.paid') {
        const env = fixture(type, token);
        env.id = id(type === 'invoice.paid' ? 'paid' : 'fin');
        env.created = created;
        env.data.object.status = type === 'invoice.paid' ? 'paid' : 'open';
        if (type === 'invoice.paid') invoice = { id: env.data.object.id, status: 'paid', amountPaid: env.data.object.amount_paid };
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
      } else if (type === 'invoice.payment_failed') {
        const env = fixture(type, token);
        env.id = id('failed');
        // The failure happened now: the cycle's first retry is a day away, so within the run it only
        // opens the cycle, holds access at 'grace' and sends its one "payment failed" notice.
        env.created = Math.floor(Date.now() / 1000);
        env.data.object.id = failedInvoiceId;
        env.data.object.status = 'open';
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
      } else if (type === 'poison') {
        // Verified and well-formed, but no row can hold it. On an invoice of its own, so no newer event of
        // the same object can make it stale (a stale event writes nothing and would not fail).
        const env = fixture('invoice.finalized', token);
        env.id = id('poison');
        env.created = created;
        env.data.object.id = `in_${token}Poison01`;
        env.data.object.status = 'open';
        env.data.object.attempt_count = POISON_ATTEMPT_COUNT;
        poison = { eventId: env.id, invoiceId: env.data.object.id, created };
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'quarantined' });
      } else {
        // A type this engine does not act on: stored as 'ignored', acknowledged, never applied.
        const env = { id: id('ign'), object: 'event', api_version: '2025-03-31.basil', created, livemode: false, type, data: { object: { id: `obj_${token}_${k}`, object: type.split('.')[0], customer: customerId } } };
        events.push({ id: env.id, body: JSON.stringify(env), fate: 'ignored' });
      }
    }
    if (!sub) {
      // The random plan drew no subscription event: add one, so every customer's final state is checkable.
      const env = fixture('customer.subscription.updated', token);
      created += 1;
      env.id = id('sub');
      env.created = created;
      const o = env.data.object;
      sub = { status: o.status, priceId: o.items.data[0].price.id, cancelAtPeriodEnd: o.cancel_at_period_end, currentPeriodEnd: o.items.data[0].current_period_end };
      subscriptionId = o.id;
      lastSubEvent = events.length;
      events.push({ id: env.id, body: JSON.stringify(env), fate: 'applied' });
    }
    if (dunning) {
      // A failed renewal leaves the subscription past_due (as Stripe does): its latest event says so.
      const last = JSON.parse(events[lastSubEvent]!.body);
      last.data.object.status = 'past_due';
      events[lastSubEvent]!.body = JSON.stringify(last);
      sub.status = 'past_due';
    }
    const access = accessStateFor(sub.status);
    // As refreshAccessState: an open dunning cycle holds an active customer at 'grace'.
    const accessState = dunning && (access === 'active' || access === 'grace') ? 'grace' : access;
    expected.push({ customerId, subscription: sub, email, name, invoice, accessState, subscriptionId, dunning, failedInvoiceId });
    if (poison) {
      const p = poison;
      const laterEventIds = events
        .slice(firstOfCustomer)
        .filter((e) => e.fate === 'applied' && (JSON.parse(e.body) as { created: number }).created > p.created)
        .map((e) => e.id);
      poisons.push({ eventId: p.eventId, customerId, invoiceId: p.invoiceId, laterEventIds });
    }
  }
  const ids = events.map((e) => e.id);
  const deliveries = [...ids, ...ids.filter(() => rand() < opts.duplicateRate)];
  for (let i = deliveries.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [deliveries[i], deliveries[j]] = [deliveries[j]!, deliveries[i]!];
  }
  return { events, deliveries, expected, poisons };
}

// ---------------------------------------------------------------- sending like Stripe

function post(agent: http.Agent, url: URL, body: string, signature: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        timeout: 30_000,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'stripe-signature': signature },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(0));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end(body);
  });
}

/**
 * The sender's load balancer over the API replicas: round-robin over those in rotation. A replica that
 * fails to answer (connection refused or reset) leaves the rotation and is probed on /readyz until it
 * answers again, like a proxy's passive outlier detection plus its active health check. With one replica
 * it never ejects: every attempt goes to it, as before.
 */
function createBalancer(urls: string[], probeMs = 250) {
  const inRotation = urls.map(() => true);
  const probes: Promise<void>[] = [];
  let turn = 0;
  let stopped = false;
  return {
    /** The index of the replica for the next attempt (all of them when none is in rotation). */
    pick(): number {
      const live = urls.map((_, i) => i).filter((i) => inRotation[i]);
      const from = live.length ? live : urls.map((_, i) => i);
      return from[turn++ % from.length]!;
    },
    eject(i: number): void {
      if (urls.length === 1 || !inRotation[i]) return;
      inRotation[i] = false;
      probes.push(
        (async () => {
          while (!stopped && !inRotation[i]) {
            await sleep(probeMs);
            if (await fetch(`${urls[i]}/readyz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false)) inRotation[i] = true;
          }
        })(),
      );
    },
    inRotation: (i: number) => inRotation[i]!,
    async stop(): Promise<void> {
      stopped = true;
      await Promise.all(probes);
    },
  };
}

// ---------------------------------------------------------------- the run

/** Runs one chaos scenario on a private stack and returns what it found (never throws for violations). */
export async function runChaos(options: ChaosOptions = {}): Promise<ChaosReport> {
  const apiReplicas = Math.max(1, Math.floor(options.apiReplicas ?? 1));
  const workerReplicas = Math.max(1, Math.floor(options.workerReplicas ?? 1));
  const o = {
    events: options.events ?? 2000,
    customers: options.customers ?? 200,
    duplicateRate: options.duplicateRate ?? 0.2,
    seed: options.seed ?? 20261127,
    concurrency: options.concurrency ?? 16,
    faults: options.faults ?? [
      // First: every claim is then an in-flight pass (after a Temporal outage, rows released with a backoff
      // look the same; while the worker restarts, admission may hold every claim back), and the lease
      // runs out while the burst goes on. With replicas, the killed one stays dead.
      { kind: apiReplicas > 1 ? ('api-replica-kill' as const) : ('api-kill' as const), at: 0.1 },
      { kind: workerReplicas > 1 ? ('worker-replica-kill' as const) : ('worker-kill' as const), at: 0.2 },
      { kind: 'temporal-restart' as const, at: 0.4 },
      { kind: 'worker-kill-after-commit' as const, at: 0.55 },
      { kind: 'postgres-restart' as const, at: 0.75 },
    ],
    crashAfterCommitRate: options.crashAfterCommitRate ?? 0.1,
    poisonCustomers: options.poisonCustomers ?? Math.max(2, Math.round((options.customers ?? 200) / 100)),
    workerDowntimeMs: options.workerDowntimeMs ?? 1000,
    temporalDowntimeMs: options.temporalDowntimeMs ?? 3000,
    apiDowntimeMs: options.apiDowntimeMs ?? 1000,
    postgresDowntimeMs: options.postgresDowntimeMs ?? 1000,
    dispatchLeaseMs: options.dispatchLeaseMs ?? 3000,
    drainTimeoutMs: options.drainTimeoutMs ?? 240_000,
    gracefulStop: options.gracefulStop ?? (apiReplicas > 1 || workerReplicas > 1),
  };
  for (const f of o.faults) if (!FAULT_KINDS.includes(f.kind)) throw new Error(`chaos: unknown fault ${String(f.kind)}`);
  // A replica kill leaves its replica dead: at least one of each must survive every one of them.
  const replicaKills = (kind: FaultKind) => o.faults.filter((f) => f.kind === kind).length;
  if (replicaKills('api-replica-kill') >= apiReplicas) throw new Error(`chaos: ${replicaKills('api-replica-kill')} api-replica-kill need more than ${apiReplicas} API replicas (--api-replicas)`);
  if (replicaKills('worker-replica-kill') >= workerReplicas) throw new Error(`chaos: ${replicaKills('worker-replica-kill')} worker-replica-kill need more than ${workerReplicas} worker replicas (--worker-replicas)`);
  const log = options.log ?? ((s: string) => process.stderr.write(`[chaos] ${s}\n`));
  const t0 = Date.now();
  const dir = options.dir ?? tempDir('billing-chaos');
  const stream = buildStream({
    events: o.events,
    customers: o.customers,
    duplicateRate: o.duplicateRate,
    seed: o.seed,
    runTag: `X${o.seed.toString(36)}`,
    poisonCustomers: o.poisonCustomers,
  });
  const rate = options.ratePerSecond ?? Math.max(5, stream.deliveries.length / 20);
  const byId = new Map(stream.events.map((e) => [e.id, e]));
  const violations: string[] = [];
  const unexpectedExits: ChaosReport['unexpectedExits'] = [];
  // The worker's test-only fault hooks (worker/main.ts; refused with NODE_ENV=production, the stack's default).
  const killFile = path.join(dir, 'kill-worker-after-commit');
  const killAfterCommit = o.faults.some((f) => f.kind === 'worker-kill-after-commit');
  const workerFaultEnv: Record<string, string> = {
    ...(o.crashAfterCommitRate > 0
      ? { FAULT_AFTER_COMMIT_RATE: String(o.crashAfterCommitRate), FAULT_SEED: String(o.seed), FAULT_AFTER_COMMIT_FOCUS: `${FAILED_ID_SUFFIX},${POISON_ID_SUFFIX}` }
      : {}),
    ...(killAfterCommit ? { FAULT_KILL_AFTER_COMMIT_FILE: killFile } : {}),
  };
  /** Set while the worker is armed to SIGKILL itself after a commit: its exit is the fault, not a crash. */
  let killArmed = false;
  // Rows a killed API left claimed wait for their lease; the default 30 s would only stretch the drain.
  // With one API process a lease shorter than a slow pass takes nothing from a live claim; with replicas
  // another one may take it and signal those events twice, which the workflow drops (applied once).
  const apiKill = o.faults.some((f) => API_KILLS.has(f.kind));
  /** The inbox sampler runs while this is set (cleared at the end of the drain, or when the run fails). */
  let sampling = false;

  let stack: BillingStack | null = null;
  let fake: PagingStripeFake | null = null;
  try {
    stack = await startBillingStack({
      dir,
      log,
      // Stripe's side of the story for reads (a dunning cycle syncs the subscription it failed on):
      // each subscription in its final state, the one the events lead to; the rest goes to stripe-mock.
      stripeApiBase: async (mockUrl) => {
        fake = await startPagingStripeFake({ port: await freePort(), upstream: mockUrl });
        fake.setSubscriptions(
          stream.expected.map((e) => ({
            id: e.subscriptionId,
            customer: e.customerId,
            status: e.subscription.status,
            priceId: e.subscription.priceId,
            currentPeriodStart: null,
            currentPeriodEnd: e.subscription.currentPeriodEnd,
            cancelAtPeriodEnd: e.subscription.cancelAtPeriodEnd,
          })),
        );
        return fake.url;
      },
      fastPostgres: options.fastPostgres ?? false,
      workerEnv: Object.keys(workerFaultEnv).length ? { NODE_ENV: 'test', ...workerFaultEnv } : {},
      apiEnv: apiKill ? { DISPATCH_LEASE_MS: String(o.dispatchLeaseMs) } : {},
      apiReplicas,
      workerReplicas,
      supervise: true,
      onUnexpectedExit: (name: string, exit: ProcessExit) => {
        if (name.startsWith('worker') && killArmed) {
          killArmed = false;
          log(`  ${name} SIGKILLed itself after a commit (${exit.code ?? exit.signal}); the stack restarts it`);
          return;
        }
        unexpectedExits.push({ name, code: exit.code, signal: exit.signal });
        log(`${name} exited on its own (${exit.code ?? exit.signal}); restarting it so the run can finish, but the run fails`);
      },
    });
    const s = stack;
    await installAudit(s.sql);
    const stackMs = Date.now() - t0;
    const over = s.apis.length > 1 ? ` over ${s.apis.length} APIs` : '';
    log(`sending ${stream.deliveries.length} deliveries (${stream.events.length} unique events over ${o.customers} customers) at ≤ ${Math.round(rate)}/s, ${o.concurrency} in flight${over}`);
    /** Who claimed / applied what: each replica's sessions carry application_name `billing-<name>` (bench-stack). */
    const appOf = (p: ServiceProcess) => `billing-${p.name}`;
    const replicaOf = (app: string) => app.replace(/^billing-/, '');

    // The sender: paced, retries every non-2xx and connection error with backoff like Stripe (compressed
    // from hours to seconds), each attempt to the next API in the balancer's rotation.
    const balancer = createBalancer(s.apiUrls);
    const webhookUrls = s.apiUrls.map((u) => new URL(`${u}/webhooks/stripe`));
    const ackedBy = s.apiUrls.map(() => 0);
    const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
    const non2xx: Record<string, number> = {};
    let acked = 0;
    let retried = 0;
    const failedAttempts: { start: number; end: number; key: string }[] = [];
    /** Every attempt's [start, end], for the slowest answer during each fault. */
    const attemptTimes: { start: number; end: number }[] = [];
    let next = 0;
    const burstStart = Date.now();

    // The inbox: rows stored and not yet handed over, sampled until the drain ends (a failed read, during
    // the Postgres restart, is skipped).
    const inboxSamples: { at: number; received: number }[] = [];
    sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const received = await s.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_events WHERE status = 'received'`.then((r) => r[0]!.n, () => -1);
        if (received >= 0) inboxSamples.push({ at: Date.now(), received });
        await sleep(200);
      }
    })();
    const deliver = async (eventId: string) => {
      const ev = byId.get(eventId)!;
      for (let attempt = 0; ; attempt++) {
        const signature = Stripe.webhooks.generateTestHeaderString({ payload: ev.body, secret: s.webhookSecret });
        const target = balancer.pick();
        const attemptStart = Date.now();
        const status = await post(agent, webhookUrls[target]!, ev.body, signature);
        attemptTimes.push({ start: attemptStart, end: Date.now() });
        if (status >= 200 && status < 300) {
          ackedBy[target]!++;
          break;
        }
        if (status === 0) balancer.eject(target);
        const key = status === 0 ? 'network error' : String(status);
        non2xx[key] = (non2xx[key] ?? 0) + 1;
        failedAttempts.push({ start: attemptStart, end: Date.now(), key });
        if (attempt === 0) retried++;
        if (Date.now() - burstStart > 20 * 60_000) throw new Error(`delivery of ${eventId} never acknowledged`);
        await sleep(Math.min(2000, 100 * 2 ** Math.min(attempt, 5)));
      }
      acked++;
    };
    const sender = Promise.all(
      Array.from({ length: o.concurrency }, async () => {
        for (;;) {
          const i = next++;
          if (i >= stream.deliveries.length) return;
          const due = burstStart + (i * 1000) / rate;
          if (due > Date.now()) await sleep(due - Date.now());
          await deliver(stream.deliveries[i]!);
        }
      }),
    );

    // The faults, in order, each once its share of the burst has been acknowledged. A restarting worker
    // does not hold back the next fault (re-bundling the workflows takes a while on a small machine); the
    // other faults do not overlap. While Temporal is down the burst goes on (the webhook acknowledges on
    // commit), so the next fault may fire as soon as it is back.
    const faults: FaultRecord[] = [];
    const windows = new Map<FaultRecord, [number, number]>();
    const background: Promise<void>[] = [];
    /** Watches that outlive the burst (they must not hold back its end). */
    const watches: Promise<void>[] = [];
    /** API kills: the rows the killed API left claimed, the last claim id before them, and when it was killed. */
    const orphansOf = new Map<FaultRecord, { eventIds: string[]; claimMark: number; killedAt: number }>();
    /** Replicas SIGKILLed and left dead. */
    const leftDead = new Set<ServiceProcess>();
    /** Per-API acknowledgements when the first API was killed; the last apply id when the first worker was. */
    let ackedBeforeApiKill: number[] | null = null;
    let applyMarkAtWorkerKill: number | null = null;
    const lastApplyId = () => s.sql<{ id: number }[]>`SELECT coalesce(max(id), 0)::bigint AS id FROM chaos_applies`.then((r) => r[0]!.id);
    /**
     * A replica kill lands when the victim holds work only a takeover can finish: it is frozen (SIGSTOP)
     * as soon as `holds()` finds something, and killed if something is still held a second later (what
     * was about to settle has settled: a signal that had landed, an apply that had committed); otherwise
     * it goes on and the look starts again. After 10 s without, it is killed as it is. Returns the freeze time.
     */
    const freezeHolding = async (victim: ServiceProcess, holds: () => Promise<unknown[]>): Promise<number> => {
      const lookUntil = Date.now() + 10_000;
      for (;;) {
        while ((await holds()).length === 0 && Date.now() < lookUntil) await sleep(2);
        victim.pause();
        const frozenAt = Date.now();
        await sleep(1000);
        if ((await holds()).length > 0 || Date.now() >= lookUntil) return frozenAt;
        victim.resume();
      }
    };
    const injector = (async () => {
      for (const f of o.faults) {
        while (acked < f.at * stream.deliveries.length && next < stream.deliveries.length) await sleep(50);
        const record: FaultRecord = { kind: f.kind, firedAtAcked: acked, durationMs: 0, failedDeliveriesDuring: 0, failedBy: {}, slowestAnswerMs: 0, inboxPeak: 0 };
        faults.push(record);
        let started = Date.now();
        const done = () => {
          record.durationMs = Date.now() - started;
          windows.set(record, [started, Date.now()]);
          log(`  ${f.kind} recovered after ${record.durationMs} ms`);
        };
        log(`fault: ${f.kind} at ${acked}/${stream.deliveries.length} acknowledged`);
        if (WORKER_KILLS.has(f.kind)) {
          const victim = s.workers.find((w) => w.running) ?? s.worker;
          record.replica = victim.name;
          if (f.kind === 'worker-kill') {
            applyMarkAtWorkerKill ??= await lastApplyId();
            await victim.kill9();
            background.push(
              (async () => {
                await sleep(o.workerDowntimeMs);
                victim.start();
                await s.waitWorkerReady(undefined, [victim]);
                done();
              })(),
            );
          } else {
            // Left dead: what it had in hand (its cached workflows' tasks, local activities, activities)
            // times out and moves to the survivors. Frozen while Temporal has events not yet applied, and
            // killed if some still are a second later (in its hands: a survivor would have applied them).
            const pendingNow = () =>
              s.sql<{ event_id: string }[]>`SELECT event_id FROM webhook_events WHERE status = 'dispatched'`.then((r) => r.map((x) => x.event_id), () => []);
            started = await freezeHolding(victim, pendingNow);
            record.firedAtAcked = acked;
            const pending = await pendingNow();
            applyMarkAtWorkerKill ??= await lastApplyId();
            const killedAt = Date.now();
            await victim.kill9();
            leftDead.add(victim);
            log(`  ${victim.name} SIGKILLed and left dead with ${pending.length} events handed to Temporal and not yet applied`);
            const pendingAtKill: NonNullable<FaultRecord['pendingAtKill']> = { events: pending.length, appliedAfterMs: null };
            record.pendingAtKill = pendingAtKill;
            watches.push(
              (async () => {
                const deadline = Date.now() + o.drainTimeoutMs;
                while (pending.length && Date.now() < deadline) {
                  const left = await s.sql<{ n: number }[]>`
                    SELECT count(*)::int AS n FROM unnest(${pending}::text[]) AS p(event_id)
                    WHERE NOT EXISTS (SELECT 1 FROM applied_events a WHERE a.event_id = p.event_id)
                      AND NOT EXISTS (SELECT 1 FROM webhook_events w WHERE w.event_id = p.event_id AND w.status IN ('quarantined', 'ignored', 'failed'))`.then((r) => r[0]!.n, () => -1);
                  if (left === 0) break;
                  await sleep(100);
                }
                if (Date.now() < deadline) pendingAtKill.appliedAfterMs = Date.now() - killedAt;
                done();
              })(),
            );
          }
        } else if (f.kind === 'worker-kill-after-commit') {
          // A worker deletes the file and SIGKILLs itself right after its next apply commits, before the
          // task completes (worker/main.ts); the supervising stack restarts it a second later.
          const exitsOf = () => s.workers.map((w) => w.exits.length);
          const exitsBefore = exitsOf();
          const exited = () => s.workers.find((w, i) => w.exits.length > exitsBefore[i]!);
          killArmed = true;
          writeFileSync(killFile, '');
          background.push(
            (async () => {
              const deadline = Date.now() + o.drainTimeoutMs;
              while (!exited() && Date.now() < deadline) await sleep(50);
              const w = exited();
              if (!w) {
                killArmed = false;
                rmSync(killFile, { force: true });
                violations.push('fault worker-kill-after-commit never fired: no apply committed after it was armed');
                return;
              }
              record.replica = w.name;
              started = w.exits[exitsBefore[s.workers.indexOf(w)]!]!.at;
              await s.waitWorkerReady(undefined, [w]);
              done();
            })(),
          );
        } else if (f.kind === 'temporal-restart') {
          // The webhook keeps answering 200: the dispatcher keeps the rows 'received' and backs off.
          await s.temporal.kill('SIGTERM');
          await sleep(o.temporalDowntimeMs);
          await s.temporal.start();
          done();
        } else if (f.kind === 'postgres-restart') {
          await restartPostgres(s.pg, o.postgresDowntimeMs);
          done();
        } else {
          // Killed while its dispatcher holds claims (rows claimed, signal maybe sent, not yet marked
          // 'dispatched'): once their lease ends a live dispatcher (the restarted process, or another
          // replica) takes them again and re-sends them; the workflow drops what it already has. The claims
          // live for one pass, so look for them closely. Held = the replica's claim is the row's latest.
          const victim = s.apis.find((a) => a.running) ?? s.api;
          const victimIndex = s.apis.indexOf(victim);
          record.replica = victim.name;
          const held = () =>
            s.sql<{ mark: number; ids: string[] }[]>`
              SELECT (SELECT coalesce(max(id), 0) FROM chaos_claims)::bigint AS mark, coalesce(array_agg(w.event_id), '{}') AS ids
              FROM webhook_events w
              WHERE w.status = 'received' AND w.dispatch_claimed_until > now()
                AND (SELECT c.replica FROM chaos_claims c WHERE c.event_id = w.event_id ORDER BY c.id DESC LIMIT 1) = ${appOf(victim)}`.then(
              (r) => r[0]!,
              () => ({ mark: 0, ids: [] as string[] }),
            );
          if (f.kind === 'api-kill') {
            const lookUntil = Date.now() + 10_000;
            while ((await held()).ids.length === 0 && Date.now() < lookUntil) await sleep(2);
            started = Date.now();
          } else {
            // Left dead, so frozen first: killed holding a claim whose signal never landed, which only the
            // survivors' dispatchers can hand over (once its lease ends).
            started = await freezeHolding(victim, () => held().then((h) => h.ids));
          }
          record.firedAtAcked = acked;
          ackedBeforeApiKill ??= [...ackedBy];
          const killedAt = Date.now();
          await victim.kill9();
          // What the dead process left claimed (a pass may have marked some between the look and the kill).
          const { ids: orphans, mark } = await held();
          const orphaned: NonNullable<FaultRecord['orphanedClaims']> = { rows: orphans.length, resent: 0, clearedAfterMs: null, takenOver: 0, reclaimedBy: {}, settledFromLandedSignal: 0 };
          orphansOf.set(record, { eventIds: orphans, claimMark: mark, killedAt });
          record.orphanedClaims = orphaned;
          log(`  ${victim.name} SIGKILLed at ${acked}/${stream.deliveries.length} acknowledged with ${orphans.length} rows claimed by its dispatcher`);
          if (orphans.length === 0) violations.push(`fault ${f.kind}: the dispatcher of ${victim.name} held no claim when it was killed (none seen within 10 s)`);
          else {
            watches.push(
              (async () => {
                const deadline = Date.now() + o.drainTimeoutMs;
                while (Date.now() < deadline) {
                  const left = await s.sql<{ n: number }[]>`
                    SELECT count(*)::int AS n FROM webhook_events WHERE event_id IN ${s.sql(orphans)} AND status = 'received'`.then((r) => r[0]!.n, () => -1);
                  if (left === 0) {
                    orphaned.clearedAfterMs = Date.now() - killedAt;
                    log(`  the ${orphans.length} rows ${victim.name} had claimed left 'received' ${orphaned.clearedAfterMs} ms after the kill`);
                    return;
                  }
                  await sleep(100);
                }
              })(),
            );
          }
          if (f.kind === 'api-kill') {
            await sleep(o.apiDowntimeMs);
            victim.start();
            await s.waitApiReady(undefined, [victim]);
          } else {
            // Left dead: the survivors carry the burst once the balancer has taken it out of rotation
            // (at its first failed delivery; with nothing sent its way, after 5 s).
            leftDead.add(victim);
            const until = Date.now() + 5000;
            while (balancer.inRotation(victimIndex) && next < stream.deliveries.length && Date.now() < until) await sleep(10);
          }
          done();
        }
      }
      await Promise.all(background);
    })();
    await Promise.all([sender, injector]);
    agent.destroy();
    await balancer.stop();
    const burstMs = Date.now() - burstStart;
    const burstEndAcked = faults.filter((f) => f.firedAtAcked >= stream.deliveries.length);
    for (const f of burstEndAcked) violations.push(`fault ${f.kind} fired after the burst had finished (raise events or lower --rate)`);
    log(`burst done in ${burstMs} ms: ${acked} acknowledged, ${retried} deliveries needed retries (${JSON.stringify(non2xx)})`);

    // Wait for every handled event to be applied and every poison set aside (the dispatcher, claims
    // taken again after their lease, and Temporal retries finish the work).
    const handled = stream.events.filter((e) => e.fate === 'applied').map((e) => e.id);
    const poisonIds = stream.poisons.map((p) => p.eventId);
    const drainStart = Date.now();
    let appliedCount = 0;
    let quarantinedCount = 0;
    while (Date.now() - drainStart < o.drainTimeoutMs) {
      appliedCount = await s.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM applied_events`.then((r) => r[0]!.n, () => -1);
      quarantinedCount = await s.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_events WHERE status = 'quarantined'`.then((r) => r[0]!.n, () => -1);
      if (appliedCount >= handled.length && quarantinedCount >= poisonIds.length) break;
      await sleep(250);
    }
    const drainMs = Date.now() - drainStart;
    log(`applied ${appliedCount}/${handled.length} handled events, quarantined ${quarantinedCount}/${poisonIds.length} poison events ${drainMs} ms after the burst`);
    sampling = false;
    await Promise.all([sampler, ...watches]);
    // Each attempt goes to one fault it was in flight during: the Postgres restart or the API kill when it
    // overlaps them (with a grace for reconnecting), else the first other one, else none. Counted now that
    // every fault has its window (a watch may close one after the burst).
    const overlaps = (a: { start: number; end: number }, [from, to]: [number, number], graceMs: number) => a.start <= to + graceMs && a.end >= from;
    const ordered = [...windows].sort(([a], [b]) => Number(STORE_FAULTS.has(b.kind)) - Number(STORE_FAULTS.has(a.kind)));
    const faultOf = (a: { start: number; end: number }) => ordered.find(([record, w]) => overlaps(a, w, STORE_FAULTS.has(record.kind) ? RECOVERY_GRACE_MS : 0))?.[0];
    for (const a of attemptTimes) {
      const record = faultOf(a);
      if (record) record.slowestAnswerMs = Math.max(record.slowestAnswerMs, a.end - a.start);
    }
    let failedOutsideStoreFaults = 0;
    for (const a of failedAttempts) {
      const record = faultOf(a);
      if (record) {
        record.failedDeliveriesDuring++;
        record.failedBy[a.key] = (record.failedBy[a.key] ?? 0) + 1;
      }
      if (!record || !STORE_FAULTS.has(record.kind)) failedOutsideStoreFaults++;
    }
    if (failedOutsideStoreFaults > 0) {
      const examples = failedAttempts
        .filter((a) => !ordered.some(([record, w]) => STORE_FAULTS.has(record.kind) && overlaps(a, w, RECOVERY_GRACE_MS)))
        .slice(0, 3)
        .map((a) => `${a.key} at +${a.start - burstStart} ms`);
      violations.push(`${failedOutsideStoreFaults} delivery attempts failed outside the Postgres restart and the API kill (the webhook acknowledges on commit), e.g. ${examples.join(', ')}`);
    }
    for (const [record, [from, to]] of windows) {
      const seen = inboxSamples.filter((x) => x.at >= from && x.at <= to);
      record.inboxPeak = seen.length ? Math.max(...seen.map((x) => x.received)) : null;
    }
    for (const [f, { eventIds, claimMark, killedAt }] of orphansOf) {
      const oc = f.orphanedClaims!;
      if (oc.rows > 0 && oc.clearedAfterMs === null) violations.push(`fault ${f.kind}: rows the killed API had claimed were still 'received' at the end`);
      const later = new Set(s.apis.flatMap((a) => readApiDispatchedSince(path.join(dir, `${a.name}.log`), killedAt)));
      oc.resent = eventIds.filter((id) => later.has(id)).length;
      if (eventIds.length === 0) continue;
      // Claimed again after the kill: only a live process can (the restarted one, or another replica).
      const reclaims = await s.sql<{ event_id: string; replica: string }[]>`
        SELECT DISTINCT event_id, replica FROM chaos_claims WHERE id > ${claimMark} AND event_id IN ${s.sql(eventIds)}`;
      const reclaimed = new Set(reclaims.map((r) => r.event_id));
      for (const r of reclaims) oc.reclaimedBy[replicaOf(r.replica)] = (oc.reclaimedBy[replicaOf(r.replica)] ?? 0) + 1;
      oc.takenOver = reclaimed.size;
      const settled = await s.sql<{ event_id: string }[]>`
        SELECT event_id FROM webhook_events WHERE event_id IN ${s.sql(eventIds)} AND status <> 'received'`;
      oc.settledFromLandedSignal = settled.filter((r) => !reclaimed.has(r.event_id)).length;
    }

    // ---- checks
    const appliedRows = await s.sql<{ event_id: string }[]>`SELECT event_id FROM applied_events`;
    const appliedSet = new Set(appliedRows.map((r) => r.event_id));
    const lost = handled.filter((id) => !appliedSet.has(id));
    const unexpected = appliedRows.filter((r) => byId.get(r.event_id)?.fate !== 'applied');
    if (lost.length) violations.push(`${lost.length} handled events never applied (lost), e.g. ${lost.slice(0, 5).join(', ')}`);
    if (unexpected.length) violations.push(`${unexpected.length} applied_events rows for events that must not be applied, e.g. ${unexpected.slice(0, 5).map((r) => r.event_id).join(', ')}`);
    if (appliedRows.length !== handled.length) violations.push(`applied_events has ${appliedRows.length} rows for ${handled.length} unique handled events`);

    const ignoredIds = stream.events.filter((e) => e.fate === 'ignored').map((e) => e.id);
    const rows = await s.sql<{ event_id: string; status: string; last_error: string | null }[]>`
      SELECT event_id, status::text AS status, last_error FROM webhook_events`;
    const statusOf = new Map(rows.map((r) => [r.event_id, r.status]));
    const notIgnored = ignoredIds.filter((id) => statusOf.get(id) !== 'ignored');
    if (notIgnored.length) violations.push(`${notIgnored.length} unhandled-type events not recorded as ignored, e.g. ${notIgnored.slice(0, 5).join(', ')}`);
    const missingRows = stream.events.filter((e) => !statusOf.has(e.id));
    if (missingRows.length) violations.push(`${missingRows.length} acknowledged events missing from the delivery log`);
    const notApplied = handled.filter((id) => statusOf.has(id) && statusOf.get(id) !== 'applied');
    if (notApplied.length) violations.push(`${notApplied.length} handled events whose delivery-log status is not 'applied', e.g. ${notApplied.slice(0, 3).map((id) => `${id}=${statusOf.get(id)}`).join(', ')}`);

    // Poison: set aside by the apply's data-error path (never applied, its invoice never written), and
    // the poisoned customer's later events all applied — a bad event does not block its customer.
    const poisonSet = new Set(poisonIds);
    const quarantinedRows = rows.filter((r) => r.status === 'quarantined');
    const quarantinedPoison = quarantinedRows.filter((r) => poisonSet.has(r.event_id) && (r.last_error ?? '').startsWith('apply: '));
    const quarantinedOther = quarantinedRows.filter((r) => !poisonSet.has(r.event_id));
    const poisonProblems = poisonIds
      .filter((id) => !quarantinedPoison.some((r) => r.event_id === id))
      .map((id) => {
        const row = rows.find((r) => r.event_id === id);
        return `${id} is '${row?.status ?? 'missing'}'${row?.last_error ? ` (${row.last_error.slice(0, 80)})` : ''}, expected 'quarantined' by the apply`;
      });
    if (poisonProblems.length) violations.push(`poison: ${poisonProblems.length} events not quarantined, e.g. ${poisonProblems.slice(0, 3).join('; ')}`);
    if (quarantinedOther.length) {
      violations.push(`${quarantinedOther.length} non-poison events quarantined, e.g. ${quarantinedOther.slice(0, 3).map((r) => `${r.event_id}: ${r.last_error}`).join('; ')}`);
    }
    const poisonInvoices = stream.poisons.length
      ? await s.sql<{ id: string }[]>`SELECT id FROM invoices WHERE id IN ${s.sql(stream.poisons.map((p) => p.invoiceId))}`
      : [];
    if (poisonInvoices.length) violations.push(`poison: ${poisonInvoices.length} poison invoices written, e.g. ${poisonInvoices[0]!.id}`);
    const laterIds = stream.poisons.flatMap((p) => p.laterEventIds);
    const laterApplied = laterIds.filter((id) => appliedSet.has(id) && statusOf.get(id) === 'applied');
    if (laterApplied.length !== laterIds.length) {
      violations.push(`poison blocked its customer: ${laterIds.length - laterApplied.length} of ${laterIds.length} later events not applied, e.g. ${laterIds.filter((id) => !laterApplied.includes(id)).slice(0, 3).join(', ')}`);
    }

    // Notices: exactly one per opened dunning cycle, none for anyone else (the dunning child workflows
    // send them after their events were applied, so wait for them first).
    const dunningCustomers = new Set(stream.expected.filter((e) => e.dunning).map((e) => e.customerId));
    // Delivered = queued in the outbox or sent; 'suppressed' rows are the caps deciding not to send.
    const countNotices = () =>
      s.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM notifications WHERE status IN ('queued', 'sent')`.then((r) => r[0]!.n, () => -1);
    const noticeDeadline = Date.now() + o.drainTimeoutMs;
    while ((await countNotices()) < dunningCustomers.size && Date.now() < noticeDeadline) await sleep(250);
    await sleep(1000); // a late second notice would show up now
    const [notif] = await s.sql<{ total: number; distinct_keys: number }[]>`
      SELECT count(*)::int AS total, count(DISTINCT dedup_key)::int AS distinct_keys FROM notifications`;
    if (notif!.total !== notif!.distinct_keys) violations.push(`notifications: ${notif!.total} rows but ${notif!.distinct_keys} distinct dedup keys`);
    const perCustomer = await s.sql<{ customer_id: string; n: number }[]>`
      SELECT customer_id, count(*)::int AS n FROM notifications WHERE status IN ('queued', 'sent') GROUP BY customer_id`;
    const [suppressedRow] = await s.sql<{ suppressed: number }[]>`
      SELECT count(*)::int AS suppressed FROM notifications WHERE status = 'suppressed'`;
    const suppressed = suppressedRow?.suppressed ?? 0;
    const noticesUnexpected = perCustomer.filter((r) => !dunningCustomers.has(r.customer_id));
    const noticesDoubled = perCustomer.filter((r) => dunningCustomers.has(r.customer_id) && r.n !== 1);
    const noticesMissing = [...dunningCustomers].filter((c) => !perCustomer.some((r) => r.customer_id === c));
    const noticeProblems = [
      ...noticesUnexpected.map((r) => `${r.customer_id}: ${r.n} notice(s) without a failed payment`),
      ...noticesDoubled.map((r) => `${r.customer_id}: ${r.n} notices for one failure`),
      ...noticesMissing.map((c) => `${c}: no notice for its failed payment`),
    ];
    if (noticeProblems.length) violations.push(`notifications: ${noticeProblems.length} customers wrong, e.g. ${noticeProblems.slice(0, 3).join('; ')}`);

    // Effects: the fault-free history's failed, never-paid invoices each opened exactly one dunning cycle
    // (row, running dunning workflow), also where the apply that opened it crashed after its commit.
    const customerIds = stream.expected.map((e) => e.customerId);
    const cycleRows = await s.sql<{ customer_id: string; invoice_id: string; workflow_id: string; ended_at: Date | null }[]>`
      SELECT customer_id, invoice_id, workflow_id, ended_at FROM dunning_cycles WHERE customer_id IN ${s.sql(customerIds)}`;
    const expectedCycles = stream.expected.filter((e) => e.failedInvoiceId !== null);
    const cyclesOf = (customerId: string) => cycleRows.filter((r) => r.customer_id === customerId);
    const cycleProblems: string[] = [];
    let cyclesMissing = 0;
    let cyclesDoubled = 0;
    let workflowsMissing = 0;
    for (const e of expectedCycles) {
      const mine = cyclesOf(e.customerId);
      const row = mine.find((r) => r.invoice_id === e.failedInvoiceId);
      if (!row) {
        cyclesMissing++;
        cycleProblems.push(`${e.customerId}: no dunning cycle for ${e.failedInvoiceId}`);
        continue;
      }
      if (mine.length > 1) {
        cyclesDoubled++;
        cycleProblems.push(`${e.customerId}: ${mine.length} dunning cycles for one failed invoice`);
      }
      if (row.ended_at !== null) cycleProblems.push(`${e.customerId}: the cycle of ${row.invoice_id} ended (nothing paid it)`);
      const status = await s.client.workflow
        .getHandle(row.workflow_id)
        .describe()
        .then((d) => d.status.name, () => 'NOT_FOUND');
      if (status !== 'RUNNING') {
        workflowsMissing++;
        cycleProblems.push(`${e.customerId}: dunning workflow ${row.workflow_id} is ${status}`);
      }
    }
    const cyclesUnexpected = cycleRows.filter((r) => !expectedCycles.some((e) => e.customerId === r.customer_id));
    for (const r of cyclesUnexpected.slice(0, 3)) cycleProblems.push(`${r.customer_id}: dunning cycle for ${r.invoice_id} without a failed payment`);
    if (cycleProblems.length) violations.push(`effects: ${cycleProblems.length} dunning cycle problems, e.g. ${cycleProblems.slice(0, 3).join('; ')}`);
    const effectsMissing = cyclesMissing + workflowsMissing + noticesMissing.length;
    const effectsDoubled = cyclesDoubled + noticesDoubled.length + (notif!.total - notif!.distinct_keys);
    const effectsUnexpected = cyclesUnexpected.length + noticesUnexpected.length;

    // The crash-after-commit faults, from the workers' logs (every incarnation of a replica appends to its own).
    const faultLines = s.workers.flatMap((w) => readWorkerFaultLines(path.join(dir, `${w.name}.log`)));
    const crashed = faultLines.filter((l) => l.msg === 'fault injected: apply failed after commit');
    const crashedIds = new Set(crashed.flatMap((l) => l.eventIds));
    const failedEventIds = stream.events.filter((e) => e.id.endsWith(FAILED_ID_SUFFIX)).map((e) => e.id);
    const crashes: CrashRecord = {
      rate: o.crashAfterCommitRate,
      injected: crashed.length,
      paymentFailuresCrashed: failedEventIds.filter((id) => crashedIds.has(id)).length,
      paymentFailures: failedEventIds.length,
      poisonsCrashed: poisonIds.filter((id) => crashedIds.has(id)).length,
    };
    if (o.crashAfterCommitRate > 0) {
      // Every apply holding a payment failure fails once after its commit: its effects come from the re-run.
      if (crashes.injected === 0) violations.push('crash after commit: no apply failed after its commit (is FAULT_AFTER_COMMIT_RATE wired in worker/main.ts?)');
      else if (crashes.paymentFailuresCrashed < crashes.paymentFailures) {
        violations.push(`crash after commit: only ${crashes.paymentFailuresCrashed} of ${crashes.paymentFailures} payment-failure applies crashed after their commit`);
      }
    }
    // Surviving means not exiting: an API or worker restarted by the supervisor did not survive its fault.
    for (const e of unexpectedExits) violations.push(`${e.name} exited on its own (${e.code ?? e.signal}) and had to be restarted`);
    const selfKills = faultLines.filter((l) => l.msg === 'fault injected: SIGKILL after commit').length;
    if (killAfterCommit && faults.some((f) => f.kind === 'worker-kill-after-commit') && selfKills === 0) {
      violations.push('fault worker-kill-after-commit: the worker exited, but not by the injected SIGKILL after a commit');
    }

    // Final state of every customer vs. the same events applied in order without faults (a poison is on
    // an invoice of its own: the fault-free result is the same with or without it).
    const subs = await s.sql<{ customer_id: string; status: string; price_id: string | null; cancel_at_period_end: boolean; cpe: number | null }[]>`
      SELECT customer_id, status::text AS status, price_id, cancel_at_period_end,
             extract(epoch FROM current_period_end)::float8 AS cpe
      FROM subscriptions WHERE customer_id IN ${s.sql(customerIds)}`;
    const custs = await s.sql<{ id: string; email: string | null; name: string | null; access_state: string }[]>`
      SELECT id, email, name, access_state FROM customers WHERE id IN ${s.sql(customerIds)}`;
    const invs = await s.sql<{ id: string; status: string | null; amount_paid: number }[]>`
      SELECT id, status, amount_paid FROM invoices WHERE customer_id IN ${s.sql(customerIds)}`;
    const subOf = new Map(subs.map((r) => [r.customer_id, r]));
    const custOf = new Map(custs.map((r) => [r.id, r]));
    const invOf = new Map(invs.map((r) => [r.id, r]));
    let mismatches = 0;
    for (const e of stream.expected) {
      const problems: string[] = [];
      const sub = subOf.get(e.customerId);
      const cus = custOf.get(e.customerId);
      if (!sub) problems.push('no subscription row');
      else {
        if (sub.status !== e.subscription.status) problems.push(`status ${sub.status} ≠ ${e.subscription.status}`);
        if (sub.price_id !== e.subscription.priceId) problems.push(`price ${sub.price_id} ≠ ${e.subscription.priceId}`);
        if (sub.cancel_at_period_end !== e.subscription.cancelAtPeriodEnd) problems.push(`cancel_at_period_end ${sub.cancel_at_period_end} ≠ ${e.subscription.cancelAtPeriodEnd}`);
        if (sub.cpe !== e.subscription.currentPeriodEnd) problems.push(`current_period_end ${sub.cpe} ≠ ${e.subscription.currentPeriodEnd}`);
      }
      if (!cus) problems.push('no customer row');
      else {
        if (e.email !== null && cus.email !== e.email) problems.push(`email ${cus.email} ≠ ${e.email}`);
        if (e.name !== null && cus.name !== e.name) problems.push(`name ${cus.name} ≠ ${e.name}`);
        if (cus.access_state !== e.accessState) problems.push(`access_state ${cus.access_state} ≠ ${e.accessState}`);
      }
      if (e.invoice) {
        const inv = invOf.get(e.invoice.id);
        if (!inv) problems.push(`no invoice ${e.invoice.id}`);
        else if (inv.status !== e.invoice.status || inv.amount_paid !== e.invoice.amountPaid) {
          problems.push(`invoice ${inv.status}/${inv.amount_paid} ≠ ${e.invoice.status}/${e.invoice.amountPaid}`);
        }
      }
      if (problems.length) {
        mismatches++;
        if (mismatches <= 5) violations.push(`${e.customerId}: ${problems.join('; ')}`);
      }
    }
    if (mismatches > 5) violations.push(`… ${mismatches - 5} more customers whose final state differs from the fault-free result`);

    // Per replica: who acknowledged, claimed and applied what.
    const claimsBy = new Map(
      (await s.sql<{ replica: string; n: number }[]>`SELECT replica, count(*)::int AS n FROM chaos_claims GROUP BY replica`).map((r) => [r.replica, r.n]),
    );
    const appliesBy = new Map(
      (
        await s.sql<{ replica: string; n: number; before: number }[]>`
          SELECT replica, count(*)::int AS n, count(*) FILTER (WHERE id <= ${applyMarkAtWorkerKill ?? 0})::int AS before
          FROM chaos_applies GROUP BY replica`
      ).map((r) => [r.replica, r]),
    );
    const replicas: ChaosReport['replicas'] = {
      apis: s.apis.map((a, i) => ({
        name: a.name,
        acknowledged: ackedBy[i]!,
        acknowledgedBeforeKill: ackedBeforeApiKill ? ackedBeforeApiKill[i]! : null,
        claimed: claimsBy.get(appOf(a)) ?? 0,
        killed: leftDead.has(a),
      })),
      workers: s.workers.map((w) => ({
        name: w.name,
        applied: appliesBy.get(appOf(w))?.n ?? 0,
        appliedBeforeKill: applyMarkAtWorkerKill === null ? null : appliesBy.get(appOf(w))?.before ?? 0,
        killed: leftDead.has(w),
      })),
    };
    const strangers = [...appliesBy.keys()].filter((app) => !s.workers.some((w) => appOf(w) === app));
    if (strangers.length) violations.push(`applies committed by sessions that are no worker replica: ${strangers.join(', ')}`);

    // The survivors, stopped as an orchestrator would: SIGTERM, then the bound (the stack SIGKILLs 5 s past it).
    const shutdowns: ShutdownRecord[] = [];
    if (o.gracefulStop) {
      const survivors = [...s.apis, ...s.workers].filter((p) => p.running);
      shutdowns.push(
        ...(await Promise.all(
          survivors.map(async (p): Promise<ShutdownRecord> => {
            const boundMs = s.apis.includes(p) ? STOP_BOUND_MS.api : STOP_BOUND_MS.worker;
            const from = Date.now();
            await p.stop(boundMs + 5000);
            const exit = p.exits[p.exits.length - 1]!;
            return { name: p.name, code: exit.code, signal: exit.signal, ms: exit.at - from, boundMs };
          }),
        )),
      );
      for (const x of shutdowns) {
        log(`  ${x.name} stopped on SIGTERM in ${x.ms} ms (${x.code ?? x.signal})`);
        if (x.code !== 0) violations.push(`${x.name} did not exit cleanly on SIGTERM: ${x.code ?? x.signal}`);
        else if (x.ms > x.boundMs) violations.push(`${x.name} took ${x.ms} ms to exit on SIGTERM (bound ${x.boundMs} ms)`);
      }
    }

    const report: ChaosReport = {
      ok: violations.length === 0,
      violations,
      counts: {
        uniqueEvents: stream.events.length,
        handled: handled.length,
        ignoredTypes: ignoredIds.length,
        deliveries: stream.deliveries.length,
        duplicateDeliveries: stream.deliveries.length - stream.events.length,
        retriedDeliveries: retried,
        non2xx,
        failedOutsideStoreFaults,
        applied: appliedRows.length,
        lost: lost.length,
        unexpectedApplied: unexpected.length,
        notIgnored: notIgnored.length,
        poisonEvents: poisonIds.length,
        quarantinedPoison: quarantinedPoison.length,
        quarantinedOther: quarantinedOther.length,
        laterEventsOfPoisoned: laterIds.length,
        laterEventsOfPoisonedApplied: laterApplied.length,
        webhookRows: rows.length,
        expectedCycles: expectedCycles.length,
        cycles: cycleRows.length,
        effectsMissing,
        effectsDoubled,
        effectsUnexpected,
        notifications: notif!.total,
        distinctNotificationKeys: notif!.distinct_keys,
        expectedNotifications: dunningCustomers.size,
        deliveredNotifications: perCustomer.reduce((a, r) => a + r.n, 0),
        suppressedNotifications: suppressed,
        customersChecked: stream.expected.length,
        stateMismatches: mismatches,
      },
      faults,
      crashes,
      unexpectedExits,
      replicas,
      shutdowns,
      timings: { stackMs, burstMs, drainMs, totalMs: 0 },
      dir,
    };
    return report;
  } finally {
    sampling = false;
    if (stack) await stack.stop();
    await (fake as PagingStripeFake | null)?.stop();
    if (!options.keep && violations.length === 0) rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Chaos-only bookkeeping in the run's own database: which session (a replica's application_name) claimed
 * each inbox row for dispatch, and which applied each event. Triggers, so they commit or roll back with
 * the claim or apply itself: a SIGKILLed replica's committed claims are on record, nothing else is.
 */
async function installAudit(sql: Sql): Promise<void> {
  await sql.unsafe(`
    CREATE TABLE chaos_claims (id bigserial PRIMARY KEY, event_id text NOT NULL, replica text NOT NULL);
    CREATE INDEX chaos_claims_event_idx ON chaos_claims (event_id, id);
    CREATE TABLE chaos_applies (id bigserial PRIMARY KEY, event_id text NOT NULL, replica text NOT NULL);
    CREATE FUNCTION chaos_note_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO chaos_claims (event_id, replica) VALUES (NEW.event_id, current_setting('application_name'));
      RETURN NULL;
    END $$;
    -- A claim is the one statement that counts an attempt (api/inbox-queries.ts).
    CREATE TRIGGER chaos_claims AFTER UPDATE OF dispatch_attempts ON webhook_events
      FOR EACH ROW WHEN (NEW.dispatch_attempts > OLD.dispatch_attempts) EXECUTE FUNCTION chaos_note_claim();
    CREATE FUNCTION chaos_note_apply() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO chaos_applies (event_id, replica) VALUES (NEW.event_id, current_setting('application_name'));
      RETURN NULL;
    END $$;
    CREATE TRIGGER chaos_applies AFTER INSERT ON applied_events FOR EACH ROW EXECUTE FUNCTION chaos_note_apply();
  `);
}

/**
 * Stops PostgreSQL (fast shutdown, like the handle's restart), keeps it down for downMs and starts it
 * again, without blocking this process: the handle runs pg_ctl synchronously, which would also stop the
 * sender, so no delivery would ever meet the outage.
 */
async function restartPostgres(pg: PostgresHandle, downMs: number): Promise<void> {
  // The server's own command line names its binaries; PostgreSQL refuses root, so run pg_ctl as postgres then.
  const postgresBin = readFileSync(path.join(pg.dataDir, 'postmaster.opts'), 'utf8').trim().split(/\s+/)[0]!.replace(/"/g, '');
  const pgCtl = path.join(path.dirname(postgresBin), 'pg_ctl');
  const asRoot = process.getuid?.() === 0;
  const run = (args: string[]) => promisify(execFile)(asRoot ? 'runuser' : pgCtl, asRoot ? ['-u', 'postgres', '--', pgCtl, ...args] : args);
  await run(['-D', pg.dataDir, '-m', 'fast', '-w', 'stop']);
  await sleep(downMs);
  await run(['-D', pg.dataDir, '-o', `-p ${pg.port}`, '-l', path.join(pg.dataDir, 'server.log'), '-w', '-t', '60', 'start']);
  await waitForPort(pg.port, '127.0.0.1', 30_000, 'PostgreSQL');
}

/** Event ids the API logged as dispatched ('events dispatched', pino JSON) at or after `since`. */
function readApiDispatchedSince(file: string, since: number): string[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"events dispatched"')) continue;
    try {
      const j = JSON.parse(line) as { time?: string; eventIds?: string[] };
      if (j.time && Date.parse(j.time) >= since) out.push(...(j.eventIds ?? []));
    } catch {
      /* a line cut by the SIGKILL */
    }
  }
  return out;
}

/** The worker's fault-injection log lines (pino JSON; other lines are skipped). */
function readWorkerFaultLines(file: string): { msg: string; eventIds: string[] }[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: { msg: string; eventIds: string[] }[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"fault injected')) continue;
    try {
      const j = JSON.parse(line) as { msg?: string; eventIds?: string[] };
      if (j.msg) out.push({ msg: j.msg, eventIds: j.eventIds ?? [] });
    } catch {
      /* a line cut by the SIGKILL */
    }
  }
  return out;
}

/** Renders the report as the table `npm run chaos` prints. */
export function renderChaosReport(r: ChaosReport): string {
  const c = r.counts;
  const multi = r.replicas.apis.length > 1 || r.replicas.workers.length > 1;
  const perReplica = (byName: Record<string, number>) => Object.entries(byName).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  const replicaLines = multi
    ? [
        `| API replicas: deliveries acknowledged (before the kill) · claims by its dispatcher | ${r.replicas.apis.map((a) => `${a.name}: ${a.acknowledged}${a.acknowledgedBeforeKill === null ? '' : ` (${a.acknowledgedBeforeKill})`} · ${a.claimed}${a.killed ? ', killed' : ''}`).join('; ')} |`,
        `| worker replicas: events applied (before the kill) | ${r.replicas.workers.map((w) => `${w.name}: ${w.applied}${w.appliedBeforeKill === null ? '' : ` (${w.appliedBeforeKill})`}${w.killed ? ', killed' : ''}`).join('; ')} |`,
      ]
    : [];
  const shutdownLines = r.shutdowns.length
    ? [`| SIGTERM at the end: exit, time (bound) | ${r.shutdowns.map((x) => `${x.name}: ${x.code ?? x.signal} in ${(x.ms / 1000).toFixed(1)} s (≤ ${x.boundMs / 1000} s)`).join('; ')} |`]
    : [];
  const lines = [
    '',
    `| chaos check | result |`,
    `|---|---|`,
    `| unique events (handled + ignored types + poison) | ${c.uniqueEvents} (${c.handled} + ${c.ignoredTypes} + ${c.poisonEvents}) |`,
    `| deliveries sent (incl. duplicates) | ${c.deliveries} (${c.duplicateDeliveries} duplicates), ${c.retriedDeliveries} needed retries; failed attempts: ${JSON.stringify(c.non2xx)} |`,
    ...replicaLines,
    ...r.faults.map((f) => {
      const failed = f.failedDeliveriesDuring ? `${f.failedDeliveriesDuring} failed attempts ${JSON.stringify(f.failedBy)} (retried)` : 'no failed attempt';
      const oc = f.orphanedClaims;
      const claims = oc
        ? `; ${oc.rows} rows left claimed by the killed API, ${oc.resent} of them dispatched again by ${f.kind === 'api-replica-kill' ? 'the surviving replicas' : 'the new one'}` +
          (multi ? ` (claimed again: ${oc.takenOver}, by ${perReplica(oc.reclaimedBy)}; settled from a signal it had sent: ${oc.settledFromLandedSignal})` : '') +
          (oc.clearedAfterMs === null ? '' : `, none 'received' ${oc.clearedAfterMs} ms after the kill`)
        : '';
      const pending = f.pendingAtKill
        ? `; ${f.pendingAtKill.events} events handed to Temporal and not yet applied at the kill${f.pendingAtKill.appliedAfterMs === null ? ', NOT all applied' : `, all applied by the survivors ${f.pendingAtKill.appliedAfterMs} ms after it`}`
        : '';
      const inbox = f.inboxPeak === null ? 'inbox not readable' : `inbox peak ${f.inboxPeak} 'received' rows`;
      return `| fault: ${f.kind}${multi && f.replica ? ` (${f.replica})` : ''} | at ${f.firedAtAcked}/${c.deliveries} acknowledged, ${f.durationMs} ms, ${failed}, slowest answer ${f.slowestAnswerMs} ms, ${inbox}${claims}${pending} |`;
    }),
    `| failed attempts outside the Postgres restart and the API kill | ${c.failedOutsideStoreFaults} |`,
    r.crashes.rate > 0
      ? `| fault: crash after commit (${Math.round(r.crashes.rate * 1000) / 10} % of applies, and every apply holding a payment failure or a poison) | ${r.crashes.injected} applies failed after their commit and were retried; payment-failure applies among them: ${r.crashes.paymentFailuresCrashed} of ${r.crashes.paymentFailures}, poison applies: ${r.crashes.poisonsCrashed} of ${c.poisonEvents} |`
      : `| fault: crash after commit | off (--crash-rate 0) |`,
    `| unexpected process exits | ${r.unexpectedExits.length ? r.unexpectedExits.map((e) => `${e.name} (${e.code ?? e.signal})`).join(', ') : 'none'} |`,
    `| lost events (handled, not applied) | ${c.lost} |`,
    `| applied_events rows / unique handled events | ${c.applied} / ${c.handled} |`,
    `| applied rows for non-handled events | ${c.unexpectedApplied} |`,
    `| ignored-type events not recorded as ignored | ${c.notIgnored} |`,
    `| poison events (invoice attempt_count 2^31: int4 overflow) quarantined by the apply / sent; other events quarantined | ${c.quarantinedPoison} / ${c.poisonEvents}; ${c.quarantinedOther} |`,
    `| poisoned customers' later events applied | ${c.laterEventsOfPoisonedApplied} / ${c.laterEventsOfPoisoned} |`,
    `| dunning cycles / expected (one per failed, never-paid invoice) | ${c.cycles} / ${c.expectedCycles} |`,
    `| effects missing / doubled / unexpected (cycle row, running dunning workflow, notice) | ${c.effectsMissing} / ${c.effectsDoubled} / ${c.effectsUnexpected} |`,
    `| notifications: rows / distinct dedup keys | ${c.notifications} / ${c.distinctNotificationKeys} |`,
    `| notices delivered / expected (one per opened dunning cycle) / suppressed by the caps | ${c.deliveredNotifications} / ${c.expectedNotifications} / ${c.suppressedNotifications} |`,
    `| customers whose final state ≠ fault-free result | ${c.stateMismatches} of ${c.customersChecked} |`,
    ...shutdownLines,
    `| time: stack / burst / drain after burst | ${(r.timings.stackMs / 1000).toFixed(1)} s / ${(r.timings.burstMs / 1000).toFixed(1)} s / ${(r.timings.drainMs / 1000).toFixed(1)} s |`,
    '',
    r.ok
      ? 'CHAOS OK: zero lost, zero double-applied, zero effects missing or doubled, poison quarantined without blocking its customer, final state equals the fault-free result.' : `CHAOS FAILED:\n${r.violations.map((v) => `  - ${v}`).join('\n')}\n(logs kept in ${r.dir})`,
    '',
  ];
  return lines.join('\n');
}

function parseArgs(argv: string[]): ChaosOptions {
  const o: ChaosOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v)) throw new Error(`${a} needs a number`);
      return v;
    };
    if (a === '--events') o.events = num();
    else if (a === '--customers') o.customers = num();
    else if (a === '--duplicates') o.duplicateRate = num();
    else if (a === '--seed') o.seed = num();
    else if (a === '--concurrency') o.concurrency = num();
    else if (a === '--rate') o.ratePerSecond = num();
    else if (a === '--crash-rate') o.crashAfterCommitRate = num();
    else if (a === '--poison') o.poisonCustomers = num();
    else if (a === '--replicas') o.apiReplicas = o.workerReplicas = num();
    else if (a === '--api-replicas') o.apiReplicas = num();
    else if (a === '--worker-replicas') o.workerReplicas = num();
    else if (a === '--faults') o.faults = parseFaults(argv[++i] ?? '');
    else if (a === '--graceful-stop') o.gracefulStop = true;
    else if (a === '--keep') o.keep = true;
    else throw new Error(`unknown flag ${a} (see the header of scripts/chaos.ts)`);
  }
  return o;
}

/** `api-replica-kill:0.3,worker-replica-kill:0.5`: each fault and the share of acknowledged deliveries it fires at. */
function parseFaults(spec: string): { kind: FaultKind; at: number }[] {
  return spec.split(',').map((part) => {
    const [kind, at] = part.trim().split(':');
    if (!FAULT_KINDS.includes(kind as FaultKind)) throw new Error(`--faults: unknown fault ${kind} (one of ${FAULT_KINDS.join(', ')})`);
    const share = Number(at);
    if (!(share >= 0 && share < 1)) throw new Error(`--faults: ${part} needs a share of the burst in [0, 1), e.g. ${kind}:0.3`);
    return { kind: kind as FaultKind, at: share };
  });
}

if (require.main === module) {
  const started = Date.now();
  let signals = 0;
  const onSignal = () => {
    // npm, tsx and the terminal may each deliver the same signal: stop once, force on the third.
    if (++signals === 1) {
      process.stderr.write('[chaos] interrupted; stopping the stack\n');
      void stopActiveStacks().finally(() => process.exit(130));
    } else if (signals >= 3) process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  runChaos(parseArgs(process.argv.slice(2))).then(
    (r) => {
      r.timings.totalMs = Date.now() - started;
      process.stdout.write(renderChaosReport(r));
      process.exit(r.ok ? 0 : 1);
    },
    (err: unknown) => {
      process.stderr.write(`[chaos] failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      process.exit(2);
    },
  );
}
