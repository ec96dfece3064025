import { defineConfig } from 'vitest/config';

/**
 * Tests that start whole stacks of their own (Postgres clusters, Temporal servers, the API and worker
 * as processes, `npm run dev`): they run one at a time, after the rest, so they never share the 2 cores
 * with each other or with a timing-sensitive suite (run two at a time, they timed out). The build test
 * (a compile, then the compiled API and worker on the shared services) runs with the integration files.
 */
const HEAVY = [
  'test/integration/chaos.test.ts',
  'test/integration/replicas.test.ts',
  'test/integration/dev-stop.test.ts',
  'test/integration/resilience.test.ts',
];

export default defineConfig({
  test: {
    pool: 'forks',
    // Two files at a time: most suites wait on Temporal, Postgres or timers, not on the CPU.
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/workflows/**/*.test.ts', 'test/e2e/**/*.test.ts'],
          exclude: HEAVY,
          globalSetup: ['test/helpers/global-setup.ts'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'stacks',
          include: HEAVY,
          globalSetup: ['test/helpers/global-setup.ts'],
          fileParallelism: false,
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
