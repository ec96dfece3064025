/**
 * The `dunning_cycles` and `dunning_attempts` rows. A cycle is opened and closed by the apply
 * transaction that decided it (domain/billing/reducer.ts); its progress is reported by the dunning
 * child to the customer workflow, which records it here. A closed cycle is history: never reopened.
 */
import type { CycleChange } from '../../domain/billing/reducer';
import type { CycleFact } from '../../domain/billing/state';
import type { DunningReport } from '../../domain/messages';
import type { TxSql } from '../../lib/db';
import { dunningWorkflowId } from '../../domain/ids';

const toDate = (ms: number | null): Date | null => (ms === null ? null : new Date(ms));

/** Every cycle of the customer, open or closed (the reducer decides "one cycle per invoice" from these). */
export async function loadCycleFacts(tx: TxSql, customerId: string): Promise<CycleFact[]> {
  const rows = await tx<{ invoice_id: string; subscription_id: string | null; open: boolean }[]>`
    SELECT invoice_id, subscription_id, (ended_at IS NULL) AS open FROM dunning_cycles WHERE customer_id = ${customerId}`;
  return rows.map((r) => ({ invoiceId: r.invoice_id, subscriptionId: r.subscription_id, open: r.open }));
}

/** Writes the reducer's cycle changes. `maxAttempts` is the configured schedule's length (the child refines it). */
export async function applyCycleChanges(tx: TxSql, customerId: string, changes: CycleChange[], maxAttempts: number): Promise<void> {
  for (const c of changes) {
    if (c.op === 'open') {
      await tx`
        INSERT INTO dunning_cycles (
          invoice_id, customer_id, subscription_id, workflow_id, state, attempts_made, max_attempts,
          first_decline_code, last_decline_code, started_at)
        VALUES (
          ${c.invoiceId}, ${customerId}, ${c.subscriptionId}, ${dunningWorkflowId(c.invoiceId)}, 'retrying', 0,
          ${maxAttempts}, ${c.declineCode}, ${c.declineCode}, ${new Date(c.at * 1000)})
        ON CONFLICT (invoice_id) DO NOTHING`;
    } else {
      await tx`
        UPDATE dunning_cycles SET state = ${c.state}, next_attempt_at = NULL, ended_at = now(), updated_at = now()
        WHERE invoice_id = ${c.invoiceId} AND customer_id = ${customerId} AND ended_at IS NULL`;
    }
  }
}

/** Records a report of the dunning child: its progress, the attempt it made, its end. */
export async function recordDunningReport(tx: TxSql, customerId: string, r: DunningReport): Promise<void> {
  const ended = r.endedAtMs !== null;
  // A cycle started outside an event (ops, a test) has no row yet: its first report creates it.
  await tx`
    INSERT INTO dunning_cycles (
      invoice_id, customer_id, subscription_id, workflow_id, state, attempts_made, max_attempts,
      first_decline_code, last_decline_code, decline_class, started_at)
    VALUES (
      ${r.invoiceId}, ${customerId}, ${r.subscriptionId}, ${dunningWorkflowId(r.invoiceId)}, 'retrying', 0,
      ${r.maxAttempts}, ${r.firstDeclineCode}, ${r.firstDeclineCode}, ${r.declineClass}, ${new Date(r.startedAtMs)})
    ON CONFLICT (invoice_id) DO NOTHING`;
  await tx`
    UPDATE dunning_cycles SET
      state = ${r.state},
      attempts_made = GREATEST(attempts_made, ${r.attemptsMade}),
      max_attempts = ${r.maxAttempts},
      next_attempt_at = ${toDate(r.nextAttemptAtMs)},
      last_decline_code = COALESCE(${r.lastDeclineCode}, last_decline_code),
      last_advice_code = COALESCE(${r.lastAdviceCode ?? null}, last_advice_code),
      last_network_decline_code = COALESCE(${r.lastNetworkDeclineCode ?? null}, last_network_decline_code),
      decline_class = ${r.declineClass},
      final_action = COALESCE(${r.finalAction}, final_action),
      ended_at = ${ended ? toDate(r.endedAtMs) : null},
      updated_at = now()
    WHERE invoice_id = ${r.invoiceId} AND customer_id = ${customerId} AND ended_at IS NULL`;
  if (r.paymentIntentId) {
    await tx`
      UPDATE invoices SET payment_intent_id = ${r.paymentIntentId}, updated_at = now()
      WHERE id = ${r.invoiceId} AND customer_id = ${customerId} AND payment_intent_id IS DISTINCT FROM ${r.paymentIntentId}`;
  }
  if (r.attempt) {
    const a = r.attempt;
    await tx`
      INSERT INTO dunning_attempts (invoice_id, attempt, trigger, outcome, decline_code, advice_code, idempotency_key, attempted_at)
      SELECT ${r.invoiceId}, ${a.attempt}, ${a.trigger}, ${a.outcome === 'invoice_closed' ? 'error' : a.outcome}, ${a.declineCode}, ${a.adviceCode ?? null},
             ${`dunning:${r.invoiceId}:${a.attempt}`}, ${new Date(a.atMs)}
      WHERE EXISTS (SELECT 1 FROM dunning_cycles WHERE invoice_id = ${r.invoiceId} AND customer_id = ${customerId})
      ON CONFLICT (invoice_id, attempt) DO UPDATE SET outcome = excluded.outcome, decline_code = excluded.decline_code, advice_code = excluded.advice_code`;
    await tx`
      UPDATE dunning_cycles SET attempts_made = GREATEST(attempts_made, ${a.attempt}), updated_at = now()
      WHERE invoice_id = ${r.invoiceId} AND customer_id = ${customerId}`;
  }
}
