/**
 * Starts the real services once for the integration project: PostgreSQL (private cluster), the
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

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
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

    project.provide('pgPort', pgPort);
    project.provide('pgAdminUrl', pg.url);
    project.provide('templateDb', TEMPLATE_DB);
    project.provide('temporalAddress', temporal.address);
    project.provide('stripeMockUrl', stripeMock.baseUrl);
    project.provide('localstripeUrl', localstripe.baseUrl);
    project.provide('workflowBundlePath', bundlePath);
    project.provide('servicesDir', dir);
    project.provide('pgDataDir', pg.dataDir);
    process.stdout.write(`[global-setup] services up in ${Date.now() - t0} ms (logs: ${dir})\n`);
  } catch (err) {
    await Promise.allSettled(started.map((s) => s.stop()));
    throw err;
  }
  return async () => {
    await Promise.allSettled(started.map((s) => s.stop()));
    if (previousTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previousTmp;
    // KEEP_TEST_TMP=1 keeps the logs and data of the run for a post-mortem.
    if (keep) process.stdout.write(`[global-setup] kept ${dir}\n`);
    else rmSync(dir, { recursive: true, force: true });
  };
}

const quietBundlerLogger = {
  log: () => {},
  trace: () => {},
  debug: () => {},
  info: () => {},
  warn: (m: string) => process.stderr.write(`[bundler] ${m}\n`),
  error: (m: string) => process.stderr.write(`[bundler] ${m}\n`),
};
