/**
 * The benchmark's load generator. Runs in its own process (forked by scripts/bench/main.ts with an IPC
 * channel) so its CPU is measured apart from the API's. Sends signed `customer.subscription.updated`
 * webhooks over many customers, with a share of duplicates (an earlier event re-sent and re-signed,
 * as Stripe does), either closed-loop at a concurrency or open-loop at a fixed offered rate.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Stripe from 'stripe';
import { Client, Connection } from '@temporalio/client';
import { FIXTURE_EVENTS_DIR } from '../../support/fixtures';
import { prng } from '../../support/prng';
import { postSigned } from '../../support/webhook-sender';

/** One load phase, sent from the orchestrator. */
export interface LoadJob {
  url: string;
  secret: string;
  mode: 'closed' | 'open';
  /** closed: parallel senders; open: cap on requests in flight. */
  concurrency: number;
  /** open: offered requests per second. */
  ratePerSecond?: number;
  /** Stop after this long (ms) … */
  durationMs: number;
  /** … or after this many requests, whichever comes first. */
  maxRequests?: number;
  /** Event ids are `evt_<tag>_<n>`. */
  tag: string;
  /** Customers are `cus_<customerTag>C<i>Customer01` (default: tag), i in [0, customers). */
  customerTag?: string;
  customers: number;
  /** Customer of request n is n % customers (instead of random): every customer gets one event first. */
  roundRobin?: boolean;
  duplicateRate: number;
  /** `created` of the first event; each next event gets +1 so no two events of a subscription tie. */
  createdBase: number;
  seed: number;
  /** Return [eventId, epoch ms of the scheduled send] for every fresh event answered 2xx. */
  recordSends?: boolean;
  /**
   * A renewal storm: request n is event type `sequence[n % length]` of customer `floor(n / length)`,
   * built from its fixture (test/fixtures/events), all of one customer's events with the same `created`.
   * Replaces the subscription.updated stream (no duplicates).
   */
  sequence?: string[];
  /**
   * The hand-over alone: instead of POSTing, signal-with-start `bench-ceiling:<customer>` on this
   * Temporal server (a task queue no worker polls), with a signal of the size of a normalized event.
   */
  temporal?: { address: string; taskQueue: string };
}

export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export interface LoadResult {
  tag: string;
  elapsedMs: number;
  requests: number;
  fresh: number;
  duplicates: number;
  ok: number;
  /** Status code (or 'error') → count, for non-2xx answers. */
  failures: Record<string, number>;
  /** Open loop: requests that could not be sent on time because `concurrency` were in flight. */
  skipped: number;
  okPerSecond: number;
  latencyMs: LatencySummary;
  freshOk: number;
  lastCreated: number;
  sends?: [string, number][];
}

/** Percentiles (nearest-rank) of a list of milliseconds. */
export function summarize(values: number[]): LatencySummary {
  if (values.length === 0) return { count: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0 };
  const s = Float64Array.from(values).sort();
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  const r = (x: number) => Math.round(x * 10) / 10;
  return { count: s.length, p50: r(at(0.5)), p95: r(at(0.95)), p99: r(at(0.99)), max: r(s[s.length - 1]!), mean: r(s.reduce((a, b) => a + b, 0) / s.length) };
}

const FIXTURE = path.join(FIXTURE_EVENTS_DIR, 'customer.subscription.updated.json');
/**
 * Most real `customer.subscription.updated` events change a period, a flag or metadata, not the status:
 * one in ten flips it (which also updates the workflow's search attributes, a visibility write).
 */
const STATUS_FLIP_RATE = 0.1;

/**
 * A fast body builder: the fixture serialized once with markers, split into literal segments, so a
 * body is a string join (no JSON.parse/stringify per request).
 */
