/** The fault driver: each fault kind fired once its share of the burst is acknowledged, and watched until it recovers. */
import { rmSync, writeFileSync } from 'node:fs';
import { sleep, type ServiceProcess } from '../billing-stack/stack';
import { restartPostgres } from './probes';
import { WORKER_KILLS, type FaultRecord } from './types';
import type { ChaosRun } from './context';
import type { Sent } from './sender';

export type Faults = ReturnType<typeof startFaults>;

/** Starts the fault driver; `injector` resolves once every fault fired and its restarts are done (watches may go on). */
export function startFaults(ctx: ChaosRun, sent: Sent) {
  const { s, o, stream, log, violations, killFile, appOf, state } = ctx;
  const { balancer, ackedBy } = sent;
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
      while (state.acked < f.at * stream.deliveries.length && state.next < stream.deliveries.length) await sleep(50);
      const record: FaultRecord = { kind: f.kind, firedAtAcked: state.acked, durationMs: 0, failedDeliveriesDuring: 0, failedBy: {}, slowestAnswerMs: 0, inboxPeak: 0 };
      faults.push(record);
      let started = Date.now();
      const done = () => {
        record.durationMs = Date.now() - started;
        windows.set(record, [started, Date.now()]);
        log(`  ${f.kind} recovered after ${record.durationMs} ms`);
      };
      log(`fault: ${f.kind} at ${state.acked}/${stream.deliveries.length} acknowledged`);
      if (WORKER_KILLS.has(f.kind)) {
        const victim = s.workers.find((w) => w.running) ?? s.worker;
        record.replica = victim.name;
        if (f.kind === 'worker-kill') {
          state.applyMarkAtWorkerKill ??= await lastApplyId();
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
          record.firedAtAcked = state.acked;
          const pending = await pendingNow();
          state.applyMarkAtWorkerKill ??= await lastApplyId();
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
        state.killArmed = true;
        writeFileSync(killFile, '');
        background.push(
          (async () => {
            const deadline = Date.now() + o.drainTimeoutMs;
            while (!exited() && Date.now() < deadline) await sleep(50);
            const w = exited();
            if (!w) {
              state.killArmed = false;
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
        // Frozen first (both kinds): killed holding a claim whose signal never landed. A bare look-then-kill
        // raced the dispatcher, which often marked its claim dispatched in between (a flaky "held no claim").
        // The restarted API (api-kill) or the survivors (api-replica-kill) must hand it over once its lease ends.
        started = await freezeHolding(victim, () => held().then((h) => h.ids));
        record.firedAtAcked = state.acked;
        state.ackedBeforeApiKill ??= [...ackedBy];
        const killedAt = Date.now();
        await victim.kill9();
        // What the dead process left claimed (a pass may have marked some between the look and the kill).
        const { ids: orphans, mark } = await held();
        const orphaned: NonNullable<FaultRecord['orphanedClaims']> = { rows: orphans.length, resent: 0, clearedAfterMs: null, takenOver: 0, reclaimedBy: {}, settledFromLandedSignal: 0 };
        orphansOf.set(record, { eventIds: orphans, claimMark: mark, killedAt });
        record.orphanedClaims = orphaned;
        log(`  ${victim.name} SIGKILLed at ${state.acked}/${stream.deliveries.length} acknowledged with ${orphans.length} rows claimed by its dispatcher`);
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
          while (balancer.inRotation(victimIndex) && state.next < stream.deliveries.length && Date.now() < until) await sleep(10);
        }
        done();
      }
    }
    await Promise.all(background);
  })();

  return { faults, windows, watches, orphansOf, leftDead, injector };
}
