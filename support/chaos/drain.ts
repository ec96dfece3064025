/**
 * The end of the burst and the drain: every handled event applied and every poison set aside, then each
 * failed or slow attempt charged to the fault it was in flight during, and the orphaned claims of API kills traced.
 */
import path from 'node:path';
import { sleep } from '../billing-stack/stack';
import { readApiDispatchedSince } from './probes';
import { RECOVERY_GRACE_MS, STORE_FAULTS } from './types';
import type { ChaosRun } from './context';
import type { Faults } from './faults';
import type { Sent } from './sender';

export type Drained = Awaited<ReturnType<typeof drain>>;

/** Waits for the burst, its faults and the drain; returns their timings and what was handled. */
export async function drain(ctx: ChaosRun, sent: Sent, f: Faults) {
  const { s, o, stream, log, dir, violations, replicaOf, state } = ctx;
  const { balancer, agent, non2xx, failedAttempts, attemptTimes, burstStart, inboxSamples, sampler, sender } = sent;
  const { faults, windows, watches, orphansOf, injector } = f;
  await Promise.all([sender, injector]);
  agent.destroy();
  await balancer.stop();
  const burstMs = Date.now() - burstStart;
  const burstEndAcked = faults.filter((f) => f.firedAtAcked >= stream.deliveries.length);
  for (const f of burstEndAcked) violations.push(`fault ${f.kind} fired after the burst had finished (raise events or lower --rate)`);
  log(`burst done in ${burstMs} ms: ${state.acked} acknowledged, ${state.retried} deliveries needed retries (${JSON.stringify(non2xx)})`);

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
  state.sampling = false;
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

  return { burstMs, drainMs, handled, poisonIds, failedOutsideStoreFaults };
}
