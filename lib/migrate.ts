/**
 * Forward-only SQL migrations, in version order, under a session advisory lock held for the whole run:
 * concurrent runners serialize and a second run is a no-op; an applied file that changed is an error.
 * Each file runs in its own transaction together with its schema_migrations row, so a failure keeps the
 * files before it applied. A file whose first line is `-- migrate: no-transaction` runs outside any
 * transaction (CREATE INDEX CONCURRENTLY), must hold exactly one statement, and is recorded after it succeeds.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Sql } from './db';

/** Advisory lock key shared by every migration runner ("billmigr" as an int). */
const MIGRATION_LOCK_KEY = 7_294_911_021;

/** First line of a migration that must run outside a transaction. */
export const NO_TRANSACTION_MARKER = '-- migrate: no-transaction';

/** The package's migrations/: beside lib/ from source (tsx), two levels up from <outDir>/lib/ once compiled (npm run build). */
export const MIGRATIONS_DIR =
  [path.resolve(__dirname, '..', 'migrations'), path.resolve(__dirname, '..', '..', 'migrations')].find((dir) => existsSync(dir)) ??
  path.resolve(__dirname, '..', 'migrations');

export interface MigrationFile {
  version: string;
  name: string;
  sql: string;
  checksum: string;
  /** False when the file's first line is the no-transaction marker. */
  transactional: boolean;
}

