/**
 * Starts the real services once per run, for every project that needs them: PostgreSQL (private cluster), the
 * Temporal dev server, stripe-mock and localstripe; migrates a template database; bundles workflows.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { createSql } from '../../lib/db';
import { migrate } from '../../lib/migrate';
import {
  freePort,
  startLocalstripe,
  startPostgres,
  startStripeMock,
  startTemporal,
  tempDir,
  type Managed,
} from '../../support/services';

declare module 'vitest' {
  export interface ProvidedContext {
    pgPort: number;
    pgAdminUrl: string;
    templateDb: string;
    temporalAddress: string;
    stripeMockUrl: string;
    localstripeUrl: string;
    workflowBundlePath: string;
    servicesDir: string;
    pgDataDir: string;
  }
}

export const TEMPLATE_DB = 'billing_template';

type Provided = { [K in keyof import('vitest').ProvidedContext]: import('vitest').ProvidedContext[K] };

/** The run's services, shared by every project that lists this global setup (one set per vitest process). */
interface SharedServices {
  values: Provided;
  users: number;
  stop(): Promise<void>;
}

const SHARED = Symbol.for('billing-engine.test-services');
type WithShared = typeof globalThis & { [SHARED]?: Promise<SharedServices> };

/**
 * Each project that lists this file (integration, stacks) calls it; the services start once and stop
 * after the last project's teardown (before, a second set started under the first one's temp dir, whose
 * removal left the second PostgreSQL unstoppable).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const g = globalThis as WithShared;
  g[SHARED] ??= startServices();
  let shared: SharedServices;
  try {
    shared = await g[SHARED];
  } catch (err) {
    delete g[SHARED];
    throw err;
  }
  shared.users += 1;
  for (const [key, value] of Object.entries(shared.values)) project.provide(key as keyof Provided, value as never);
  return async () => {
    shared.users -= 1;
    if (shared.users > 0) return;
    delete g[SHARED];
    await shared.stop();
  };
}

async function startServices(): Promise<SharedServices> {
  const dir = tempDir('billing-test');
  // Everything the run writes to a temp dir (test stacks, Temporal's own files, builds) lands under this
  // run's directory, which the teardown removes: the test workers and every process they spawn inherit it.
  const tmp = path.join(dir, 'tmp');
  mkdirSync(tmp, { recursive: true });
  const previousTmp = process.env.TMPDIR;
  process.env.TMPDIR = tmp;
  const keep = process.env.KEEP_TEST_TMP === '1';
  const started: Managed[] = [];
  const t0 = Date.now();
  try {
    const [pgPort, temporalPort, stripeMockPort, localstripePort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const track = <T extends Managed>(p: Promise<T>): Promise<T> =>
      p.then((m) => {
        started.push(m);
        return m;
      });
    const [pg, temporal, stripeMock, localstripe, bundle] = await Promise.all([
      track(startPostgres({ dataDir: path.join(dir, 'pg'), port: pgPort, fast: true, logDir: dir })),
      track(startTemporal({ port: temporalPort, logDir: dir })),
      track(startStripeMock({ port: stripeMockPort, logDir: dir })),
      track(startLocalstripe({ port: localstripePort, logDir: dir })),
      bundleWorkflowCode({ workflowsPath: path.resolve(__dirname, '..', '..', 'workflows', 'index.ts'), logger: quietBundlerLogger }),
    ]);

    const admin = createSql(pg.url, { max: 1 });
    await admin.unsafe(`CREATE DATABASE ${TEMPLATE_DB}`);
    await admin.end();
    const tpl = createSql(pg.urlFor(TEMPLATE_DB), { max: 1 });
    await migrate(tpl);
    await tpl.end();

    const bundlePath = path.join(dir, 'workflow-bundle.js');
    writeFileSync(bundlePath, bundle.code);
    process.stdout.write(`[global-setup] services up in ${Date.now() - t0} ms (logs: ${dir})\n`);
    return {
      users: 0,
      values: {
        pgPort,
        pgAdminUrl: pg.url,
        templateDb: TEMPLATE_DB,
        temporalAddress: temporal.address,
        stripeMockUrl: stripeMock.baseUrl,
        localstripeUrl: localstripe.baseUrl,
        workflowBundlePath: bundlePath,
        servicesDir: dir,
        pgDataDir: pg.dataDir,
      },
      async stop() {
        await Promise.allSettled(started.map((s) => s.stop()));
        if (previousTmp === undefined) delete process.env.TMPDIR;
        else process.env.TMPDIR = previousTmp;
        // KEEP_TEST_TMP=1 keeps the logs and data of the run for a post-mortem.
        if (keep) process.stdout.write(`[global-setup] kept ${dir}\n`);
        else rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.allSettled(started.map((s) => s.stop()));
    throw err;
  }
}

const quietBundlerLogger = {
  log: () => {},
  trace: () => {},
  debug: () => {},
  info: () => {},
  warn: (m: string) => process.stderr.write(`[bundler] ${m}\n`),
  error: (m: string) => process.stderr.write(`[bundler] ${m}\n`),
};
