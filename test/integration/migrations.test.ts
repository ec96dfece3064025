import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createSql, type Sql } from '../../lib/db';
import { countStatements, migrate, MigrationError, migrationsCurrent, readMigrations } from '../../lib/migrate';
import { uniqueId } from '../helpers/services';

describe('migrations on a real, fresh PostgreSQL database', () => {
  const name = `m_${uniqueId()}`;
  const admin = createSql(inject('pgAdminUrl'), { max: 1 });
  const url = `postgres://postgres@127.0.0.1:${inject('pgPort')}/${name}`;

  afterAll(async () => {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  });

  it('applies every migration, then re-applying is a no-op', async () => {
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const sql = createSql(url, { max: 2 });
    try {
      expect(await migrationsCurrent(sql)).toBe(false);
      const first = await migrate(sql);
      expect(first).toEqual(readMigrations().map((m) => m.name));
      expect(await migrate(sql)).toEqual([]);
      expect(await migrationsCurrent(sql)).toBe(true);

      const tables = await sql<{ table_name: string }[]>`
        SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`;
      const names = tables.map((t) => t.table_name);
      for (const t of [
        'customers', 'plans', 'subscriptions', 'invoices', 'checkout_sessions', 'webhook_events', 'applied_events',
        'dunning_cycles', 'dunning_attempts', 'notifications', 'reconciliation_runs', 'reconciliation_drift',
      ]) {
        expect(names).toContain(t);
      }
      // The retention indexes are built CONCURRENTLY, outside a transaction, and are valid.
      expect(readMigrations().filter((m) => !m.transactional).map((m) => m.name)).toEqual(expect.arrayContaining([
        '0019_webhook_events_retention_idx', '0020_webhook_events_payload_retention_idx', '0021_applied_events_applied_at_idx', '0022_notifications_retention_idx',
      ]));
      const indexes = await sql<{ name: string; valid: boolean }[]>`
        SELECT indexrelid::regclass::text AS name, indisvalid AS valid FROM pg_index
        WHERE indexrelid::regclass::text IN ('webhook_events_retention_idx', 'webhook_events_payload_retention_idx', 'applied_events_applied_at_idx', 'notifications_retention_idx')`;
      expect(indexes).toHaveLength(4);
      expect(indexes.every((i) => i.valid)).toBe(true);
      const statuses = await sql<{ v: string }[]>`SELECT unnest(enum_range(NULL::subscription_status))::text AS v`;
      expect(statuses.map((s) => s.v)).toEqual([
        'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'incomplete', 'incomplete_expired', 'paused',
      ]);
    } finally {
      await sql.end();
    }
  });

  it('is safe to run concurrently (the advisory lock serializes runners)', async () => {
    const other = `m_${uniqueId()}`;
    await admin.unsafe(`CREATE DATABASE ${other}`);
    const a = createSql(`postgres://postgres@127.0.0.1:${inject('pgPort')}/${other}`, { max: 1 });
    const b = createSql(`postgres://postgres@127.0.0.1:${inject('pgPort')}/${other}`, { max: 1 });
    try {
      const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
      // Exactly one runner applied everything; the other found nothing to do.
      expect([ra.length, rb.length].sort()).toEqual([0, readMigrations().length]);
      const rows = await a<{ n: number }[]>`SELECT count(*)::int AS n FROM schema_migrations`;
      expect(rows[0]!.n).toBe(readMigrations().length);
    } finally {
      await a.end();
      await b.end();
      await admin.unsafe(`DROP DATABASE IF EXISTS ${other} WITH (FORCE)`);
    }
  });

  it('refuses an applied migration whose file changed', async () => {
    const sql = createSql(url, { max: 1 });
    try {
      await sql`UPDATE schema_migrations SET checksum = 'tampered' WHERE version = '0001'`;
      await expect(migrate(sql)).rejects.toThrow(/edited after it was applied/);
    } finally {
      await sql.end();
    }
  });
});

