/**
 * The entitlement bench's load generator, in its own process (forked by scripts/bench/entitlements.ts with
 * an IPC channel) so nothing else runs on its event loop. GETs a path per customer open-loop at a fixed
 * rate over random customers, each request tagged `x-request-id: <tag>-<n>` (the API's request log line
 * carries it, so in-API time is matched per request), and returns per request the scheduled time, the
 * time it was actually handed to the socket layer and the time its response ended.
 */
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { prng } from '../../support/prng';

export interface EntitlementLoadJob {
  url: string;
  /** `/customers/<id>/entitlements` of customer i, or a fixed path (the floor: `/healthz`). */
  path: { customers: number; idPrefix: string } | { fixed: string };
  rate: number;
  seconds: number;
  seed: number;
  tag: string;
  /** GET every path once first (at least 256 requests), 32 at a time: fills the API's cache, opens the sockets. */
  warm: boolean;
}

export interface EntitlementLoadResult {
  warmMs: number;
  elapsedMs: number;
  /** Per request n (request id `<tag>-<n>`): scheduled, sent and ended, ms since the run's start; status (0: error). */
  scheduled: number[];
  sent: number[];
  ended: number[];
  status: number[];
  /** Requests that got no response (status 0), by error code. */
  errors: Record<string, number>;
  /** This process's event-loop delay during the open loop, ms beyond the 10 ms sampling timer's period. */
  eventLoopDelayMs: { p99: number; max: number };
}

/** Runs one job in this process. */
export async function runEntitlementLoad(job: EntitlementLoadJob, beforeLoop: () => Promise<void> = async () => {}): Promise<EntitlementLoadResult> {
  const base = new URL(job.url);
  // Idle sockets are closed here before the server's 5 s keep-alive timeout can close them under a request.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64, timeout: 4000 });
  // Everything a request needs that does not depend on n is built before the clock starts.
  const paths = 'fixed' in job.path ? [job.path.fixed] : Array.from({ length: job.path.customers }, (_, i) => `/customers/${(job.path as { idPrefix: string }).idPrefix}${i}/entitlements`);
  const options = { agent, host: base.hostname, port: Number(base.port), method: 'GET' };
  const errors: Record<string, number> = {};
  const get = (path: string, requestId: string, onEnd: (status: number) => void) => {
    const req = http.request({ ...options, path, headers: { 'x-request-id': requestId } }, (res) => {
      res.resume();
      res.on('end', () => onEnd(res.statusCode ?? 0));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      errors[err.code ?? err.message] = (errors[err.code ?? err.message] ?? 0) + 1;
      onEnd(0);
    });
    req.end();
  };

  const warmStart = performance.now();
  if (job.warm) {
    const warm = Array.from({ length: Math.max(256, paths.length) }, (_, i) => paths[i % paths.length]!);
    for (let i = 0; i < warm.length; i += 32) {
      const batch = warm.slice(i, i + 32);
      await Promise.all(batch.map((p, k) => new Promise<number>((r) => get(p, `${job.tag}-warm-${i + k}`, r))));
    }
  }
  const warmMs = performance.now() - warmStart;

  const total = Math.round(job.rate * job.seconds);
  const interval = 1000 / job.rate;
  const random = prng(job.seed);
  const pick = Array.from({ length: total }, () => paths[Math.floor(random() * paths.length)]!);
  const scheduled = Array.from({ length: total }, (_, n) => n * interval);
  const sent = new Array<number>(total).fill(0);
  const ended = new Array<number>(total).fill(0);
  const status = new Array<number>(total).fill(0);

  await beforeLoop();
  for (const code of Object.keys(errors)) delete errors[code];
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const start = performance.now();
  let next = 0;
  let done = 0;
  await new Promise<void>((resolve) => {
    // Request n is due at start + n × interval, whatever the earlier ones are doing (open loop).
    const tick = () => {
      const now = performance.now() - start;
      for (; next < total && scheduled[next]! <= now; next++) {
        const n = next;
        sent[n] = performance.now() - start;
        get(pick[n]!, `${job.tag}-${n}`, (s) => {
          ended[n] = performance.now() - start;
          status[n] = s;
          if (++done === total) resolve();
        });
      }
      if (next < total) setTimeout(tick, Math.max(0, scheduled[next]! - (performance.now() - start)));
    };
    tick();
  });
  const elapsedMs = performance.now() - start;
  delay.disable();
  agent.destroy();
  const beyond = (ns: number) => Math.max(0, Math.round((ns / 1e6 - 10) * 100) / 100);
  const eventLoopDelayMs = { p99: beyond(delay.percentile(99)), max: beyond(delay.max) };
  return { warmMs, elapsedMs, scheduled, sent, ended, status, errors, eventLoopDelayMs };
}

if (require.main === module && process.send) {
  let go: (() => void) | null = null;
  process.on('message', (msg: { job?: EntitlementLoadJob; go?: boolean }) => {
    if (msg.go) return void go?.();
    if (!msg.job) return;
    // Warmed up: the orchestrator takes its 'before' readings, then says go.
    const beforeLoop = () =>
      new Promise<void>((resolve) => {
        go = resolve;
        process.send!({ warmed: true });
      });
    runEntitlementLoad(msg.job, beforeLoop).then(
      (result) => process.send!({ result }),
      (err: unknown) => process.send!({ error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
