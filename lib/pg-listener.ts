/**
 * A LISTEN that knows when it is deaf, for caches that NOTIFY invalidates: one dedicated connection runs
 * `LISTEN <channel>`; its close (Postgres restart, backend terminated, network error) is seen at once, a
 * heartbeat NOTIFY sent through the pool catches a connection that died without closing, and `onListen`
 * runs on every (re)subscribe — notifications sent while deaf are lost, so a cache starts over there.
 *
 * Not postgres.js's `sql.listen`: it re-subscribes by itself (calling `onlisten`), but its connection
 * overrides `onclose`, so a drop is invisible until the re-subscribe, and that may fail for as long as
 * Postgres refuses connections.
 */
import { randomUUID } from 'node:crypto';
import { createListenConnection, type Sql } from './db';
import type { Logger } from './logger';

export interface PgListenerOptions {
  /** The process's pool: the connection goes to its database, and the heartbeat goes through it. */
  sql: Sql;
  channel: string;
  logger: Logger;
  /** A notification on the channel (heartbeats are not passed on). */
  onNotify(payload: string): void;
  /** Subscribed, first and after every reconnect. */
  onListen(): void;
  /** Notifications may be lost from now on (until the next onListen). */
  onDeaf(): void;
  /** Heartbeat period (default 1,000 ms): deaf when one committed is not heard within two periods. */
  heartbeatMs?: number;
}

export interface PgListener {
  /** True from a (re)subscribe to the next close or missed heartbeat. */
  readonly listening: boolean;
  /** Ends the connection and the heartbeat (graceful shutdown). */
  stop(): Promise<void>;
}

/** Payload prefix of heartbeats (a customer id never starts with it). */
const HEARTBEAT = '#heartbeat:';

type Beat = { n: number; committedAt: number | null };

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Subscribes in the background and keeps subscribing until stopped; not listening until onListen. */
export function startPgListener(o: PgListenerOptions): PgListener {
  const { channel, logger } = o;
  const period = o.heartbeatMs ?? 1000;
  const me = `${HEARTBEAT}${randomUUID()}:`;
  let listening = false;
  let stopped = false;
  let beats = 0;
  /** The heartbeat in flight: `committedAt` once its NOTIFY committed, null while it is being sent. */
  let beat: Beat | null = null;
  /** The LISTEN in flight, on which connection and since when. */
  let subscribing: { on: Sql; since: number } | null = null;

  const deaf = (reason: string) => {
    beat = null;
    if (!listening) return;
    listening = false;
    if (!stopped) logger.warn({ channel, reason }, 'LISTEN lost: notifications may be missed until it is back');
    o.onDeaf();
  };

  const open = (): Sql => {
    const c: Sql = createListenConnection(o.sql, {
      onnotify(ch, payload) {
        if (c !== conn || ch !== channel) return;
        if (payload.startsWith(HEARTBEAT)) {
          if (beat && payload === `${me}${beat.n}`) beat = null;
          return;
        }
        o.onNotify(payload);
      },
      onclose() {
        if (c !== conn) return;
        deaf('connection closed');
        // After the failed LISTEN's own rejection has settled (it may be what closed).
        if (!stopped) setImmediate(subscribe);
      },
    });
    return c;
  };
  let conn = open();

  /** A connection that stopped answering without closing: postgres.js cannot tell, so use a new one. */
  const replace = (reason: string) => {
    deaf(reason);
    const old = conn;
    conn = open();
    subscribing = null;
    void old.end({ timeout: 0 }).catch(() => {});
    void subscribe();
  };

  async function subscribe(): Promise<void> {
    if (stopped || listening || subscribing?.on === conn) return;
    const on = conn;
    const mine = (subscribing = { on, since: performance.now() });
    try {
      await on`LISTEN ${on(channel)}`;
      if (stopped || on !== conn) return;
      listening = true;
      beat = null;
      o.onListen();
      logger.info({ channel }, 'LISTEN up');
    } catch (err) {
      // A connect that failed closes the connection: onclose subscribes again (postgres.js backs off).
      logger.debug({ channel, error: messageOf(err) }, 'LISTEN failed; retrying');
    } finally {
      if (subscribing === mine) subscribing = null;
    }
  }

  const tick = () => {
    if (stopped) return;
    if (!listening) {
      // The watchdog: a LISTEN that hangs gets a new connection; whatever else failed subscribes again here.
      if (subscribing && performance.now() - subscribing.since > 10 * period) replace('LISTEN did not answer');
      else void subscribe();
      return;
    }
    if (beat) {
      if (beat.committedAt !== null && performance.now() - beat.committedAt > 2 * period) replace('heartbeat not heard');
      return;
    }
    const sent: Beat = { n: ++beats, committedAt: null };
    beat = sent;
    o.sql`SELECT pg_notify(${channel}, ${me + sent.n})`.then(
      () => {
        if (beat === sent) sent.committedAt = performance.now();
      },
      () => {
        // The pool's trouble, not necessarily this connection's: the next tick sends another.
        if (beat === sent) beat = null;
      },
    );
  };
  const timer = setInterval(tick, period);
  timer.unref();
  void subscribe();

  return {
    get listening() {
      return listening;
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      deaf('stopped');
      await conn.end({ timeout: 1 });
    },
  };
}
