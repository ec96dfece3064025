/**
 * `npm run bench [-- --quick]`: starts the real stack in a temp dir (durable PostgreSQL, Temporal dev
 * server on a db file, stripe-mock behind a paging fake, API and worker as child processes), drives
 * signed webhooks from a separate load-generator process, and prints a markdown report (also written to
 * bench-results/latest.json): ack path, end-to-end lag, the floor (a bare verify+insert endpoint under
 * the same load), scale (live workflows, worker memory, reconciliation time) and what limited each number.
 *
 * Flags: --quick · --ack-seconds N · --e2e-seconds N · --concurrency 8,32,64 · --rates 100,300
 *        --customers N (steady-state pool) · --scale N (new customers) · --duplicates 0.1
 *        --no-floor · --no-ceiling (Temporal alone) · --no-scale · --no-reconciliation · --env KEY=VALUE (API+worker, repeatable)
 *        --storm-customers N (renewal storm, default 2000; 0 skips it) · --overload-seconds N (default 60; 0 skips it)
 *        --temporal-journal wal|wal-normal|default (dev server SQLite: wal and default fsync every commit;
 *        wal-normal only at checkpoints, a sensitivity run)
 *        --profile api,worker (V8 CPU profiles; the top functions are printed at the end)
 *        --eager-activities (dev server: system.enableActivityEagerExecution=true)
 *        --worker-options '{"maxCachedWorkflows":2000}' (experiment, via scripts/bench/worker-variant.ts:
 *        worker/main.ts stays unchanged)
 *        --native-client (experiment: the API's Temporal client on a NativeConnection, scripts/bench/api-variant.ts)
 *        --out FILE · --keep (keep the temp dir) · --render [FILE] (re-print the markdown of a JSON result) · --help
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../support/services';
import type { TemporalJournal } from '../../support/billing-stack/stack';

/** This file's header comment: the --help text. */
export function usage(): string {
  return (/^\/\*\*\n([\s\S]*?)\*\//.exec(readFileSync(__filename, 'utf8'))?.[1] ?? '').replace(/^ \* ?/gm, '');
}

// ---------------------------------------------------------------- options

export interface BenchOptions {
  quick: boolean;
  ackSeconds: number;
  e2eSeconds: number;
  concurrency: number[];
  rates: number[];
  customers: number;
  scale: number;
  duplicateRate: number;
  floor: boolean;
  /** Measure signal-with-start alone against the same Temporal server. */
  ceiling: boolean;
  scalePhase: boolean;
  reconciliation: boolean;
  /** Customers of the renewal storm (0: skip). */
  stormCustomers: number;
  /** Seconds of offered overload (0: skip). */
  overloadSeconds: number;
  env: Record<string, string>;
  temporalJournal: TemporalJournal;
  temporalEagerActivities: boolean;
  /** Experiments through scripts/bench/worker-variant.ts (worker/main.ts itself is unchanged). */
  workerOptions: Record<string, unknown> | null;
  nativeClient: boolean;
  /** Write a V8 CPU profile of these services and print where their time went. */
  profile: string[];
  out: string;
  keep: boolean;
}

export function parseArgs(argv: string[]): BenchOptions {
  const quick = argv.includes('--quick');
  const opts: BenchOptions = {
    quick,
    ackSeconds: quick ? 5 : 20,
    e2eSeconds: quick ? 10 : 60,
    concurrency: [8, 32, 64],
    rates: [50, 100, 300],
    customers: quick ? 300 : 2000,
    scale: quick ? 500 : 10_000,
    duplicateRate: 0.1,
    floor: true,
    ceiling: true,
    scalePhase: true,
    reconciliation: true,
    stormCustomers: 2000,
    overloadSeconds: 60,
    env: {},
    temporalJournal: 'wal',
    temporalEagerActivities: false,
    workerOptions: null,
    nativeClient: false,
    profile: [],
    out: path.join(ROOT, 'bench-results', 'latest.json'),
    keep: false,
  };
  const list = (v: string) => v.split(',').map(Number).filter((n) => Number.isFinite(n) && n > 0);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${a} needs a value`);
      return next;
    };
    switch (a) {
      case '--quick':
        break;
      case '--ack-seconds':
        opts.ackSeconds = Number(v());
        break;
      case '--e2e-seconds':
      case '--duration':
        opts.e2eSeconds = Number(v());
        break;
      case '--concurrency':
        opts.concurrency = list(v());
        break;
      case '--rates':
        opts.rates = list(v());
        break;
      case '--customers':
        opts.customers = Number(v());
        break;
      case '--scale':
        opts.scale = Number(v());
        break;
      case '--duplicates':
        opts.duplicateRate = Number(v());
        break;
      case '--no-floor':
        opts.floor = false;
        break;
      case '--no-ceiling':
        opts.ceiling = false;
        break;
      case '--no-scale':
        opts.scalePhase = false;
        break;
      case '--no-reconciliation':
        opts.reconciliation = false;
        break;
      case '--storm-customers':
        opts.stormCustomers = Number(v());
        break;
      case '--overload-seconds':
        opts.overloadSeconds = Number(v());
        break;
      case '--env': {
        const [k, ...rest] = v().split('=');
        if (!k || rest.length === 0) throw new Error('--env takes KEY=VALUE');
        opts.env[k] = rest.join('=');
        break;
      }
      case '--temporal-journal': {
        const j = v();
        if (j !== 'wal' && j !== 'wal-normal' && j !== 'default') throw new Error('--temporal-journal is wal, wal-normal or default');
        opts.temporalJournal = j;
        break;
      }
      case '--eager-activities':
        opts.temporalEagerActivities = true;
        break;
      case '--worker-options':
        opts.workerOptions = JSON.parse(v()) as Record<string, unknown>;
        break;
      case '--native-client':
        opts.nativeClient = true;
        break;
      case '--profile':
        opts.profile = v().split(',');
        break;
      case '--out':
        opts.out = path.resolve(v());
        break;
      case '--keep':
        opts.keep = true;
        break;
      default:
        throw new Error(`unknown flag ${a} (see the header of scripts/bench/main.ts)`);
    }
  }
  return opts;
}

