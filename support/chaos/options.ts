/** The chaos run's options resolved to their defaults, and checked (a replica kill must leave survivors). */
import { FAULT_KINDS, type ChaosOptions, type FaultKind } from './types';

export type ResolvedOptions = ReturnType<typeof resolveOptions>['o'];

/** `runChaos`'s options with every default filled in; throws for an unknown fault or too few replicas. */
export function resolveOptions(options: ChaosOptions) {
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
  return { apiReplicas, workerReplicas, o };
}
