/**
 * The post-run checks: no event lost or applied twice, the poison quarantined without blocking its customer,
 * effects (dunning cycles, workflows, notices) neither missing nor doubled, the crash-after-commit faults
 * fired, every customer's final state the fault-free one, and who acknowledged, claimed and applied what.
 */
import path from 'node:path';
import { sleep } from '../billing-stack/stack';
import { readWorkerFaultLines } from './probes';
import { FAILED_ID_SUFFIX } from './stream';
import { type ChaosReport, type CrashRecord } from './types';
import type { ChaosRun } from './context';
import type { Drained } from './drain';
import type { Faults } from './faults';
import type { Sent } from './sender';

/** Runs the checks (violations go to `ctx.violations`); returns the report's counts, crashes and replicas. */
export async function runChecks(ctx: ChaosRun, sent: Sent, f: Faults, d: Drained) {
  const { s, o, stream, byId, dir, violations, unexpectedExits, killAfterCommit, appOf, state } = ctx;
  const { ackedBy, non2xx } = sent;
  const { faults, leftDead } = f;
  const { handled, poisonIds, failedOutsideStoreFaults } = d;
  // ---- checks
  const appliedRows = await s.sql<{ event_id: string }[]>`SELECT event_id FROM applied_events`;
  const appliedSet = new Set(appliedRows.map((r) => r.event_id));
  const lost = handled.filter((id) => !appliedSet.has(id));
  const unexpected = appliedRows.filter((r) => byId.get(r.event_id)?.fate !== 'applied');
  if (lost.length) violations.push(`${lost.length} handled events never applied (lost), e.g. ${lost.slice(0, 5).join(', ')}`);
  if (unexpected.length) violations.push(`${unexpected.length} applied_events rows for events that must not be applied, e.g. ${unexpected.slice(0, 5).map((r) => r.event_id).join(', ')}`);
  if (appliedRows.length !== handled.length) violations.push(`applied_events has ${appliedRows.length} rows for ${handled.length} unique handled events`);

  const ignoredIds = stream.events.filter((e) => e.fate === 'ignored').map((e) => e.id);
  const rows = await s.sql<{ event_id: string; status: string; last_error: string | null }[]>`
    SELECT event_id, status::text AS status, last_error FROM webhook_events`;
  const statusOf = new Map(rows.map((r) => [r.event_id, r.status]));
  const notIgnored = ignoredIds.filter((id) => statusOf.get(id) !== 'ignored');
  if (notIgnored.length) violations.push(`${notIgnored.length} unhandled-type events not recorded as ignored, e.g. ${notIgnored.slice(0, 5).join(', ')}`);
  const missingRows = stream.events.filter((e) => !statusOf.has(e.id));
  if (missingRows.length) violations.push(`${missingRows.length} acknowledged events missing from the delivery log`);
  const notApplied = handled.filter((id) => statusOf.has(id) && statusOf.get(id) !== 'applied');
  if (notApplied.length) violations.push(`${notApplied.length} handled events whose delivery-log status is not 'applied', e.g. ${notApplied.slice(0, 3).map((id) => `${id}=${statusOf.get(id)}`).join(', ')}`);

  // Poison: set aside by the apply's data-error path (never applied, its invoice never written), and
  // the poisoned customer's later events all applied — a bad event does not block its customer.
  const poisonSet = new Set(poisonIds);
  const quarantinedRows = rows.filter((r) => r.status === 'quarantined');
  const quarantinedPoison = quarantinedRows.filter((r) => poisonSet.has(r.event_id) && (r.last_error ?? '').startsWith('apply: '));
  const quarantinedOther = quarantinedRows.filter((r) => !poisonSet.has(r.event_id));
  const poisonProblems = poisonIds
    .filter((id) => !quarantinedPoison.some((r) => r.event_id === id))
    .map((id) => {
      const row = rows.find((r) => r.event_id === id);
      return `${id} is '${row?.status ?? 'missing'}'${row?.last_error ? ` (${row.last_error.slice(0, 80)})` : ''}, expected 'quarantined' by the apply`;
    });
  if (poisonProblems.length) violations.push(`poison: ${poisonProblems.length} events not quarantined, e.g. ${poisonProblems.slice(0, 3).join('; ')}`);
  if (quarantinedOther.length) {
    violations.push(`${quarantinedOther.length} non-poison events quarantined, e.g. ${quarantinedOther.slice(0, 3).map((r) => `${r.event_id}: ${r.last_error}`).join('; ')}`);
  }
  const poisonInvoices = stream.poisons.length
    ? await s.sql<{ id: string }[]>`SELECT id FROM invoices WHERE id IN ${s.sql(stream.poisons.map((p) => p.invoiceId))}`
    : [];
  if (poisonInvoices.length) violations.push(`poison: ${poisonInvoices.length} poison invoices written, e.g. ${poisonInvoices[0]!.id}`);
  const laterIds = stream.poisons.flatMap((p) => p.laterEventIds);
  const laterApplied = laterIds.filter((id) => appliedSet.has(id) && statusOf.get(id) === 'applied');
  if (laterApplied.length !== laterIds.length) {
    violations.push(`poison blocked its customer: ${laterIds.length - laterApplied.length} of ${laterIds.length} later events not applied, e.g. ${laterIds.filter((id) => !laterApplied.includes(id)).slice(0, 3).join(', ')}`);
  }

  // Notices: exactly one per opened dunning cycle, none for anyone else (the dunning child workflows
  // send them after their events were applied, so wait for them first).
  const dunningCustomers = new Set(stream.expected.filter((e) => e.dunning).map((e) => e.customerId));
  // Delivered = queued in the outbox or sent; 'suppressed' rows are the caps deciding not to send.
  const countNotices = () =>
    s.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM notifications WHERE status IN ('queued', 'sent')`.then((r) => r[0]!.n, () => -1);
  const noticeDeadline = Date.now() + o.drainTimeoutMs;
  while ((await countNotices()) < dunningCustomers.size && Date.now() < noticeDeadline) await sleep(250);
  await sleep(1000); // a late second notice would show up now
  const [notif] = await s.sql<{ total: number; distinct_keys: number }[]>`
    SELECT count(*)::int AS total, count(DISTINCT dedup_key)::int AS distinct_keys FROM notifications`;
  if (notif!.total !== notif!.distinct_keys) violations.push(`notifications: ${notif!.total} rows but ${notif!.distinct_keys} distinct dedup keys`);
  const perCustomer = await s.sql<{ customer_id: string; n: number }[]>`
    SELECT customer_id, count(*)::int AS n FROM notifications WHERE status IN ('queued', 'sent') GROUP BY customer_id`;
  const [suppressedRow] = await s.sql<{ suppressed: number }[]>`
    SELECT count(*)::int AS suppressed FROM notifications WHERE status = 'suppressed'`;
  const suppressed = suppressedRow?.suppressed ?? 0;
  const noticesUnexpected = perCustomer.filter((r) => !dunningCustomers.has(r.customer_id));
  const noticesDoubled = perCustomer.filter((r) => dunningCustomers.has(r.customer_id) && r.n !== 1);
  const noticesMissing = [...dunningCustomers].filter((c) => !perCustomer.some((r) => r.customer_id === c));
  const noticeProblems = [
    ...noticesUnexpected.map((r) => `${r.customer_id}: ${r.n} notice(s) without a failed payment`),
    ...noticesDoubled.map((r) => `${r.customer_id}: ${r.n} notices for one failure`),
    ...noticesMissing.map((c) => `${c}: no notice for its failed payment`),
  ];
  if (noticeProblems.length) violations.push(`notifications: ${noticeProblems.length} customers wrong, e.g. ${noticeProblems.slice(0, 3).join('; ')}`);

  // Effects: the fault-free history's failed, never-paid invoices each opened exactly one dunning cycle
  // (row, running dunning workflow), also where the apply that opened it crashed after its commit.
  const customerIds = stream.expected.map((e) => e.customerId);
  const cycleRows = await s.sql<{ customer_id: string; invoice_id: string; workflow_id: string; ended_at: Date | null }[]>`
    SELECT customer_id, invoice_id, workflow_id, ended_at FROM dunning_cycles WHERE customer_id IN ${s.sql(customerIds)}`;
  const expectedCycles = stream.expected.filter((e) => e.failedInvoiceId !== null);
  const cyclesOf = (customerId: string) => cycleRows.filter((r) => r.customer_id === customerId);
  const cycleProblems: string[] = [];
  let cyclesMissing = 0;
  let cyclesDoubled = 0;
  let workflowsMissing = 0;
  for (const e of expectedCycles) {
    const mine = cyclesOf(e.customerId);
    const row = mine.find((r) => r.invoice_id === e.failedInvoiceId);
    if (!row) {
      cyclesMissing++;
      cycleProblems.push(`${e.customerId}: no dunning cycle for ${e.failedInvoiceId}`);
      continue;
    }
    if (mine.length > 1) {
      cyclesDoubled++;
      cycleProblems.push(`${e.customerId}: ${mine.length} dunning cycles for one failed invoice`);
    }
    if (row.ended_at !== null) cycleProblems.push(`${e.customerId}: the cycle of ${row.invoice_id} ended (nothing paid it)`);
    const status = await s.client.workflow
      .getHandle(row.workflow_id)
      .describe()
      .then((d) => d.status.name, () => 'NOT_FOUND');
    if (status !== 'RUNNING') {
      workflowsMissing++;
      cycleProblems.push(`${e.customerId}: dunning workflow ${row.workflow_id} is ${status}`);
    }
  }
  const cyclesUnexpected = cycleRows.filter((r) => !expectedCycles.some((e) => e.customerId === r.customer_id));
  for (const r of cyclesUnexpected.slice(0, 3)) cycleProblems.push(`${r.customer_id}: dunning cycle for ${r.invoice_id} without a failed payment`);
  if (cycleProblems.length) violations.push(`effects: ${cycleProblems.length} dunning cycle problems, e.g. ${cycleProblems.slice(0, 3).join('; ')}`);
  const effectsMissing = cyclesMissing + workflowsMissing + noticesMissing.length;
  const effectsDoubled = cyclesDoubled + noticesDoubled.length + (notif!.total - notif!.distinct_keys);
  const effectsUnexpected = cyclesUnexpected.length + noticesUnexpected.length;

  // The crash-after-commit faults, from the workers' logs (every incarnation of a replica appends to its own).
  const faultLines = s.workers.flatMap((w) => readWorkerFaultLines(path.join(dir, `${w.name}.log`)));
  const crashed = faultLines.filter((l) => l.msg === 'fault injected: apply failed after commit');
  const crashedIds = new Set(crashed.flatMap((l) => l.eventIds));
  const failedEventIds = stream.events.filter((e) => e.id.endsWith(FAILED_ID_SUFFIX)).map((e) => e.id);
  const crashes: CrashRecord = {
    rate: o.crashAfterCommitRate,
    injected: crashed.length,
    paymentFailuresCrashed: failedEventIds.filter((id) => crashedIds.has(id)).length,
    paymentFailures: failedEventIds.length,
    poisonsCrashed: poisonIds.filter((id) => crashedIds.has(id)).length,
  };
  if (o.crashAfterCommitRate > 0) {
    // Every apply holding a payment failure fails once after its commit: its effects come from the re-run.
    if (crashes.injected === 0) violations.push('crash after commit: no apply failed after its commit (is FAULT_AFTER_COMMIT_RATE wired in worker/main.ts?)');
    else if (crashes.paymentFailuresCrashed < crashes.paymentFailures) {
      violations.push(`crash after commit: only ${crashes.paymentFailuresCrashed} of ${crashes.paymentFailures} payment-failure applies crashed after their commit`);
    }
  }
  // Surviving means not exiting: an API or worker restarted by the supervisor did not survive its fault.
  for (const e of unexpectedExits) violations.push(`${e.name} exited on its own (${e.code ?? e.signal}) and had to be restarted`);
  const selfKills = faultLines.filter((l) => l.msg === 'fault injected: SIGKILL after commit').length;
  if (killAfterCommit && faults.some((f) => f.kind === 'worker-kill-after-commit') && selfKills === 0) {
    violations.push('fault worker-kill-after-commit: the worker exited, but not by the injected SIGKILL after a commit');
  }

  // Final state of every customer vs. the same events applied in order without faults (a poison is on
  // an invoice of its own: the fault-free result is the same with or without it).
  const subs = await s.sql<{ customer_id: string; status: string; price_id: string | null; cancel_at_period_end: boolean; cpe: number | null }[]>`
    SELECT customer_id, status::text AS status, price_id, cancel_at_period_end,
           extract(epoch FROM current_period_end)::float8 AS cpe
    FROM subscriptions WHERE customer_id IN ${s.sql(customerIds)}`;
  const custs = await s.sql<{ id: string; email: string | null; name: string | null; access_state: string }[]>`
    SELECT id, email, name, access_state FROM customers WHERE id IN ${s.sql(customerIds)}`;
  const invs = await s.sql<{ id: string; status: string | null; amount_paid: number }[]>`
    SELECT id, status, amount_paid FROM invoices WHERE customer_id IN ${s.sql(customerIds)}`;
  const subOf = new Map(subs.map((r) => [r.customer_id, r]));
  const custOf = new Map(custs.map((r) => [r.id, r]));
  const invOf = new Map(invs.map((r) => [r.id, r]));
  let mismatches = 0;
  for (const e of stream.expected) {
    const problems: string[] = [];
    const sub = subOf.get(e.customerId);
    const cus = custOf.get(e.customerId);
    if (!sub) problems.push('no subscription row');
    else {
      if (sub.status !== e.subscription.status) problems.push(`status ${sub.status} ≠ ${e.subscription.status}`);
      if (sub.price_id !== e.subscription.priceId) problems.push(`price ${sub.price_id} ≠ ${e.subscription.priceId}`);
      if (sub.cancel_at_period_end !== e.subscription.cancelAtPeriodEnd) problems.push(`cancel_at_period_end ${sub.cancel_at_period_end} ≠ ${e.subscription.cancelAtPeriodEnd}`);
      if (sub.cpe !== e.subscription.currentPeriodEnd) problems.push(`current_period_end ${sub.cpe} ≠ ${e.subscription.currentPeriodEnd}`);
    }
    if (!cus) problems.push('no customer row');
    else {
      if (e.email !== null && cus.email !== e.email) problems.push(`email ${cus.email} ≠ ${e.email}`);
      if (e.name !== null && cus.name !== e.name) problems.push(`name ${cus.name} ≠ ${e.name}`);
      if (cus.access_state !== e.accessState) problems.push(`access_state ${cus.access_state} ≠ ${e.accessState}`);
    }
    if (e.invoice) {
      const inv = invOf.get(e.invoice.id);
      if (!inv) problems.push(`no invoice ${e.invoice.id}`);
      else if (inv.status !== e.invoice.status || inv.amount_paid !== e.invoice.amountPaid) {
        problems.push(`invoice ${inv.status}/${inv.amount_paid} ≠ ${e.invoice.status}/${e.invoice.amountPaid}`);
      }
    }
    if (problems.length) {
      mismatches++;
      if (mismatches <= 5) violations.push(`${e.customerId}: ${problems.join('; ')}`);
    }
  }
  if (mismatches > 5) violations.push(`… ${mismatches - 5} more customers whose final state differs from the fault-free result`);

  // Per replica: who acknowledged, claimed and applied what.
  const claimsBy = new Map(
    (await s.sql<{ replica: string; n: number }[]>`SELECT replica, count(*)::int AS n FROM chaos_claims GROUP BY replica`).map((r) => [r.replica, r.n]),
  );
  const appliesBy = new Map(
    (
      await s.sql<{ replica: string; n: number; before: number }[]>`
        SELECT replica, count(*)::int AS n, count(*) FILTER (WHERE id <= ${state.applyMarkAtWorkerKill ?? 0})::int AS before
        FROM chaos_applies GROUP BY replica`
    ).map((r) => [r.replica, r]),
  );
  const replicas: ChaosReport['replicas'] = {
    apis: s.apis.map((a, i) => ({
      name: a.name,
      acknowledged: ackedBy[i]!,
      acknowledgedBeforeKill: state.ackedBeforeApiKill ? state.ackedBeforeApiKill[i]! : null,
      claimed: claimsBy.get(appOf(a)) ?? 0,
      killed: leftDead.has(a),
    })),
    workers: s.workers.map((w) => ({
      name: w.name,
      applied: appliesBy.get(appOf(w))?.n ?? 0,
      appliedBeforeKill: state.applyMarkAtWorkerKill === null ? null : appliesBy.get(appOf(w))?.before ?? 0,
      killed: leftDead.has(w),
    })),
  };
  const strangers = [...appliesBy.keys()].filter((app) => !s.workers.some((w) => appOf(w) === app));
  if (strangers.length) violations.push(`applies committed by sessions that are no worker replica: ${strangers.join(', ')}`);

  const counts: ChaosReport['counts'] = {
    uniqueEvents: stream.events.length,
    handled: handled.length,
    ignoredTypes: ignoredIds.length,
    deliveries: stream.deliveries.length,
    duplicateDeliveries: stream.deliveries.length - stream.events.length,
    retriedDeliveries: state.retried,
    non2xx,
    failedOutsideStoreFaults,
    applied: appliedRows.length,
    lost: lost.length,
    unexpectedApplied: unexpected.length,
    notIgnored: notIgnored.length,
    poisonEvents: poisonIds.length,
    quarantinedPoison: quarantinedPoison.length,
    quarantinedOther: quarantinedOther.length,
    laterEventsOfPoisoned: laterIds.length,
    laterEventsOfPoisonedApplied: laterApplied.length,
    webhookRows: rows.length,
    expectedCycles: expectedCycles.length,
    cycles: cycleRows.length,
    effectsMissing,
    effectsDoubled,
    effectsUnexpected,
    notifications: notif!.total,
    distinctNotificationKeys: notif!.distinct_keys,
    expectedNotifications: dunningCustomers.size,
    deliveredNotifications: perCustomer.reduce((a, r) => a + r.n, 0),
    suppressedNotifications: suppressed,
    customersChecked: stream.expected.length,
    stateMismatches: mismatches,
  };
  return { counts, crashes, replicas };
}
