/**
 * Forward-only SQL migrations. All pending files run in ONE transaction under an advisory lock, so
 * concurrent runners serialize and a second run is a no-op. An applied file that changed is an error.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Sql } from './db';

/** Advisory lock key shared by every migration runner ("billmigr" as an int). */
const MIGRATION_LOCK_KEY = 7_294_911_021;

export const MIGRATIONS_DIR = path.resolve(__dirname, '..', 'migrations');

export interface MigrationFile {
  version: string;
  name: string;
  sql: string;
  checksum: string;
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
      };
    });
}

/** Applies pending migrations; returns the names applied by this call. */
export async function migrate(sql: Sql, dir: string = MIGRATIONS_DIR): Promise<string[]> {
  const files = readMigrations(dir);
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`;
    await tx`
      CREATE TABLE IF NOT EXISTS schema_migrations (
        version    text PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`;
    const applied = await tx<{ version: string; name: string; checksum: string }[]>`
      SELECT version, name, checksum FROM schema_migrations`;
    const byVersion = new Map(applied.map((r) => [r.version, r]));
    const done: string[] = [];
    for (const file of files) {
      const prior = byVersion.get(file.version);
      if (prior) {
        if (prior.checksum !== file.checksum) {
          throw new Error(`Migration ${file.name} was edited after it was applied (forward-only: add a new file)`);
        }
        continue;
      }
      await tx.unsafe(file.sql);
      await tx`INSERT INTO schema_migrations (version, name, checksum) VALUES (${file.version}, ${file.name}, ${file.checksum})`;
      done.push(file.name);
    }
    return done;
  });
}

/** True when every migration file has been applied (readiness check). */
export async function migrationsCurrent(sql: Sql, dir: string = MIGRATIONS_DIR): Promise<boolean> {
  const files = readMigrations(dir);
  const rows = await sql<{ version: string }[]>`
    SELECT version FROM schema_migrations`.catch(() => [] as { version: string }[]);
  const have = new Set(rows.map((r) => r.version));
  return files.every((f) => have.has(f.version));
}
