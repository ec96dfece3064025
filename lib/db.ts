/** postgres.js connection factory. */
import postgres from 'postgres';

export type Sql = postgres.Sql<Record<string, never>>;
/** A transaction handle from sql.begin. */
export type TxSql = postgres.TransactionSql<Record<string, never>>;

/** Creates a pool; bigint columns come back as JS numbers (amounts stay far below 2^53). */
export function createSql(url: string, opts: { max?: number; applicationName?: string } = {}): Sql {
  return postgres(url, {
    max: opts.max ?? 10,
    idle_timeout: 30,
    connect_timeout: 10,
    // postgres.js's default reconnect delay grows with a retry count shared by the whole pool, up to
    // 20 s: after a 1 s Postgres restart, webhook answers waited ~19 s (npm run chaos). Capped at ~2 s.
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.1 * 2 ** retries, 2),
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
