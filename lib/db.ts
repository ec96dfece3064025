/** postgres.js connection factory, and the guard against postgres.js's write-after-close crash. */
import { inspect } from 'node:util';
import postgres from 'postgres';

export type Sql = postgres.Sql<Record<string, never>>;
/** A transaction handle from sql.begin. */
export type TxSql = postgres.TransactionSql<Record<string, never>>;

/**
 * Creates a pool; bigint columns come back as JS numbers (amounts stay far below 2^53). The pool is
 * replaceable: after a contained write-after-close crash (installPostgresCrashGuard) new queries go to a
 * fresh pool, while the old one finishes its in-flight work and keeps its LISTEN until end().
 */
export function createSql(url: string, opts: { max?: number; applicationName?: string } = {}): Sql {
  const make = () => createPool(url, opts);
  let current = make();
  const retired: Sql[] = [];
  const pool: ReplaceablePool = {
    replace() {
      retired.push(current);
      current = make();
    },
  };
  pools.add(pool);
  const end = async (options?: { timeout?: number }) => {
    pools.delete(pool);
    await Promise.all([current, ...retired].map((p) => p.end(options)));
  };
  return new Proxy(current, {
    apply: (_target, thisArg, args) => Reflect.apply(current, thisArg, args),
    get: (_target, prop) => {
      if (prop === 'end') return end;
      if (prop === POOL_SOURCE) return { url, opts };
      const value: unknown = Reflect.get(current, prop, current);
      return typeof value === 'function' ? value.bind(current) : value;
    },
  });
}

/** What createSql made a pool from: a dedicated connection to the same database is made from it. */
const POOL_SOURCE = Symbol('poolSource');

/** What a dedicated LISTEN connection reports (lib/pg-listener.ts). */
export interface ListenConnectionHandlers {
  /** Every notification on the connection, whatever its channel. */
  onnotify(channel: string, payload: string): void;
  /** Every close of the connection, a failed connect included. */
  onclose(): void;
}

/**
 * One dedicated connection to the database of a pool made by createSql, that never idles out or recycles,
 * for LISTEN. `onnotify` is the option postgres.js's own `sql.listen` is built on (not in its types;
 * postgres is pinned exactly and test/integration/entitlement-cache.test.ts exercises it).
 */
export function createListenConnection(pool: Sql, handlers: ListenConnectionHandlers): Sql {
  const source = (pool as unknown as Record<symbol, { url: string; opts: { applicationName?: string } } | undefined>)[POOL_SOURCE];
  if (!source) throw new Error('createListenConnection: the pool was not made by createSql');
  const options: postgres.Options<Record<string, never>> & { onnotify: ListenConnectionHandlers['onnotify'] } = {
    max: 1,
    idle_timeout: 0,
    max_lifetime: null,
    connect_timeout: 10,
    fetch_types: false,
    backoff: reconnectBackoff,
    onnotice: () => {},
    connection: { application_name: source.opts.applicationName ?? 'billing-engine' },
    onclose: () => handlers.onclose(),
    onnotify: (channel: string, payload: string) => handlers.onnotify(channel, payload),
  };
  return postgres(source.url, options) as unknown as Sql;
}

/** For logs: host, port and database of a DATABASE_URL, without its credentials. */
export function describeDatabaseUrl(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
}

interface ReplaceablePool {
  replace(): void;
}

/** Every pool of this process: the crash guard cannot tell which one the broken connection belongs to. */
const pools = new Set<ReplaceablePool>();

/**
 * postgres.js's default reconnect delay grows with a retry count shared by the whole pool, up to 20 s:
 * after a 1 s Postgres restart, webhook answers waited ~19 s (npm run chaos). Capped at ~2 s.
 */
const reconnectBackoff = (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.1 * 2 ** retries, 2);

