/**
 * The entitlement cache on real Postgres (api/entitlement-reader.ts, migration 0033): while its LISTEN is
 * up a hit sends no statement and a change committed by another connection (or to the catalog) is seen
 * within a bounded wait; a change made while LISTEN is down is never answered stale; a load that a
 * notification overtook is not kept; without LISTEN every hit is revalidated.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createEntitlementReader, type EntitlementReader } from '../../api/entitlement-reader';
import { createSql, type Sql } from '../../lib/db';
import { createLogger } from '../../lib/logger';
import { loadPlanConfig, syncPlans } from '../../lib/plan-catalog-sync';
import { buildTestApp } from '../helpers/app';
import { useTestStack } from '../helpers/harness';
import { eventually, uniqueId } from '../helpers/services';

/** How long a committed change may take to reach a listening reader. */
const BOUNDED_WAIT_MS = 3000;

describe('entitlement cache (LISTEN/NOTIFY)', () => {
  const stack = useTestStack({ activities: false, app: false, seed: async (s) => {
      await syncPlans(s.sql, loadPlanConfig({}));
    },
  });
  const started: EntitlementReader[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((r) => r.stop()));
  });

  /**
   * The pool as the reader sees it, recording the statements it sends (heartbeats aside). `holdLoads`
   * makes each load wait, once its rows are read, until the returned release is called.
   */
  const spy = () => {
    const statements: string[] = [];
    let hold: { promise: Promise<void>; loaded: () => void } | null = null;
    const sql = new Proxy(stack.sql, {
      apply(target, thisArg, args: unknown[]) {
        const text = (args[0] as readonly string[]).join('?');
        const query = Reflect.apply(target, thisArg, args) as PromiseLike<unknown>;
        if (text.includes('pg_notify')) return query;
        statements.push(text);
        const h = hold;
        if (!h || !text.includes('json_agg')) return query;
        return Promise.resolve(query).then(async (rows) => {
          h.loaded();
          await h.promise;
          return rows;
        });
      },
    }) as Sql;
    return {
      sql,
      statements,
      holdLoads() {
        let release!: () => void;
        let loaded!: () => void;
        const promise = new Promise<void>((r) => (release = r));
        const read = new Promise<void>((r) => (loaded = r));
        hold = { promise, loaded };
        return { loaded: read, release: () => ((hold = null), release()) };
      },
    };
  };

  const listeningReader = async (sql: Sql, heartbeatMs?: number) => {
    const reader = createEntitlementReader({ sql, logger: createLogger({ level: 'silent' }), heartbeatMs });
    started.push(reader);
    reader.start();
    await eventually(async () => reader.status().listening, 10_000, 'LISTEN up');
    return reader;
  };

  /** Runs a setup write and waits until the reader has heard its one notification (so it cannot land later). */
  const heard = async (reader: EntitlementReader | null, write: () => Promise<unknown>) => {
    const before = reader?.status().notifications ?? 0;
    await write();
    if (reader) await eventually(async () => reader.status().notifications > before, BOUNDED_WAIT_MS, 'the setup notification');
  };

  const customer = async (reader: EntitlementReader | null, planId = 'basic-monthly') => {
    const id = uniqueId('cus_Cache');
    await stack.sql`INSERT INTO customers (id, access_state) VALUES (${id}, 'active')`;
    await heard(reader, () => stack.sql`
      INSERT INTO subscriptions (id, customer_id, status, plan_id, price_id, stripe_updated_at)
      SELECT ${uniqueId('sub_Cache')}, ${id}, 'active', p.id, p.stripe_price_id, now() FROM plans p WHERE p.id = ${planId}`);
    return id;
  };

  /** The backend of the reader's LISTEN connection (the only one in this test's database). */
  const listenerPid = () =>
    eventually(async () => {
      const rows = await stack.sql<{ pid: number }[]>`
        SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`;
      return rows.length === 1 ? rows[0]!.pid : null;
    }, 10_000, 'one LISTEN backend');

  it('answers a hit without a statement and sees a change committed by another connection within a bounded wait', async () => {
    const pool = spy();
    const reader = await listeningReader(pool.sql);
    const id = await customer(reader);
    expect((await reader.read(id))?.accessState).toBe('active');
    const afterLoad = pool.statements.length;
    expect((await reader.read(id))?.accessState).toBe('active');
    expect(pool.statements.length).toBe(afterLoad);

    await stack.sql`UPDATE customers SET access_state = 'suspended' WHERE id = ${id}`;
    const before = pool.statements.length;
    const seen = await eventually(async () => {
      const body = await reader.read(id);
      return body?.accessState === 'suspended' ? body : null;
    }, BOUNDED_WAIT_MS, 'the suspension');
    expect(seen).toMatchObject({ entitled: false, features: {} });
    // The wait was answered from the cache but once, the reload: no version polling.
    expect(pool.statements.slice(before)).toHaveLength(1);
    expect(pool.statements.slice(before)[0]).toContain('json_agg');

    await stack.sql`UPDATE customers SET access_state = 'active' WHERE id = ${id}`;
    await stack.sql`
      INSERT INTO entitlement_overrides (id, customer_id, feature, value, reason) VALUES (${uniqueId('eo_')}, ${id}, 'sso', 'true'::jsonb, 'pilot')`;
    const granted = await eventually(async () => {
      const body = await reader.read(id);
      return body?.accessState === 'active' && body.features.sso === true ? body : null;
    }, BOUNDED_WAIT_MS, 'the override');
    expect(granted.overrides).toHaveLength(1);
  });

  it('invalidates every customer on a catalog change', async () => {
    const pool = spy();
    const reader = await listeningReader(pool.sql);
    const planId = uniqueId('plan-cache-');
    await heard(reader, () => stack.sql`
      INSERT INTO plans (id, stripe_price_id, name, amount, currency, interval, rank, features)
      VALUES (${planId}, ${uniqueId('price_cache_')}, 'Cache test', 100, 'usd', 'month', 900, '{"sso": false}'::jsonb)`);
    const [a, b] = [await customer(reader, planId), await customer(reader, planId)];
    for (const id of [a, b]) expect((await reader.read(id))?.features).toEqual({ sso: false });
    const before = pool.statements.length;
    for (const id of [a, b]) await reader.read(id);
    expect(pool.statements.length).toBe(before);

    await stack.sql`UPDATE plans SET features = '{"sso": true}'::jsonb WHERE id = ${planId}`;
    for (const id of [a, b]) {
      await eventually(async () => (await reader.read(id))?.features.sso === true, BOUNDED_WAIT_MS, `${id} on the new catalog`);
    }
  });

  it('never answers stale for a change made while its LISTEN is disconnected', async () => {
    const reader = await listeningReader(spy().sql);
    const [x, y] = [await customer(reader), await customer(reader)];
    for (const id of [x, y]) expect((await reader.read(id))?.accessState).toBe('active');

    // Postgres refuses new connections: the LISTEN cannot come back until the end of the test.
    const admin = createSql(inject('pgAdminUrl'), { max: 1 });
    await admin.unsafe(`ALTER DATABASE ${stack.db.name} ALLOW_CONNECTIONS false`);
    try {
      const pid = await listenerPid();
      await stack.sql`SELECT pg_terminate_backend(${pid})`;
      await eventually(async () => (await stack.sql`SELECT 1 FROM pg_stat_activity WHERE pid = ${pid}`).length === 0, 5000, 'the backend gone');
      // The close reaches the reader about when a notification would: the change comes after it did.
      await eventually(async () => !reader.status().listening, 5000, 'the reader to see its LISTEN closed');
      // Its notifications are lost: nobody listens.
      await stack.sql`UPDATE customers SET access_state = 'suspended' WHERE id IN (${x}, ${y})`;

      expect((await reader.read(x))?.accessState).toBe('suspended');
      await new Promise((r) => setTimeout(r, 1000));
      expect(reader.status().listening).toBe(false);
      expect((await reader.read(x))?.accessState).toBe('suspended');
    } finally {
      await admin.unsafe(`ALTER DATABASE ${stack.db.name} ALLOW_CONNECTIONS true`);
      await admin.end();
    }
    await eventually(async () => reader.status().listening, 10_000, 'LISTEN back');
    // y was cached before the change and not read since: only starting over on re-LISTEN gets it right.
    expect((await reader.read(y))?.accessState).toBe('suspended');
  });

  it('stops trusting a LISTEN connection that no longer hears its heartbeat, and listens on a new one', async () => {
    const reader = await listeningReader(spy().sql, 200);
    const id = await customer(reader);
    expect((await reader.read(id))?.accessState).toBe('active');
    // The backend stops reading without closing anything: a frozen host, a partition.
    const pid = await listenerPid();
    process.kill(pid, 'SIGSTOP');
    try {
      await stack.sql`UPDATE customers SET access_state = 'suspended' WHERE id = ${id}`;
      await eventually(async () => (await reader.read(id))?.accessState === 'suspended', 5000, 'the suspension without its notification');
      await eventually(async () => reader.status().listening, 10_000, 'LISTEN on a new connection');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await stack.sql`UPDATE customers SET access_state = 'active' WHERE id = ${id}`;
    await eventually(async () => (await reader.read(id))?.accessState === 'active', BOUNDED_WAIT_MS, 'a change heard on the new connection');
  });

  it('does not keep a load that a notification overtook', async () => {
    const pool = spy();
    const reader = await listeningReader(pool.sql);
    const id = await customer(reader);
    const held = pool.holdLoads();
    const racing = reader.read(id);
    await held.loaded;
    // The load's rows are read (active); the change commits, and its notification arrives, before it returns.
    const notified = reader.status().notifications;
    await stack.sql`UPDATE customers SET access_state = 'suspended' WHERE id = ${id}`;
    await eventually(async () => reader.status().notifications > notified, BOUNDED_WAIT_MS, 'the notification');
    held.release();
    expect((await racing)?.accessState).toBe('active');

    const before = pool.statements.length;
    expect((await reader.read(id))?.accessState).toBe('suspended');
    expect(pool.statements.length).toBe(before + 1);
  });

  it('revalidates every hit by version while it does not listen', async () => {
    const pool = spy();
    const reader = createEntitlementReader({ sql: pool.sql });
    const id = await customer(null);
    expect((await reader.read(id))?.accessState).toBe('active');
    const before = pool.statements.length;
    expect((await reader.read(id))?.accessState).toBe('active');
    expect(pool.statements.slice(before)).toEqual([expect.stringContaining('entitlement_versions')]);
    await stack.sql`UPDATE customers SET access_state = 'grace' WHERE id = ${id}`;
    expect((await reader.read(id))?.accessState).toBe('grace');
  });

  it('serves the route from the listening reader createApp is given', async () => {
    const pool = spy();
    const reader = await listeningReader(pool.sql);
    const built = buildTestApp({ sql: stack.sql, temporal: stack.client, config: stack.config, dispatch: false, entitlements: reader });
    try {
      const id = await customer(reader, 'pro-monthly');
      const get = async () => {
        const res = await built.app.request(`/customers/${id}/entitlements`);
        expect(res.status).toBe(200);
        return (await res.json()) as { accessState: string; planId: string; features: Record<string, unknown> };
      };
      const start = pool.statements.length;
      expect(await get()).toMatchObject({ accessState: 'active', planId: 'pro-monthly', features: { sso: true } });
      // Loaded through the given reader, then answered by it from memory.
      expect(pool.statements.length).toBe(start + 1);
      await get();
      expect(pool.statements.length).toBe(start + 1);
      await stack.sql`UPDATE customers SET access_state = 'restricted' WHERE id = ${id}`;
      await eventually(async () => (await get()).accessState === 'restricted', BOUNDED_WAIT_MS, 'the restriction over HTTP');
    } finally {
      await built.close();
    }
  });
});
