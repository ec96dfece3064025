/**
 * Replicas: 2 API and 2 worker processes on one PostgreSQL and one Temporal dev server (their own, as in
 * chaos.test.ts), a webhook burst spread over both APIs, and mid-burst one of each SIGKILLed and left
 * dead. The survivors carry the rest: nothing lost or applied twice, effects once, the dead API's claims
 * taken over by the other dispatcher, and at the end both survivors stop cleanly on SIGTERM.
 */
import { describe, expect, it } from 'vitest';
import { renderChaosReport, runChaos } from '../../support/chaos/run';

describe('replicas: two APIs and two workers, one of each SIGKILLed mid-burst', () => {
  it('loses no event, applies none twice and runs every effect once while the surviving API and worker carry the rest, then both stop cleanly on SIGTERM', async () => {
    const lines: string[] = [];
    const report = await runChaos({
      events: 180,
      customers: 18,
      duplicateRate: 0.2,
      seed: 20261203,
      poisonCustomers: 1,
      // About replicas: no apply fails after its commit here (chaos.test.ts covers that).
      crashAfterCommitRate: 0,
      apiReplicas: 2,
      workerReplicas: 2,
      faults: [
        { kind: 'api-replica-kill', at: 0.3 },
        { kind: 'worker-replica-kill', at: 0.5 },
      ],
      gracefulStop: true,
      log: (line) => lines.push(line),
    });
    const summary = `${renderChaosReport(report)}\n${lines.join('\n')}`;
    const c = report.counts;

    expect(report.violations, summary).toEqual([]);
    expect(report.unexpectedExits, summary).toEqual([]);
    const [apiKill, workerKill] = report.faults;
    expect(report.faults.map((f) => [f.kind, f.replica])).toEqual([
      ['api-replica-kill', 'api'],
      ['worker-replica-kill', 'worker'],
    ]);
    for (const f of report.faults) expect(f.firedAtAcked, summary).toBeLessThan(c.deliveries);

    // Both APIs took deliveries before the kill; the survivor took the rest.
    const [api1, api2] = report.replicas.apis;
    expect(report.replicas.apis.map((a) => [a.name, a.killed])).toEqual([
      ['api', true],
      ['api-2', false],
    ]);
    expect(api1!.acknowledgedBeforeKill, summary).toBeGreaterThan(0);
    expect(api2!.acknowledgedBeforeKill, summary).toBeGreaterThan(0);
    expect(api1!.acknowledged).toBe(api1!.acknowledgedBeforeKill);
    expect(api2!.acknowledged, summary).toBeGreaterThan(api2!.acknowledgedBeforeKill!);
    expect(api1!.acknowledged + api2!.acknowledged).toBe(c.deliveries);
    // Both dispatchers handed rows over.
    expect(api1!.claimed, summary).toBeGreaterThan(0);
    expect(api2!.claimed, summary).toBeGreaterThan(0);

    // The rows the dead API had claimed: claimed again by the survivor once their lease ran out (or
    // applied from a signal it had sent before dying), none left 'received'.
    const orphans = apiKill!.orphanedClaims!;
    expect(orphans.rows, summary).toBeGreaterThan(0);
    expect(orphans.takenOver, summary).toBeGreaterThan(0);
    expect(Object.keys(orphans.reclaimedBy)).toEqual(['api-2']);
    expect(orphans.reclaimedBy['api-2']).toBe(orphans.takenOver);
    expect(orphans.takenOver + orphans.settledFromLandedSignal, summary).toBe(orphans.rows);
    expect(orphans.resent, summary).toBeGreaterThan(0);
    expect(orphans.clearedAfterMs, summary).not.toBeNull();

    // Deliveries failed only around the API kill (refused by the dead one), and each was retried on the survivor.
    expect(c.failedOutsideStoreFaults, summary).toBe(0);
    expect(apiKill!.failedDeliveriesDuring, summary).toBeGreaterThan(0);
    expect(Object.keys(c.non2xx), summary).toEqual(['network error']);
    expect(workerKill!.failedDeliveriesDuring).toBe(0);

    // Both workers applied before the kill; the survivor applied the rest, including what the dead one held.
    const [worker1, worker2] = report.replicas.workers;
    expect(report.replicas.workers.map((w) => [w.name, w.killed])).toEqual([
      ['worker', true],
      ['worker-2', false],
    ]);
    expect(worker1!.appliedBeforeKill, summary).toBeGreaterThan(0);
    expect(worker2!.appliedBeforeKill, summary).toBeGreaterThan(0);
    expect(worker2!.applied, summary).toBeGreaterThan(worker2!.appliedBeforeKill!);
    expect(worker1!.applied + worker2!.applied).toBe(c.applied);
    // Killed with events in its hands (Temporal had them, it had not applied them): the survivor applied them.
    expect(workerKill!.pendingAtKill!.events, summary).toBeGreaterThan(0);
    expect(workerKill!.pendingAtKill!.appliedAfterMs, summary).not.toBeNull();

    // 0 lost, 0 double, effects once, the fault-free state.
    expect(c.lost).toBe(0);
    expect(c.applied).toBe(c.handled);
    expect(c.unexpectedApplied).toBe(0);
    expect(c.notIgnored).toBe(0);
    expect(c.stateMismatches).toBe(0);
    expect(c.customersChecked).toBe(18);
    expect(c.cycles).toBe(c.expectedCycles);
    expect(c.expectedCycles).toBeGreaterThan(0);
    expect([c.effectsMissing, c.effectsDoubled, c.effectsUnexpected]).toEqual([0, 0, 0]);
    expect(c.notifications).toBe(c.distinctNotificationKeys);
    expect(c.deliveredNotifications).toBe(c.expectedNotifications);
    expect([c.poisonEvents, c.quarantinedPoison, c.quarantinedOther]).toEqual([1, 1, 0]);
    expect(c.laterEventsOfPoisonedApplied).toBe(c.laterEventsOfPoisoned);
    expect(c.duplicateDeliveries).toBeGreaterThan(0);

    // SIGTERM to the survivors: exit 0 within the bound (API: stops accepting, answers what is in flight; worker: drains).
    expect(report.shutdowns.map((x) => [x.name, x.code])).toEqual([
      ['api-2', 0],
      ['worker-2', 0],
    ]);
    const [apiStop, workerStop] = report.shutdowns;
    expect(apiStop!.ms, summary).toBeLessThanOrEqual(10_000);
    expect(workerStop!.ms, summary).toBeLessThanOrEqual(30_000);
  }, 240_000);
});
