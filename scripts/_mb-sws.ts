import { Client, Connection } from '@temporalio/client';
import { startTemporal, freePort, tempDir } from './stack';
import path from 'node:path';
async function main() {
  const mode = process.argv[2] ?? 'full';
  const dir = tempDir('mb');
  const extra = mode === 'none' ? [] : ['--sqlite-pragma', 'journal_mode=wal', '--sqlite-pragma', `synchronous=${mode}`];
  const port = await freePort();
  const t = await startTemporal({ port, dbFile: path.join(dir, 't.db'), logDir: dir, extraArgs: extra });
  const conn = await Connection.connect({ address: t.address });
  const { NativeConnection } = await import('@temporalio/worker');
  const client = process.env.NATIVE ? new Client({ connection: (await NativeConnection.connect({ address: t.address })) as any }) : new Client({ connection: conn });
  for (const c of [8, 32, 64]) {
    let n = 0; const lat: number[] = []; const cpu0 = process.cpuUsage();
    const end = Date.now() + 5000;
    await Promise.all(Array.from({ length: c }, async (_, w) => {
      while (Date.now() < end) {
        const t0 = performance.now();
        await client.workflow.signalWithStart('customerWorkflow', { workflowId: `w${(n++) % 300}`, taskQueue: 'nobody', args: [{}], signal: 'stripeEvent', signalArgs: [{ x: n }] });
        lat.push(performance.now() - t0);
      }
    }));
    lat.sort((a, b) => a - b); const cu = process.cpuUsage(cpu0); const cpuMsPerReq = (cu.user + cu.system) / 1000 / lat.length;
    console.log(mode, 'c', c, (lat.length / 5).toFixed(0), '/s p50', lat[lat.length >> 1]!.toFixed(1), 'p99', lat[Math.floor(lat.length * 0.99)]!.toFixed(1), 'client cpu ms/req', cpuMsPerReq.toFixed(2));
  }
  await conn.close(); await t.stop();
}
main();