export function subscriptionEventTemplate(): (p: { eventId: string; created: number; token: string; status: string; periodEnd: number }) => string {
  const env = JSON.parse(readFileSync(FIXTURE, 'utf8').replace(/_Fixture/g, '_@@TOKEN@@').replace(/Fixture/g, '@@TOKEN@@'));
  env.id = '@@EVENT@@';
  env.created = '@@CREATED@@';
  env.data.object.status = '@@STATUS@@';
  env.data.object.items.data[0].current_period_end = '@@PERIOD@@';
  const text = JSON.stringify(env).replace(/"@@CREATED@@"/g, '@@CREATED@@').replace(/"@@PERIOD@@"/g, '@@PERIOD@@');
  const parts = text.split(/@@(EVENT|CREATED|TOKEN|STATUS|PERIOD)@@/);
  return (p) => {
    let out = '';
    for (let i = 0; i < parts.length; i++) {
      if (i % 2 === 0) out += parts[i];
      else {
        const k = parts[i];
        out += k === 'EVENT' ? p.eventId : k === 'CREATED' ? String(p.created) : k === 'TOKEN' ? p.token : k === 'STATUS' ? p.status : String(p.periodEnd);
      }
    }
    return out;
  };
}

/**
 * A body builder for any fixture type: `Fixture` in ids becomes the customer's token, the id and
 * `created` are the request's. One JSON.parse per type, a string join per request.
 */
export function fixtureEventTemplate(type: string): (p: { eventId: string; created: number; token: string }) => string {
  const file = path.join(FIXTURE_EVENTS_DIR, `${type}.json`);
  const env = JSON.parse(readFileSync(file, 'utf8').replace(/_Fixture/g, '_@@TOKEN@@').replace(/Fixture/g, '@@TOKEN@@'));
  env.id = '@@EVENT@@';
  env.created = '@@CREATED@@';
  const parts = JSON.stringify(env).replace(/"@@CREATED@@"/g, '@@CREATED@@').split(/@@(EVENT|CREATED|TOKEN)@@/);
  return (p) => {
    let out = '';
    for (let i = 0; i < parts.length; i++) {
      if (i % 2 === 0) out += parts[i];
      else out += parts[i] === 'EVENT' ? p.eventId : parts[i] === 'CREATED' ? String(p.created) : p.token;
    }
    return out;
  };
}

/** The customer id a bench event for customer index i of a tag is about. */
export const benchCustomerId = (tag: string, i: number) => `cus_${tag}C${i}Customer01`;

