/**
 * `npm run bench:entitlements`: seeds 10,000 customers in a private billing stack (support/billing-stack),
 * warms the API's entitlement cache with one read per customer, then reads GET /customers/{id}/entitlements
 * open-loop at a fixed rate (default 1,000/s for 10 s) over random customers, printing p50/p99 (measured
 * from each request's scheduled send time, so a stall counts in full) and the achieved rate. Target p99 < 5 ms.
 * Options: --customers N --rate R --seconds S.
 */
import http from 'node:http';
import { startBillingStack, stopActiveStacks, type BillingStack } from '../../support/billing-stack/stack';
import { prng } from '../../support/prng';
import { tempDir } from '../../support/services';
import { summarize } from './load';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
  return v;
}

const CUSTOMERS = arg('customers', 10_000);
const RATE = arg('rate', 1000);
const SECONDS = arg('seconds', 10);
const customerId = (i: number) => `cus_benchEnt${i}`;

/** Customers on the catalog's plans; one in ten in grace, one in twenty suspended, overrides and Stripe keys sprinkled. */
async function seed(stack: BillingStack): Promise<void> {
  const { sql } = stack;
  for (let waited = 0; (await sql`SELECT 1 FROM plans LIMIT 1`).length === 0; waited += 200) {
    if (waited > 30_000) throw new Error('the worker did not sync the plan catalog');
    await new Promise((r) => setTimeout(r, 200));
  }
  await sql`
    INSERT INTO customers (id, access_state)
    SELECT 'cus_benchEnt' || i, CASE WHEN i % 20 = 0 THEN 'suspended' WHEN i % 10 = 0 THEN 'grace' ELSE 'active' END
    FROM generate_series(0, ${CUSTOMERS - 1}) i`;
  await sql`
    INSERT INTO subscriptions (id, customer_id, status, plan_id, price_id, stripe_updated_at)
    SELECT 'sub_benchEnt' || i, 'cus_benchEnt' || i, 'active', p.id, p.stripe_price_id, now()
    FROM generate_series(0, ${CUSTOMERS - 1}) i
    JOIN LATERAL (SELECT id, stripe_price_id FROM plans ORDER BY rank OFFSET i % (SELECT count(*) FROM plans) LIMIT 1) p ON true`;
  await sql`
    INSERT INTO entitlement_overrides (id, customer_id, feature, value, reason, expires_at)
    SELECT 'eo_bench' || i, 'cus_benchEnt' || i, 'sso', 'true'::jsonb, 'bench', now() + interval '1 day'
    FROM generate_series(0, ${CUSTOMERS - 1}, 7) i`;
  await sql`
    INSERT INTO stripe_entitlements (customer_id, lookup_keys, stripe_updated_at)
    SELECT 'cus_benchEnt' || i, ARRAY['audit_log', 'beta_reports'], now()
    FROM generate_series(0, ${CUSTOMERS - 1}, 11) i`;
  await sql`ANALYZE`;
}

function get(agent: http.Agent, base: URL, id: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ agent, host: base.hostname, port: base.port, path: `/customers/${id}/entitlements` }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
  });
}

async function main(): Promise<void> {
  const dir = tempDir('bench-entitlements');
  const log = (line: string) => console.error(line);
  const stack = await startBillingStack({ dir, log });
  try {
    log(`seeding ${CUSTOMERS} customers`);
    await seed(stack);
    const base = new URL(stack.apiUrl);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

    // Warm-up: every customer once (fills the cache as a running API's would be), 32 at a time.
    const warmStart = performance.now();
    for (let i = 0; i < CUSTOMERS; i += 32) {
      await Promise.all(Array.from({ length: Math.min(32, CUSTOMERS - i) }, (_, k) => get(agent, base, customerId(i + k))));
    }
    log(`warm-up: ${CUSTOMERS} reads in ${Math.round(performance.now() - warmStart)} ms`);

    // Open loop: request n is due at start + n / RATE, whatever the earlier ones are doing.
    const random = prng(19);
    const total = Math.round(RATE * SECONDS);
    const latencies: number[] = [];
    const failures: Record<string, number> = {};
    const inFlight = new Set<Promise<void>>();
    const start = performance.now();
    let sent = 0;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - start) * RATE) / 1000) + 1);
      for (; sent < due; sent++) {
        const scheduled = start + (sent * 1000) / RATE;
        const p = get(agent, base, customerId(Math.floor(random() * CUSTOMERS))).then((status) => {
          if (status === 200) latencies.push(performance.now() - scheduled);
          else failures[String(status)] = (failures[String(status)] ?? 0) + 1;
          inFlight.delete(p);
        });
        inFlight.add(p);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(inFlight);
    const elapsed = (performance.now() - start) / 1000;
    const summary = summarize(latencies);
    const result = {
      customers: CUSTOMERS,
      offeredPerSecond: RATE,
      achievedPerSecond: Math.round((latencies.length / elapsed) * 10) / 10,
      seconds: Math.round(elapsed * 10) / 10,
      ok: latencies.length,
      failures,
      latencyMs: summary,
      targetP99Ms: 5,
      met: summary.p99 < 5 && Object.keys(failures).length === 0,
    };
    console.log(JSON.stringify(result, null, 2));
    agent.destroy();
  } finally {
    await stack.stop();
  }
}

main().catch(async (err) => {
  console.error(err);
  await stopActiveStacks().catch(() => {});
  process.exit(1);
});
