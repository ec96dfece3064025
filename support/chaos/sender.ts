/**
 * The sender: deliveries paced over the API replicas (a load balancer's rotation), retried like Stripe
 * retries; and the inbox sampler that runs beside it until the drain ends.
 */
import http from 'node:http';
import Stripe from 'stripe';
import { sleep } from '../billing-stack/stack';
import { postSigned, sendWithRetry } from '../webhook-sender';
import { createBalancer } from './balancer';
import type { ChaosRun } from './context';

export type Sent = Awaited<ReturnType<typeof startSender>>;

/** Starts the burst and the inbox sampler; `sender` resolves once every delivery is acknowledged. */
export function startSender(ctx: ChaosRun) {
  const { s, o, stream, byId, rate, state } = ctx;
  // The sender: paced, retries every non-2xx and connection error with backoff like Stripe (compressed
  // from hours to seconds), each attempt to the next API in the balancer's rotation.
  const balancer = createBalancer(s.apiUrls);
  const webhookUrls = s.apiUrls.map((u) => new URL(`${u}/webhooks/stripe`));
  const ackedBy = s.apiUrls.map(() => 0);
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const non2xx: Record<string, number> = {};
  const failedAttempts: { start: number; end: number; key: string }[] = [];
  /** Every attempt's [start, end], for the slowest answer during each fault. */
  const attemptTimes: { start: number; end: number }[] = [];
  const burstStart = Date.now();

  // The inbox: rows stored and not yet handed over, sampled until the drain ends (a failed read, during
  // the Postgres restart, is skipped).
  const inboxSamples: { at: number; received: number }[] = [];
  state.sampling = true;
  const sampler = (async () => {
    while (state.sampling) {
      const received = await s.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_events WHERE status = 'received'`.then((r) => r[0]!.n, () => -1);
      if (received >= 0) inboxSamples.push({ at: Date.now(), received });
      await sleep(200);
    }
  })();
  const deliver = async (eventId: string) => {
    const ev = byId.get(eventId)!;
    await sendWithRetry(async (attempt) => {
      const signature = Stripe.webhooks.generateTestHeaderString({ payload: ev.body, secret: s.webhookSecret });
      const target = balancer.pick();
      const attemptStart = Date.now();
      const status = await postSigned(agent, webhookUrls[target]!, ev.body, signature, 30_000);
      attemptTimes.push({ start: attemptStart, end: Date.now() });
      if (status >= 200 && status < 300) {
        ackedBy[target]!++;
        return status;
      }
      if (status === 0) balancer.eject(target);
      const key = status === 0 ? 'network error' : String(status);
      non2xx[key] = (non2xx[key] ?? 0) + 1;
      failedAttempts.push({ start: attemptStart, end: Date.now(), key });
      if (attempt === 0) state.retried++;
      if (Date.now() - burstStart > 20 * 60_000) throw new Error(`delivery of ${eventId} never acknowledged`);
      return status;
    });
    state.acked++;
  };
  const sender = Promise.all(
    Array.from({ length: o.concurrency }, async () => {
      for (;;) {
        const i = state.next++;
        if (i >= stream.deliveries.length) return;
        const due = burstStart + (i * 1000) / rate;
        if (due > Date.now()) await sleep(due - Date.now());
        await deliver(stream.deliveries[i]!);
      }
    }),
  );

  return { balancer, agent, ackedBy, non2xx, failedAttempts, attemptTimes, burstStart, inboxSamples, sampler, sender };
}