/** Runs one load phase in this process. */
export async function runLoad(job: LoadJob): Promise<LoadResult> {
  const url = new URL(job.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.concurrency });
  const build = subscriptionEventTemplate();
  const rand = prng(job.seed);
  const recent: string[] = [];
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  const sends: [string, number][] = [];
  let n = 0;
  let fresh = 0;
  let duplicates = 0;
  let ok = 0;
  let freshOk = 0;
  let skipped = 0;
  let created = job.createdBase;
  const maxRequests = job.maxRequests ?? Number.POSITIVE_INFINITY;

  const pastDue = new Uint8Array(job.customers);
  const nextStatus = (c: number) => {
    if (rand() < STATUS_FLIP_RATE) pastDue[c] = pastDue[c] ? 0 : 1;
    return pastDue[c] ? 'past_due' : 'active';
  };
  const sequence = job.sequence?.map((type) => fixtureEventTemplate(type)) ?? null;
  const nextBody = (): { body: string; eventId: string | null } => {
    if (sequence) {
      const i = n;
      const c = Math.floor(i / sequence.length);
      const eventId = `evt_${job.tag}_${i}`;
      fresh++;
      return { body: sequence[i % sequence.length]!({ eventId, created: job.createdBase + c, token: `${job.customerTag ?? job.tag}C${c}` }), eventId };
    }
    if (recent.length > 0 && rand() < job.duplicateRate) {
      duplicates++;
      return { body: recent[Math.floor(rand() * recent.length)]!, eventId: null };
    }
    const i = n;
    const c = job.roundRobin ? i % job.customers : Math.floor(rand() * job.customers);
    const eventId = `evt_${job.tag}_${i}`;
    const body = build({ eventId, created: created++, token: `${job.customerTag ?? job.tag}C${c}`, status: nextStatus(c), periodEnd: 1_900_000_000 + i });
    fresh++;
    return { body, eventId };
  };

  const temporal = job.temporal ? new Client({ connection: await Connection.connect({ address: job.temporal.address }) }) : null;
  /** The hand-over alone: one signal-with-start per body, 200 if it succeeded. */
  const signalOne = async (body: string, eventId: string | null): Promise<number> => {
    const customer = /"customer":"([^"]+)"/.exec(body)?.[1] ?? 'unknown';
    try {
      // Its own workflow type, so counts of live customer workflows do not include these.
      await temporal!.workflow.signalWithStart('benchCeilingWorkflow', {
        workflowId: `bench-ceiling:${customer}`,
        taskQueue: job.temporal!.taskQueue,
        args: [{ customerId: customer }],
        signal: 'stripeEvent',
        // About the size of a normalized BillingEvent.
        signalArgs: [{ eventId: eventId ?? 'dup', customerId: customer, data: body.slice(0, 600) }],
      });
      return 200;
    } catch {
      return 503;
    }
  };

  const sendOne = async (scheduledAt: number): Promise<void> => {
    const { body, eventId } = nextBody();
    n++;
    const status = temporal
      ? await signalOne(body, eventId)
      : await postSigned(agent, url, body, Stripe.webhooks.generateTestHeaderString({ payload: body, secret: job.secret }));
    const ms = performance.now() - scheduledAt;
    if (status >= 200 && status < 300) {
      ok++;
      latencies.push(ms);
      if (eventId) {
        freshOk++;
        if (recent.length < 2000) recent.push(body);
        else recent[Math.floor(rand() * recent.length)] = body;
        if (job.recordSends) sends.push([eventId, performance.timeOrigin + scheduledAt]);
      }
    } else {
      const key = status === 0 ? 'error' : String(status);
      failures[key] = (failures[key] ?? 0) + 1;
    }
  };

  const started = performance.now();
  const deadline = started + job.durationMs;
  if (job.mode === 'closed') {
    await Promise.all(
      Array.from({ length: job.concurrency }, async () => {
        while (performance.now() < deadline && n < maxRequests) await sendOne(performance.now());
      }),
    );
  } else {
    const rate = job.ratePerSecond ?? 100;
    const interval = 1000 / rate;
    const inflight = new Set<Promise<void>>();
    let i = 0;
    while (performance.now() < deadline && n < maxRequests) {
      const due = started + i * interval;
      const now = performance.now();
      if (due > now) {
        await new Promise((r) => setTimeout(r, Math.max(0, Math.min(due - now, 50))));
        continue;
      }
      i++;
      if (inflight.size >= job.concurrency) {
        skipped++;
        continue;
      }
      const p = sendOne(due).finally(() => inflight.delete(p));
      inflight.add(p);
    }
    await Promise.all(inflight);
  }
  const elapsedMs = performance.now() - started;
  agent.destroy();
  await temporal?.connection.close();
  return {
    tag: job.tag,
    elapsedMs: Math.round(elapsedMs),
    requests: n,
    fresh,
    duplicates,
    ok,
    failures,
    skipped,
    okPerSecond: Math.round((ok / (Math.min(elapsedMs, job.durationMs) / 1000)) * 10) / 10,
    latencyMs: summarize(latencies),
    freshOk,
    lastCreated: job.sequence ? job.createdBase + Math.ceil(n / job.sequence.length) : created,
    ...(job.recordSends ? { sends } : {}),
  };
}

if (require.main === module && process.send) {
  process.on('message', (msg: { job: LoadJob }) => {
    runLoad(msg.job).then(
      (result) => process.send!({ result }),
      (err: unknown) => process.send!({ error: err instanceof Error ? err.stack ?? err.message : String(err) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
