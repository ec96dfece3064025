/**
 * Bench-only worker entry: runs worker/main.ts unchanged, but lets `npm run bench` override options of
 * Worker.create (BENCH_WORKER_OPTIONS, JSON), to measure a tuning before anyone edits worker/.
 */
import { Worker, type WorkerOptions } from '@temporalio/worker';

const overrides = JSON.parse(process.env.BENCH_WORKER_OPTIONS ?? '{}') as Partial<WorkerOptions>;

const create = Worker.create.bind(Worker);
Worker.create = (options: WorkerOptions) => create({ ...options, ...overrides });

// eslint-disable-next-line @typescript-eslint/no-require-imports
require('../../worker/main');
