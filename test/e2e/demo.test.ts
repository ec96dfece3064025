/**
 * `npm run demo`, fast variant: a second dev stack (scripts/dev.ts on free ports, its own data dir, a
 * fresh database in the test cluster, a dunning schedule of seconds) and the demo's own six steps.
 * The test fails when any step misses its expected state, so the demo cannot rot silently.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createSql } from '../../lib/db';
import { startDevStack, type StartedStack } from '../../support/demo/dev-stack';
import { demoStackFrom, formatSummary, runDemo, type DemoReport } from '../../support/demo/steps';
import { freePort, tempDir } from '../../support/services';
import { uniqueId } from '../helpers/services';

/** Retry 1 after ~4 s; the customer has ~43 s to add a card before the cycle would end. */
const FAST_RETRY_DAYS = '0.00005,0.0001,0.0005';

describe('npm run demo (fast variant against its own dev stack)', () => {
  let dir = '';
  let dbName = '';
  let started: StartedStack | null = null;
  let report: DemoReport | null = null;
  const lines: string[] = [];

  beforeAll(async () => {
    dir = tempDir('billing-demo');
    dbName = `demo_${uniqueId()}`;
    const admin = createSql(inject('pgAdminUrl'), { max: 1 });
    await admin.unsafe(`CREATE DATABASE ${dbName} TEMPLATE ${inject('templateDb')}`);
    await admin.end();
    const [api, temporal, ui, ls, mock, gateway] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
    started = await startDevStack({
      timeoutMs: 120_000,
      env: {
        DEV_DATA_DIR: path.join(dir, 'data'),
        DATABASE_URL: `postgres://postgres@127.0.0.1:${inject('pgPort')}/${dbName}`,
        PORT: String(api),
        DEV_TEMPORAL_PORT: String(temporal),
        DEV_TEMPORAL_UI_PORT: String(ui),
        DEV_LOCALSTRIPE_PORT: String(ls),
        DEV_STRIPE_MOCK_PORT: String(mock),
        DEV_STRIPE_GATEWAY_PORT: String(gateway),
        DUNNING_RETRY_DAYS: FAST_RETRY_DAYS,
        LOG_LEVEL: 'warn',
        NODE_ENV: 'development',
        // Never the developer's own Stripe account or tokens: the demo runs on the emulators.
        STRIPE_SECRET_KEY: undefined,
        STRIPE_API_BASE: undefined,
        STRIPE_WEBHOOK_SECRET: undefined,
        ADMIN_TOKEN: undefined,
        API_TOKEN: undefined,
      },
    });
  }, 180_000);

  afterAll(async () => {
    await started?.stop();
    if (dbName) {
      const admin = createSql(inject('pgAdminUrl'), { max: 1 });
      await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
      await admin.end();
    }
    if (dir && !process.env.KEEP_DEMO_DIR) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('plays all six steps to their expected states', async () => {
    const checked = demoStackFrom(started!.state);
    if (!checked.ok) throw new Error(checked.reason);
    expect(checked.stack.dunningRetryDays).toBe(FAST_RETRY_DAYS);
    report = await runDemo(checked.stack, { stepTimeoutMs: 30_000, print: (l) => lines.push(l) });
    const failed = report.steps.filter((s) => !s.ok).map((s) => s.line);
    // The step lines say what was expected and what was seen instead.
    expect(failed, `${lines.join('\n')}\n${formatSummary(report.summary)}`).toEqual([]);
    expect(report.steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
  }, 150_000);

  it('summarises exactly-once delivery, dunning and drift', () => {
    expect(report, 'the demo did not run').not.toBeNull();
    const s = report!.summary;
    // Three redeliveries of one event: acknowledged, never re-applied.
    expect(s.duplicatesDropped).toBeGreaterThanOrEqual(3);
    expect(s.applied).toBe(s.events);
    expect(s.bySource.localstripe).toBeGreaterThan(0);
    expect(s.bySource.gateway).toBeGreaterThan(0);
    expect(s.bySource.fixture).toBe(3);
    expect(s.dunning).toMatch(/^recovered after 2 retries .*; 1 notice/);
    expect(s.drift).toMatch(/^1 found on sub_\w+ \(cancel_at_period_end false → true\), 1 repaired/);
    for (const line of report!.steps.slice(1).map((x) => x.line)) expect(line).toContain(`/namespaces/default/workflows/customer:${report!.customerId}`);
  });
});
