/** What the parts of one chaos run share: the stack, the resolved options, the stream, and the state they change. */
import type { BillingStack, ServiceProcess } from '../billing-stack/stack';
import type { ResolvedOptions } from './options';
import type { Stream } from './stream';
import type { ChaosReport } from './types';

/** The mutable state the sender, the fault driver, the drain and the checks share. */
export interface RunState {
  /** Set while the worker is armed to SIGKILL itself after a commit: its exit is the fault, not a crash. */
  killArmed: boolean;
  /** The inbox sampler runs while this is set (cleared at the end of the drain, or when the run fails). */
  sampling: boolean;
  /** Deliveries acknowledged so far. */
  acked: number;
  /** Deliveries whose first attempt failed. */
  retried: number;
  /** The index of the next delivery to send. */
  next: number;
  /** Per-API acknowledgements when the first API was killed. */
  ackedBeforeApiKill: number[] | null;
  /** The last apply id when the first worker was killed. */
  applyMarkAtWorkerKill: number | null;
}

export interface ChaosRun {
  s: BillingStack;
  o: ResolvedOptions;
  stream: Stream;
  byId: Map<string, Stream['events'][number]>;
  log: (line: string) => void;
  dir: string;
  /** What the run found wrong (the report's violations). */
  violations: string[];
  unexpectedExits: ChaosReport['unexpectedExits'];
  /** The worker's test-only kill-after-commit trigger file, and whether that fault is in the run. */
  killFile: string;
  killAfterCommit: boolean;
  /** Deliveries per second. */
  rate: number;
  /** Who claimed / applied what: each replica's sessions carry application_name `billing-<name>` (support/billing-stack/stack.ts). */
  appOf: (p: ServiceProcess) => string;
  replicaOf: (app: string) => string;
  state: RunState;
}
