import type { ChaosReport } from './types';

/** Renders the report as the table `npm run chaos` prints. */
export function renderChaosReport(r: ChaosReport): string {
  const c = r.counts;
  const multi = r.replicas.apis.length > 1 || r.replicas.workers.length > 1;
  const perReplica = (byName: Record<string, number>) => Object.entries(byName).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  const replicaLines = multi
    ? [
        `| API replicas: deliveries acknowledged (before the kill) · claims by its dispatcher | ${r.replicas.apis.map((a) => `${a.name}: ${a.acknowledged}${a.acknowledgedBeforeKill === null ? '' : ` (${a.acknowledgedBeforeKill})`} · ${a.claimed}${a.killed ? ', killed' : ''}`).join('; ')} |`,
        `| worker replicas: events applied (before the kill) | ${r.replicas.workers.map((w) => `${w.name}: ${w.applied}${w.appliedBeforeKill === null ? '' : ` (${w.appliedBeforeKill})`}${w.killed ? ', killed' : ''}`).join('; ')} |`,
      ]
    : [];
  const shutdownLines = r.shutdowns.length
    ? [`| SIGTERM at the end: exit, time (bound) | ${r.shutdowns.map((x) => `${x.name}: ${x.code ?? x.signal} in ${(x.ms / 1000).toFixed(1)} s (≤ ${x.boundMs / 1000} s)`).join('; ')} |`]
    : [];
  const lines = [
    '',
    `| chaos check | result |`,
    `|---|---|`,
    `| unique events (handled + ignored types + poison) | ${c.uniqueEvents} (${c.handled} + ${c.ignoredTypes} + ${c.poisonEvents}) |`,
    `| deliveries sent (incl. duplicates) | ${c.deliveries} (${c.duplicateDeliveries} duplicates), ${c.retriedDeliveries} needed retries; failed attempts: ${JSON.stringify(c.non2xx)} |`,
    ...replicaLines,
    ...r.faults.map((f) => {
      const failed = f.failedDeliveriesDuring ? `${f.failedDeliveriesDuring} failed attempts ${JSON.stringify(f.failedBy)} (retried)` : 'no failed attempt';
      const oc = f.orphanedClaims;
      const claims = oc
        ? `; ${oc.rows} rows left claimed by the killed API, ${oc.resent} of them dispatched again by ${f.kind === 'api-replica-kill' ? 'the surviving replicas' : 'the new one'}` +
          (multi ? ` (claimed again: ${oc.takenOver}, by ${perReplica(oc.reclaimedBy)}; settled from a signal it had sent: ${oc.settledFromLandedSignal})` : '') +
          (oc.clearedAfterMs === null ? '' : `, none 'received' ${oc.clearedAfterMs} ms after the kill`)
        : '';
      const pending = f.pendingAtKill
        ? `; ${f.pendingAtKill.events} events handed to Temporal and not yet applied at the kill${f.pendingAtKill.appliedAfterMs === null ? ', NOT all applied' : `, all applied by the survivors ${f.pendingAtKill.appliedAfterMs} ms after it`}`
        : '';
      const inbox = f.inboxPeak === null ? 'inbox not readable' : `inbox peak ${f.inboxPeak} 'received' rows`;
      return `| fault: ${f.kind}${multi && f.replica ? ` (${f.replica})` : ''} | at ${f.firedAtAcked}/${c.deliveries} acknowledged, ${f.durationMs} ms, ${failed}, slowest answer ${f.slowestAnswerMs} ms, ${inbox}${claims}${pending} |`;
    }),
    `| failed attempts outside the Postgres restart and the API kill | ${c.failedOutsideStoreFaults} |`,
    r.crashes.rate > 0
      ? `| fault: crash after commit (${Math.round(r.crashes.rate * 1000) / 10} % of applies, and every apply holding a payment failure or a poison) | ${r.crashes.injected} applies failed after their commit and were retried; payment-failure applies among them: ${r.crashes.paymentFailuresCrashed} of ${r.crashes.paymentFailures}, poison applies: ${r.crashes.poisonsCrashed} of ${c.poisonEvents} |`
      : `| fault: crash after commit | off (--crash-rate 0) |`,
    `| unexpected process exits | ${r.unexpectedExits.length ? r.unexpectedExits.map((e) => `${e.name} (${e.code ?? e.signal})`).join(', ') : 'none'} |`,
    `| lost events (handled, not applied) | ${c.lost} |`,
    `| applied_events rows / unique handled events | ${c.applied} / ${c.handled} |`,
    `| applied rows for non-handled events | ${c.unexpectedApplied} |`,
    `| ignored-type events not recorded as ignored | ${c.notIgnored} |`,
    `| poison events (invoice attempt_count 2^31: int4 overflow) quarantined by the apply / sent; other events quarantined | ${c.quarantinedPoison} / ${c.poisonEvents}; ${c.quarantinedOther} |`,
    `| poisoned customers' later events applied | ${c.laterEventsOfPoisonedApplied} / ${c.laterEventsOfPoisoned} |`,
    `| dunning cycles / expected (one per failed, never-paid invoice) | ${c.cycles} / ${c.expectedCycles} |`,
    `| effects missing / doubled / unexpected (cycle row, running dunning workflow, notice) | ${c.effectsMissing} / ${c.effectsDoubled} / ${c.effectsUnexpected} |`,
    `| notifications: rows / distinct dedup keys | ${c.notifications} / ${c.distinctNotificationKeys} |`,
    `| notices delivered / expected (one per opened dunning cycle) / suppressed by the caps | ${c.deliveredNotifications} / ${c.expectedNotifications} / ${c.suppressedNotifications} |`,
    `| customers whose final state ≠ fault-free result | ${c.stateMismatches} of ${c.customersChecked} |`,
    ...shutdownLines,
    `| time: stack / burst / drain after burst | ${(r.timings.stackMs / 1000).toFixed(1)} s / ${(r.timings.burstMs / 1000).toFixed(1)} s / ${(r.timings.drainMs / 1000).toFixed(1)} s |`,
    '',
    r.ok
      ? 'CHAOS OK: zero lost, zero double-applied, zero effects missing or doubled, poison quarantined without blocking its customer, final state equals the fault-free result.' : `CHAOS FAILED:\n${r.violations.map((v) => `  - ${v}`).join('\n')}\n(logs kept in ${r.dir})`,
    '',
  ];
  return lines.join('\n');
}