describe('migration runner: one transaction per file, no-transaction files', () => {
  const admin = createSql(inject('pgAdminUrl'), { max: 1 });
  const dirs: string[] = [];
  const databases: string[] = [];

  afterAll(async () => {
    for (const db of databases) await admin.unsafe(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await admin.end();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** A directory of migration files (name → text). */
  function migrationDir(files: Record<string, string>): string {
    const dir = mkdtempSync(path.join(tmpdir(), 'migrations-'));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
    return dir;
  }

  /** A fresh empty database and the URL to reach it. */
  async function freshDatabase(): Promise<string> {
    const name = `m_${uniqueId()}`;
    await admin.unsafe(`CREATE DATABASE ${name}`);
    databases.push(name);
    return `postgres://postgres@127.0.0.1:${inject('pgPort')}/${name}`;
  }

  async function recorded(sql: Sql): Promise<string[]> {
    return (await sql<{ name: string }[]>`SELECT name FROM schema_migrations ORDER BY version`).map((r) => r.name);
  }

  async function tableExists(sql: Sql, table: string): Promise<boolean> {
    return (await sql<{ t: string | null }[]>`SELECT to_regclass(${table})::text AS t`)[0]!.t !== null;
  }

  it('runs each file in its own transaction: a failing second migration leaves the first applied', async () => {
    const dir = migrationDir({
      '0001_first.sql': 'CREATE TABLE first_table (id int);',
      '0002_second.sql': 'CREATE TABLE second_table (id int);\nSELECT 1 / 0;',
      '0003_third.sql': 'CREATE TABLE third_table (id int);',
    });
    const sql = createSql(await freshDatabase(), { max: 1 });
    try {
      const err = await migrate(sql, dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MigrationError);
      expect((err as MigrationError).migration).toBe('0002_second');
      expect((err as MigrationError).applied).toEqual(['0001_first']);
      expect((err as Error).message).toMatch(/0002_second failed and was rolled back.*division by zero/);
      expect(await recorded(sql)).toEqual(['0001_first']);
      expect(await tableExists(sql, 'first_table')).toBe(true);
      expect(await tableExists(sql, 'second_table')).toBe(false);
      expect(await tableExists(sql, 'third_table')).toBe(false);

      // Fixed (it was never applied, so it may still change): the run resumes after the first file.
      writeFileSync(path.join(dir, '0002_second.sql'), 'CREATE TABLE second_table (id int);');
      expect(await migrate(sql, dir)).toEqual(['0002_second', '0003_third']);
      expect(await recorded(sql)).toEqual(['0001_first', '0002_second', '0003_third']);
    } finally {
      await sql.end();
    }
  });

  it('applies a no-transaction migration (CREATE INDEX CONCURRENTLY) and records it', async () => {
    const dir = migrationDir({
      '0001_table.sql': 'CREATE TABLE items (id int, sku text);\nINSERT INTO items SELECT g, g::text FROM generate_series(1, 1000) g;',
      '0002_items_sku_idx.sql': '-- migrate: no-transaction\n-- built while writes go on\nCREATE INDEX CONCURRENTLY items_sku_idx ON items (sku);\n',
      '0003_after.sql': 'ALTER TABLE items ADD COLUMN note text;',
    });
    expect(readMigrations(dir).map((m) => m.transactional)).toEqual([true, false, true]);
    const sql = createSql(await freshDatabase(), { max: 2 });
    try {
      expect(await migrate(sql, dir)).toEqual(['0001_table', '0002_items_sku_idx', '0003_after']);
      expect(await recorded(sql)).toEqual(['0001_table', '0002_items_sku_idx', '0003_after']);
      const [idx] = await sql<{ valid: boolean }[]>`SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = 'items_sku_idx'::regclass`;
      expect(idx?.valid).toBe(true);
      expect(await migrate(sql, dir)).toEqual([]);
    } finally {
      await sql.end();
    }
  });

  it('the same index without the marker fails, rolled back, with a hint to mark the file', async () => {
    const dir = migrationDir({
      '0001_table.sql': 'CREATE TABLE items (id int);',
      '0002_idx.sql': 'CREATE INDEX CONCURRENTLY items_id_idx ON items (id);',
    });
    const sql = createSql(await freshDatabase(), { max: 1 });
    try {
      await expect(migrate(sql, dir)).rejects.toThrow(/cannot run inside a transaction block.*-- migrate: no-transaction/);
      expect(await recorded(sql)).toEqual(['0001_table']);
    } finally {
      await sql.end();
    }
  });

  it('a failed no-transaction migration stays unrecorded and names the INVALID index to drop', async () => {
    const dir = migrationDir({
      '0001_table.sql': "CREATE TABLE accounts (email text);\nINSERT INTO accounts VALUES ('a@x.test'), ('a@x.test');",
      '0002_accounts_email_key.sql': '-- migrate: no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY accounts_email_key ON accounts (email);',
    });
    const sql = createSql(await freshDatabase(), { max: 1 });
    try {
      const err = await migrate(sql, dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MigrationError);
      expect((err as Error).message).toMatch(/0002_accounts_email_key \(no-transaction\) failed and is not recorded: could not create unique index/);
      expect((err as Error).message).toMatch(/invalid indexes are left.*accounts_email_key.*DROP INDEX CONCURRENTLY/);
      expect((err as MigrationError).applied).toEqual(['0001_table']);
      expect(await recorded(sql)).toEqual(['0001_table']);

      // What the message says to do, then the run succeeds.
      await sql.unsafe('DROP INDEX CONCURRENTLY accounts_email_key');
      await sql`DELETE FROM accounts WHERE ctid <> (SELECT min(ctid) FROM accounts)`;
      expect(await migrate(sql, dir)).toEqual(['0002_accounts_email_key']);
      const [idx] = await sql<{ valid: boolean }[]>`SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = 'accounts_email_key'::regclass`;
      expect(idx?.valid).toBe(true);
    } finally {
      await sql.end();
    }
  });

  it('refuses a no-transaction file of several statements before applying anything', async () => {
    const dir = migrationDir({
      '0001_table.sql': 'CREATE TABLE items (id int, sku text);',
      '0002_two_indexes.sql': '-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY a_idx ON items (id);\nCREATE INDEX CONCURRENTLY b_idx ON items (sku);',
    });
    const sql = createSql(await freshDatabase(), { max: 1 });
    try {
      await expect(migrate(sql, dir)).rejects.toThrow(/0002_two_indexes is marked no-transaction and holds 2 statements/);
      expect(await recorded(sql)).toEqual([]);
      expect(await tableExists(sql, 'items')).toBe(false);
    } finally {
      await sql.end();
    }
  });

  it('counts statements, not semicolons in comments, strings, quoted identifiers or dollar-quoted bodies', () => {
    expect(countStatements('-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);\n-- done;\n')).toBe(1);
    expect(countStatements('SELECT 1')).toBe(1);
    expect(countStatements("SELECT ';', E'\\';', \"a;b\" FROM t; /* x; /* nested; */ y; */")).toBe(1);
    expect(countStatements('DO $body$ BEGIN PERFORM 1; END $body$; SELECT $$;$$;')).toBe(2);
    expect(countStatements('SELECT 1;; ; SELECT 2;')).toBe(2);
    expect(countStatements('-- only a comment\n')).toBe(0);
  });

  it('serializes concurrent runners while the first builds an index CONCURRENTLY (waiters poll, they hold no snapshot)', async () => {
    const dir = migrationDir({
      '0001_table.sql': 'CREATE TABLE items (id int);\nSELECT pg_sleep(0.3);',
      '0002_items_id_idx.sql': '-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY items_id_idx ON items (id);',
      '0003_after.sql': 'SELECT pg_sleep(0.3);',
    });
    const url = await freshDatabase();
    const runners = [0, 1, 2].map(() => createSql(url, { max: 1 }));
    try {
      const results = await Promise.all(runners.map((r) => migrate(r, dir)));
      expect(results.map((r) => r.length).sort()).toEqual([0, 0, 3]);
      expect(await recorded(runners[0]!)).toEqual(['0001_table', '0002_items_id_idx', '0003_after']);
    } finally {
      await Promise.all(runners.map((r) => r.end()));
    }
  });
});