function createPool(url: string, opts: { max?: number; applicationName?: string }): Sql {
  return postgres(url, {
    max: opts.max ?? 10,
    idle_timeout: 30,
    connect_timeout: 10,
    backoff: reconnectBackoff,
    onnotice: () => {},
    types: {
      bigint: {
        to: 20,
        from: [20],
        serialize: (x: number | bigint) => x.toString(),
        parse: (x: string) => Number(x),
      },
    },
    connection: { application_name: opts.applicationName ?? 'billing-engine' },
  }) as unknown as Sql;
}

/**
 * postgres.js 3.4.9 (latest; porsager/postgres#1208, #1154, fixes #1168/#1209 unmerged): a query written to a
 * connection whose socket has just closed — the ROLLBACK sql.begin sends after its connection died mid-transaction —
 * throws `TypeError: Cannot read properties of null (reading 'write')` from a setImmediate in connection.js, where
 * no caller can catch it, and leaves that connection slot unable to reconnect.
 */
export function isPostgresWriteAfterClose(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  // Where it was thrown (or, for a rejection nobody handled, made): the first frame of the stack.
  const firstFrame = /^\s*at .*$/m.exec(err.stack ?? '')?.[0] ?? '';
  // Two forms are seen: the write to the nulled socket (`TypeError … reading 'write'` in nextWrite), and under
  // load (CI) the close's own CONNECTION_CLOSED, made in the socket's close handler, reaching no caller. Both
  // are the race above; any error whose first frame is postgres.js's connection internals is contained alike
  // (none of them is this process's code failing).
  return /\(.*[\\/]postgres[\\/](?:cjs[\\/]|cf[\\/])?src[\\/]connection\.js:\d+:\d+\)$/.test(firstFrame);
}

/** Socket errors of a connection that dropped (a restart, a failover, a network cut). */
const DROPPED_CONNECTION_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * A rejection nobody handled whose error is a raw socket error of a dropped connection, raised by Node's
 * socket code only (no frame of ours or of a library): a query postgres.js failed with the socket's own
 * error and no caller awaited (seen under load when Postgres went away mid-burst: `read ECONNRESET` at
 * TCP.onStreamRead). Nothing waits on it, so ending the process would repair nothing.
 */
export function isDroppedConnectionRejection(err: unknown, origin: string): boolean {
  if (origin !== 'unhandledRejection' || !(err instanceof Error)) return false;
  if (!DROPPED_CONNECTION_CODES.has(String((err as { code?: unknown }).code))) return false;
  const frames = (err.stack ?? '').split('\n').filter((l) => /^\s*at /.test(l));
  return frames.every((f) => /\(node:|^\s*at node:|^\s*at (?:TCP|Socket|TLSSocket)\./.test(f));
}

let guardInstalled = false;

/**
 * For entry points (API, worker): turns that one postgres.js crash, and a dropped connection's unhandled
 * rejection, into a logged error and moves every pool of this process to fresh connections (the broken slot
 * would fail a query per connect_timeout forever). Any other uncaught exception or unhandled rejection still
 * ends the process as Node would: printed, exit code 1.
 */
export function installPostgresCrashGuard(logger: { error(obj: object, msg: string): void }): void {
  if (guardInstalled) return;
  guardInstalled = true;
  process.on('uncaughtException', (err, origin) => {
    if (isPostgresWriteAfterClose(err)) {
      for (const pool of pools) pool.replace();
      logger.error({ err: err.message, issue: 'https://github.com/porsager/postgres/issues/1208' }, 'postgres.js wrote to a closed connection; contained, new queries use fresh connections');
      return;
    }
    if (isDroppedConnectionRejection(err, origin)) {
      for (const pool of pools) pool.replace();
      logger.error({ err: err.message }, 'a dropped database connection failed a query nobody awaited; contained, new queries use fresh connections');
      return;
    }
    process.stderr.write(`${origin === 'unhandledRejection' ? 'unhandled rejection: ' : ''}${inspect(err)}\n`);
    process.exit(1);
  });
}
