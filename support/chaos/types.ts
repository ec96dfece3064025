/** The chaos run's options, fault kinds and report shape (see support/chaos/run.ts). */
/**
 * `api-kill` / `worker-kill` SIGKILL one process (the first replica still running) and restart it;
 * `api-replica-kill` / `worker-replica-kill` SIGKILL it and leave it dead (the other replicas carry on).
 */
export type FaultKind = 'worker-kill' | 'worker-kill-after-commit' | 'temporal-restart' | 'postgres-restart' | 'api-kill' | 'api-replica-kill' | 'worker-replica-kill';

export const FAULT_KINDS: readonly FaultKind[] = ['worker-kill', 'worker-kill-after-commit', 'temporal-restart', 'postgres-restart', 'api-kill', 'api-replica-kill', 'worker-replica-kill'];
/** The faults that may fail a delivery: the API cannot store it (Postgres down) or is not there to answer. */
export const STORE_FAULTS: ReadonlySet<FaultKind> = new Set(['postgres-restart', 'api-kill', 'api-replica-kill']);
export const API_KILLS: ReadonlySet<FaultKind> = new Set(['api-kill', 'api-replica-kill']);
export const WORKER_KILLS: ReadonlySet<FaultKind> = new Set(['worker-kill', 'worker-replica-kill']);
/** How long a survivor may take to exit after SIGTERM (the processes' own force timers: api/server.ts, worker/main.ts). */
export const STOP_BOUND_MS = { api: 10_000, worker: 30_000 };
/** A delivery failing this soon after Postgres or the API is back still counts as theirs (pool reconnects, recovery). */
export const RECOVERY_GRACE_MS = 2000;

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

