import { afterAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createSql } from '../../lib/db';
import { migrate, migrationsCurrent, readMigrations } from '../../lib/migrate';
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
