/**
 * support/services waitForPort: a stack's startup (npm run dev, test stacks) waits for each service to
 * listen. A stop requested meanwhile, or the service exiting before it listens, ends the wait at once
 * instead of after its timeout (a SIGTERM to `npm run dev` mid-startup used to wait out a slow Temporal).
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { freePort, waitForPort } from '../../support/services';

describe('waitForPort', () => {
  it('ends at once with the reason when the signal is aborted', async () => {
    const port = await freePort();
    const abort = new AbortController();
    const reason = new Error('stop requested');
    const t0 = Date.now();
    setTimeout(() => abort.abort(reason), 200);
    await expect(waitForPort(port, '127.0.0.1', 30_000, 'nothing', { signal: abort.signal })).rejects.toBe(reason);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('ends at once, saying so, when the process that should listen exits first', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => process.exit(3), 200)'], { stdio: 'ignore' });
    const t0 = Date.now();
    await expect(waitForPort(port, '127.0.0.1', 30_000, 'the service', { child })).rejects.toThrow(/the service exited \(3\) before it listened/);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('still resolves once the port listens', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['-e', `setTimeout(() => require('node:net').createServer().listen(${port}, '127.0.0.1'), 300)`], { stdio: 'ignore' });
    try {
      await waitForPort(port, '127.0.0.1', 10_000, 'the service', { child });
    } finally {
      child.kill('SIGKILL');
    }
  });
});
