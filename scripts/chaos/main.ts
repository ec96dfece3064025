/**
 * `npm run chaos`: the CLI of support/chaos/run.ts (whose header says what the run does and checks).
 *
 * Flags: --events N · --customers N · --duplicates 0.2 · --seed N · --concurrency N · --rate N (deliveries/s)
 *        --crash-rate 0.1 (share of applies failed after commit; 0: none) · --poison N (poisoned customers)
 *        --replicas N (API and worker processes) · --api-replicas N · --worker-replicas N
 *        --faults kind:at,… (e.g. api-replica-kill:0.3,worker-replica-kill:0.5) · --graceful-stop
 *        --keep (keep the temp dir with all logs) · --help
 */
import { readFileSync } from 'node:fs';
import { stopActiveStacks } from '../../support/billing-stack/stack';
import { renderChaosReport, runChaos } from '../../support/chaos/run';
import { FAULT_KINDS, type ChaosOptions, type FaultKind } from '../../support/chaos/types';

/** This file's header comment: the --help text. */
function usage(): string {
  return (/^\/\*\*\n([\s\S]*?)\*\//.exec(readFileSync(__filename, 'utf8'))?.[1] ?? '').replace(/^ \* ?/gm, '');
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
    else throw new Error(`unknown flag ${a} (see npm run chaos -- --help)`);
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
  if (process.argv.includes('--help')) {
    process.stdout.write(usage());
    process.exit(0);
  }
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
