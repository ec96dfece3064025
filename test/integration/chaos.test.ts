/**
 * The lean chaos run inside `npm test`: its own PostgreSQL cluster and Temporal dev server (it kills and
 * restarts them), the API and worker as child processes (the SIGKILLs are real), one fault of each kind,
 * applies failed after their commit, and one poisoned customer.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderChaosReport, runChaos } from '../../support/chaos/run';

const ROOT = path.resolve(__dirname, '../..');

describe('chaos: faults in the middle of a webhook burst', () => {
  it('loses no event, applies none twice, misses no effect, quarantines the poison and converges to the fault-free state across worker SIGKILLs, crashes after commit, a Temporal restart, a Postgres restart and an API SIGKILL', async () => {
    const lines: string[] = [];
    const report = await runChaos({
      events: 150,
      customers: 15,
      duplicateRate: 0.2,
      seed: 20261127,
      poisonCustomers: 1,
      // Restarted at once: held down for a second, it stalls the API's pool for up to 20 s (postgres.js
      // reconnect backoff). `npm run chaos` shows that; here it would only stretch the run.
      postgresDowntimeMs: 0,
      log: (line) => lines.push(line),
    });
    const summary = `${renderChaosReport(report)}\n${lines.join('\n')}`;

    expect(report.violations, summary).toEqual([]);
    expect(report.faults.map((f) => f.kind)).toEqual(['api-kill', 'worker-kill', 'temporal-restart', 'worker-kill-after-commit', 'postgres-restart']);
    // Every fault fired while deliveries were still being acknowledged.
    for (const f of report.faults) expect(f.firedAtAcked, summary).toBeLessThan(report.counts.deliveries);
    // Acknowledged on commit: only Postgres down or the API gone fails a delivery, never Temporal or the worker.
    expect(report.counts.failedOutsideStoreFaults, summary).toBe(0);
    const byKind = (kind: string) => report.faults.find((f) => f.kind === kind)!;
    expect(byKind('temporal-restart').failedDeliveriesDuring, summary).toBe(0);
    expect(byKind('api-kill').failedDeliveriesDuring, summary).toBeGreaterThan(0);
    expect(report.counts.lost).toBe(0);
    expect(report.counts.applied).toBe(report.counts.handled);
    expect(report.counts.unexpectedApplied).toBe(0);
    expect(report.counts.notIgnored).toBe(0);
    expect(report.counts.stateMismatches).toBe(0);
    expect(report.counts.notifications).toBe(report.counts.distinctNotificationKeys);
    // One notice per opened dunning cycle, across the faults (the per-customer check is a violation above).
    expect(report.counts.deliveredNotifications).toBe(report.counts.expectedNotifications);
    expect(report.counts.expectedNotifications).toBeGreaterThan(0);
    // Effects: one cycle (row and running workflow) and one notice per failed, never-paid invoice.
    expect(report.counts.cycles).toBe(report.counts.expectedCycles);
    expect([report.counts.effectsMissing, report.counts.effectsDoubled, report.counts.effectsUnexpected]).toEqual([0, 0, 0]);
    // The apply that opened each cycle failed after its commit: the cycle came from the re-run's recorded effects.
    expect(report.crashes.injected, summary).toBeGreaterThan(0);
    expect(report.crashes.paymentFailuresCrashed).toBe(report.crashes.paymentFailures);
    expect(report.crashes.paymentFailures).toBeGreaterThan(0);
    // The poison is set aside, not lost, and its customer's later events are applied.
    expect(report.counts.poisonEvents).toBe(1);
    expect(report.counts.quarantinedPoison).toBe(1);
    expect(report.counts.quarantinedOther).toBe(0);
    expect(report.counts.laterEventsOfPoisoned).toBeGreaterThan(0);
    expect(report.counts.laterEventsOfPoisonedApplied).toBe(report.counts.laterEventsOfPoisoned);
    // The stream really had what the checks are about.
    expect(report.counts.duplicateDeliveries).toBeGreaterThan(0);
    expect(report.counts.ignoredTypes).toBeGreaterThan(0);
    expect(report.counts.customersChecked).toBe(15);
  }, 240_000);

  it('refuses to start a worker with fault injection when NODE_ENV=production', () => {
    const r = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsx'), [path.join(ROOT, 'worker', 'main.ts')], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 30_000,
      env: {
        PATH: process.env.PATH,
        NODE_ENV: 'production',
        ADMIN_TOKEN: 'a'.repeat(32),
        // Unreachable on purpose: the refusal comes before any connection.
        DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
        TEMPORAL_ADDRESS: '127.0.0.1:1',
        STRIPE_SECRET_KEY: 'sk_test_refusal',
        STRIPE_WEBHOOK_SECRET: 'whsec_refusal',
        FAULT_AFTER_COMMIT_RATE: '0.1',
      },
    });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toContain('Refusing to start: FAULT_AFTER_COMMIT_RATE');
    expect(r.stderr).toContain('NODE_ENV=production');
  }, 40_000);
});
