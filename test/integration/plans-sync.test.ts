import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Plan } from '../../domain/plan-catalog';
import { loadPlanConfig, readPlans, syncPlans } from '../../lib/plan-catalog-sync';
import { createTestDatabase, type TestDatabase } from '../helpers/services';

describe('syncPlans', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('inserts, is a no-op when repeated, updates changes and deactivates plans no longer configured', async () => {
    const catalog = loadPlanConfig({});
    const first = await syncPlans(db.sql, catalog);
    expect(first.inserted).toHaveLength(6);
    expect(await syncPlans(db.sql, catalog)).toEqual({ inserted: [], updated: [], deactivated: [] });
    expect(await readPlans(db.sql)).toEqual(catalog);

    const repriced: Plan[] = catalog
      .filter((p) => p.id !== 'enterprise-yearly')
      .map((p) => (p.id === 'pro-monthly' ? { ...p, amount: 3100, name: 'Pro (monthly, 2027)' } : p));
    expect(await syncPlans(db.sql, repriced)).toEqual({ inserted: [], updated: ['pro-monthly'], deactivated: ['enterprise-yearly'] });
    const rows = await readPlans(db.sql);
    expect(rows.find((p) => p.id === 'pro-monthly')).toMatchObject({ amount: 3100, name: 'Pro (monthly, 2027)' });
    expect(rows.find((p) => p.id === 'enterprise-yearly')).toMatchObject({ active: false });
    expect((await readPlans(db.sql, { activeOnly: true })).map((p) => p.id)).not.toContain('enterprise-yearly');

    // Configured again: reactivated, not duplicated.
    expect(await syncPlans(db.sql, catalog)).toMatchObject({ updated: ['pro-monthly', 'enterprise-yearly'], deactivated: [] });
  });

  it('serializes concurrent syncs into one consistent catalog', async () => {
    const catalog = loadPlanConfig({});
    await Promise.all([syncPlans(db.sql, catalog), syncPlans(db.sql, catalog), syncPlans(db.sql, catalog)]);
    expect(await readPlans(db.sql)).toEqual(catalog);
  });

  it('rejects an invalid catalog without writing', async () => {
    const before = await readPlans(db.sql);
    await expect(syncPlans(db.sql, [{ ...before[0]!, currency: 'USD' }])).rejects.toThrow();
    expect(await readPlans(db.sql)).toEqual(before);
  });
});
