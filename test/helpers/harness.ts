/**
 * The one test harness: a fresh migrated database, a Temporal client on the shared dev server, a worker
 * with the real activities on its own task queue, and the real HTTP app with its dispatcher — set up in
 * the calling `describe`'s beforeAll and torn down (dispatchers first, then worker, client, database)
 * in its afterAll. Tests read the parts from the returned object once the suite runs.
 */
import type { Client } from '@temporalio/client';
import type { WorkerOptions } from '@temporalio/worker';
import type Stripe from 'stripe';
import { afterAll, beforeAll } from 'vitest';
import type { Activities } from '../../activities';
import type { Config } from '../../lib/config';
import type { Sql } from '../../lib/db';
import { buildTestApp, stopTestDispatchers } from './app';
import { createTestDatabase, realActivities, startTestWorker, testClient, testConfig, type RunningWorker, type TestDatabase } from './services';

export interface TestStackOptions {
  /** Environment overrides of testConfig (the task queue is unique per stack unless given). */
  config?: Record<string, string>;
  /** The worker's activities (default: the real ones on this database and stripe-mock); false: no worker. */
  activities?: ((db: TestDatabase, config: Config, client: Client) => Partial<Activities> & Record<string, unknown>) | false;
  workerOptions?: Partial<WorkerOptions>;
  /** The HTTP app (default: with its dispatcher running); false: none. */
  app?: false | { dispatch?: boolean; stripe?: Stripe };
  /** Runs after the parts are up (seed rows, register plans). */
  seed?: (stack: TestStack) => Promise<void>;
}

export interface TestStack {
  readonly db: TestDatabase;
  readonly sql: Sql;
  readonly client: Client;
  readonly config: Config;
  readonly worker: RunningWorker;
  readonly built: ReturnType<typeof buildTestApp>;
  readonly app: ReturnType<typeof buildTestApp>['app'];
}

/** Registers the stack's setup and teardown in the current describe block and returns its (lazy) parts. */
export function useTestStack(opts: TestStackOptions = {}): TestStack {
  const config = testConfig(opts.config);
  let db: TestDatabase | undefined;
  let client: Client | undefined;
  let worker: RunningWorker | undefined;
  let built: ReturnType<typeof buildTestApp> | undefined;
  const need = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`test stack: ${what} is not set up (read it inside a test, or enable it in useTestStack)`);
    return value;
  };
  const stack: TestStack = {
    get db() {
      return need(db, 'the database');
    },
    get sql() {
      return need(db, 'the database').sql;
    },
    get client() {
      return need(client, 'the Temporal client');
    },
    config,
    get worker() {
      return need(worker, 'the worker');
    },
    get built() {
      return need(built, 'the app');
    },
    get app() {
      return need(built, 'the app').app;
    },
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await testClient();
    if (opts.activities !== false) {
      const activities = opts.activities ? opts.activities(db, config, client) : realActivities(db.sql, config);
      worker = await startTestWorker({ taskQueue: config.TEMPORAL_TASK_QUEUE, activities, workerOptions: opts.workerOptions });
    }
    if (opts.app !== false) {
      built = buildTestApp({ sql: db.sql, temporal: client, config, dispatch: opts.app?.dispatch, stripe: opts.app?.stripe });
    }
    await opts.seed?.(stack);
  });

  afterAll(async () => {
    await stopTestDispatchers();
    await built?.close().catch(() => {});
    await worker?.stop();
    await client?.connection.close();
    await db?.drop();
  });

  return stack;
}
