/**
 * The inbox wake-up: `NOTIFY billing_inbox` tells every API replica's dispatcher (LISTEN) that
 * deliveries are waiting. It is sent apart from the insert, never inside its transaction: a
 * transaction that notifies holds Postgres's notify lock through its commit and WAL flush, so a NOTIFY
 * in every insert serialized the webhook commits (ack path 911/s → see README, Benchmarks).
 */
import type { Sql } from './db';
import type { Logger } from './logger';

export const INBOX_CHANNEL = 'billing_inbox';

/** Wakes every dispatcher listening on the inbox channel. */
export async function notifyInbox(sql: Sql): Promise<void> {
  await sql`SELECT pg_notify(${INBOX_CHANNEL}, '')`;
}

/**
 * Coalesces wake-ups: however many deliveries are stored, at most one NOTIFY per `intervalMs`
 * (the first at once, then one trailing). A failed NOTIFY is logged: the dispatchers' timers cover it.
 */
export function createInboxNotifier(sql: Sql, logger: Logger, intervalMs = 50) {
  let last = 0;
  let timer: NodeJS.Timeout | null = null;
  const send = () => {
    last = Date.now();
    timer = null;
    notifyInbox(sql).catch((err: unknown) =>
      logger.warn({ error: err instanceof Error ? err.message : String(err) }, 'NOTIFY billing_inbox failed; dispatchers poll'),
    );
  };
  return {
    notify(): void {
      if (timer) return;
      const wait = last + intervalMs - Date.now();
      if (wait <= 0) send();
      else timer = setTimeout(send, wait);
    },
    /** Drops a pending trailing NOTIFY (shutdown). */
    stop(): void {
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}