/** A migration that failed: it is not recorded; `applied` are the files this run applied before it (they stay). */
export class MigrationError extends Error {
  constructor(
    readonly migration: string,
    readonly applied: string[],
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

/** Reads `NNNN_name.sql` files in version order. */
export function readMigrations(dir: string = MIGRATIONS_DIR): MigrationFile[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((file) => {
      const sql = readFileSync(path.join(dir, file), 'utf8');
      return {
        version: file.slice(0, 4),
        name: file.replace(/\.sql$/, ''),
        sql,
        checksum: createHash('sha256').update(sql).digest('hex'),
        transactional: (sql.split(/\r?\n/, 1)[0] ?? '').trim().toLowerCase() !== NO_TRANSACTION_MARKER,
      };
    });
}

/** Applies pending migrations; returns the names applied by this call. Throws MigrationError for a failed file. */
export async function migrate(sql: Sql, dir: string = MIGRATIONS_DIR): Promise<string[]> {
  const files = readMigrations(dir);
  // One connection for the run: the session lock, each file's transaction and its record all use it.
  const conn = await sql.reserve();
  try {
    await acquireLock(conn);
    try {
      return await applyPending(conn, files);
    } finally {
      await conn`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.catch(() => {});
    }
  } finally {
    conn.release();
  }
}

/**
 * Takes the session lock by polling pg_try_advisory_lock. Not pg_advisory_lock: a runner blocked inside
 * that statement holds a snapshot, CREATE INDEX CONCURRENTLY in the lock holder waits for every older
 * snapshot, and Postgres breaks the cycle by failing one of them ("deadlock detected").
 */
async function acquireLock(conn: Sql): Promise<void> {
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    const [row] = await conn<{ locked: boolean }[]>`SELECT pg_try_advisory_lock(${MIGRATION_LOCK_KEY}) AS locked`;
    if (row?.locked) return;
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function applyPending(conn: Sql, files: MigrationFile[]): Promise<string[]> {
  await conn`
    CREATE TABLE IF NOT EXISTS schema_migrations (
      version    text PRIMARY KEY,
      name       text NOT NULL,
      checksum   text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`;
  const applied = await conn<{ version: string; checksum: string }[]>`SELECT version, checksum FROM schema_migrations`;
  const byVersion = new Map(applied.map((r) => [r.version, r]));
  // Every check before the first file runs: a refused run applies nothing.
  for (const file of files) {
    const prior = byVersion.get(file.version);
    if (prior && prior.checksum !== file.checksum) {
      throw new Error(`Migration ${file.name} was edited after it was applied (forward-only: add a new file)`);
    }
  }
  const pending = files.filter((f) => !byVersion.has(f.version));
  for (const file of pending) {
    const statements = file.transactional ? 1 : countStatements(file.sql);
    if (statements !== 1) {
      throw new Error(
        `Migration ${file.name} is marked no-transaction and holds ${statements} statements: a no-transaction ` +
          'migration runs exactly one statement (put each in its own file)',
      );
    }
  }

  const done: string[] = [];
  for (const file of pending) {
    try {
      if (file.transactional) {
        await inTransaction(conn, async () => {
          await conn.unsafe(file.sql);
          await record(conn, file);
        });
      } else {
        // Sent alone (simple protocol, one statement): no implicit transaction block around it.
        await conn.unsafe(file.sql);
        await record(conn, file);
      }
    } catch (err) {
      throw await failure(conn, file, done, err);
    }
    done.push(file.name);
  }
  return done;
}

async function record(conn: Sql, file: MigrationFile): Promise<void> {
  await conn`INSERT INTO schema_migrations (version, name, checksum) VALUES (${file.version}, ${file.name}, ${file.checksum})`;
}

/** BEGIN … COMMIT on the reserved connection (postgres.js 3.4 has no begin() on a reserved connection). */
async function inTransaction(conn: Sql, fn: () => Promise<void>): Promise<void> {
  await conn.unsafe('BEGIN');
  try {
    await fn();
    await conn.unsafe('COMMIT');
  } catch (err) {
    await conn.unsafe('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** The error of a failed file, saying what is left behind and what to do. */
async function failure(conn: Sql, file: MigrationFile, applied: string[], err: unknown): Promise<MigrationError> {
  const reason = err instanceof Error ? err.message : String(err);
  if (file.transactional) {
    const hint = /cannot run inside a transaction block/i.test(reason)
      ? ` (a statement such as CREATE INDEX CONCURRENTLY needs its own file whose first line is '${NO_TRANSACTION_MARKER}')`
      : '';
    return new MigrationError(file.name, [...applied], `Migration ${file.name} failed and was rolled back, nothing of it is applied: ${reason}${hint}`, { cause: err });
  }
  const invalid = await conn<{ name: string }[]>`SELECT indexrelid::regclass::text AS name FROM pg_index WHERE NOT indisvalid ORDER BY 1`
    .then((rows) => rows.map((r) => r.name))
    .catch(() => [] as string[]);
  const check = invalid.length
    ? `invalid indexes are left (a failed CONCURRENTLY build): ${invalid.join(', ')}; drop each with DROP INDEX CONCURRENTLY <name>, then run the migrations again`
    : 'check what its statement may have left (e.g. an INVALID index: SELECT indexrelid::regclass FROM pg_index WHERE NOT indisvalid) and drop it, then run the migrations again';
  return new MigrationError(
    file.name,
    [...applied],
    `Migration ${file.name} (no-transaction) failed and is not recorded: ${reason}. It ran outside a transaction: ${check}`,
    { cause: err },
  );
}

/**
 * Counts the statements of a SQL text: semicolons outside comments (nested block comments too), quoted
 * strings (E'' escapes), quoted identifiers and dollar-quoted bodies; empty statements are not counted.
 */
export function countStatements(text: string): number {
  let count = 0;
  let content = false;
  let i = 0;
  const n = text.length;
  const skipQuoted = (quote: string, backslashEscapes: boolean): void => {
    for (i++; i < n; i++) {
      if (backslashEscapes && text[i] === '\\') i++;
      else if (text[i] === quote) {
        if (text[i + 1] !== quote) break;
        i++;
      }
    }
    i++;
  };
  while (i < n) {
    const c = text[i]!;
    if (c === '-' && text[i + 1] === '-') {
      const eol = text.indexOf('\n', i);
      i = eol < 0 ? n : eol + 1;
    } else if (c === '/' && text[i + 1] === '*') {
      let depth = 0;
      do {
        if (text.startsWith('/*', i)) {
          depth++;
          i += 2;
        } else if (text.startsWith('*/', i)) {
          depth--;
          i += 2;
        } else i++;
      } while (depth > 0 && i < n);
    } else if (c === "'") {
      content = true;
      skipQuoted("'", /[eE]/.test(text[i - 1] ?? '') && !/[\w$]/.test(text[i - 2] ?? ''));
    } else if (c === '"') {
      content = true;
      skipQuoted('"', false);
    } else if (c === '$' && !/[\w$]/.test(text[i - 1] ?? '') && /^\$(?:[A-Za-z_]\w*)?\$/.test(text.slice(i, i + 64))) {
      content = true;
      const tag = /^\$(?:[A-Za-z_]\w*)?\$/.exec(text.slice(i, i + 64))![0];
      const end = text.indexOf(tag, i + tag.length);
      i = end < 0 ? n : end + tag.length;
    } else if (c === ';') {
      if (content) count++;
      content = false;
      i++;
    } else {
      if (!/\s/.test(c)) content = true;
      i++;
    }
  }
  return content ? count + 1 : count;
}

/** True when every migration file has been applied (readiness check). */
export async function migrationsCurrent(sql: Sql, dir: string = MIGRATIONS_DIR): Promise<boolean> {
  const files = readMigrations(dir);
  const rows = await sql<{ version: string }[]>`
    SELECT version FROM schema_migrations`.catch(() => [] as { version: string }[]);
  const have = new Set(rows.map((r) => r.version));
  return files.every((f) => have.has(f.version));
}
