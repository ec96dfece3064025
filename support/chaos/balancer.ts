import { sleep } from '../billing-stack/stack';

/**
 * The sender's load balancer over the API replicas: round-robin over those in rotation. A replica that
 * fails to answer (connection refused or reset) leaves the rotation and is probed on /readyz until it
 * answers again, like a proxy's passive outlier detection plus its active health check. With one replica
 * it never ejects: every attempt goes to it, as before.
 */
export function createBalancer(urls: string[], probeMs = 250) {
  const inRotation = urls.map(() => true);
  const probes: Promise<void>[] = [];
  let turn = 0;
  let stopped = false;
  return {
    /** The index of the replica for the next attempt (all of them when none is in rotation). */
    pick(): number {
      const live = urls.map((_, i) => i).filter((i) => inRotation[i]);
      const from = live.length ? live : urls.map((_, i) => i);
      return from[turn++ % from.length]!;
    },
    eject(i: number): void {
      if (urls.length === 1 || !inRotation[i]) return;
      inRotation[i] = false;
      probes.push(
        (async () => {
          while (!stopped && !inRotation[i]) {
            await sleep(probeMs);
            if (await fetch(`${urls[i]}/readyz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false)) inRotation[i] = true;
          }
        })(),
      );
    },
    inRotation: (i: number) => inRotation[i]!,
    async stop(): Promise<void> {
      stopped = true;
      await Promise.all(probes);
    },
  };
}

