/**
 * The lean chaos run inside `npm test`: its own PostgreSQL cluster and Temporal dev server (it kills and
 * restarts them), the API and worker as child processes (the SIGKILL is real), one fault of each kind.
 */
import { describe, expect, it } from 'vitest';
import { renderChaosReport, runChaos } from '../../scripts/chaos';

describe('chaos: faults in the middle of a webhook burst', () => {
  it('loses no event, applies none twice and converges to the fault-free state across a worker SIGKILL, a Temporal restart and a Postgres restart', async () => {
    const lines: string[] = [];
    const report = await runChaos({
      events: 150,
      customers: 15,
      duplicateRate: 0.2,
      seed: 20261127,
      log: (line) => lines.push(line),
    });
    const summary = `${renderChaosReport(report)}\n${lines.join('\n')}`;

    expect(report.violations, summary).toEqual([]);
    expect(report.faults.map((f) => f.kind)).toEqual(['worker-kill', 'temporal-restart', 'postgres-restart']);
    // Every fault fired while deliveries were still being acknowledged.
    for (const f of report.faults) expect(f.firedAtAcked, summary).toBeLessThan(report.counts.deliveries);
    expect(report.counts.lost).toBe(0);
    expect(report.counts.applied).toBe(report.counts.handled);
    expect(report.counts.unexpectedApplied).toBe(0);
    expect(report.counts.notIgnored).toBe(0);
    expect(report.counts.stateMismatches).toBe(0);
    expect(report.counts.notifications).toBe(report.counts.distinctNotificationKeys);
    // One notice per opened dunning cycle, across the faults (the per-customer check is a violation above).
    expect(report.counts.deliveredNotifications).toBe(report.counts.expectedNotifications);
    expect(report.counts.expectedNotifications).toBeGreaterThan(0);
    // The stream really had what the checks are about.
    expect(report.counts.duplicateDeliveries).toBeGreaterThan(0);
    expect(report.counts.ignoredTypes).toBeGreaterThan(0);
    expect(report.counts.customersChecked).toBe(15);
  }, 240_000);
});
