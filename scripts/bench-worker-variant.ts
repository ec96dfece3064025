/**
 * Bench-only worker entry: runs worker/main.ts unchanged, but lets `npm run bench` override options of
 * Worker.create (BENCH_WORKER_OPTIONS, JSON) and run the customer workflow's `db` activities as local
 * activities (BENCH_LOCAL_ACTIVITIES=1), to measure a tuning before anyone edits worker/ or workflows/.
 */
import path from 'node:path';
import { Worker, type WorkerOptions } from '@temporalio/worker';

type WebpackConfig = Parameters<NonNullable<NonNullable<WorkerOptions['bundlerOptions']>['webpackConfigHook']>>[0];

const overrides = JSON.parse(process.env.BENCH_WORKER_OPTIONS ?? '{}') as Partial<WorkerOptions>;
const localActivities = process.env.BENCH_LOCAL_ACTIVITIES === '1';

function withLocalActivities(config: WebpackConfig): WebpackConfig {
  const rules = (config.module ??= {}).rules ?? (config.module.rules = []);
  rules.push({
    test: /workflows[\\/]customer\.ts$/,
    enforce: 'pre',
    use: [{ loader: path.join(__dirname, 'bench-local-activities-loader.js') }],
  });
  return config;
}

const create = Worker.create.bind(Worker);
Worker.create = (options: WorkerOptions) =>
  create({
    ...options,
    ...overrides,
    ...(localActivities
      ? {
          bundlerOptions: {
            ...options.bundlerOptions,
            webpackConfigHook: (config: WebpackConfig) => {
              const hooked = withLocalActivities(config);
              return options.bundlerOptions?.webpackConfigHook?.(hooked) ?? hooked;
            },
          },
        }
      : {}),
  });

// eslint-disable-next-line @typescript-eslint/no-require-imports
require('../worker/main');
