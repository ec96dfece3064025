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
