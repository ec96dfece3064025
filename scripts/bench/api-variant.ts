/**
 * Bench-only API entry: runs api/server.ts unchanged, but with BENCH_NATIVE_CLIENT=1 its Temporal client
 * talks over a NativeConnection (the SDK's Rust core, as the worker does) instead of grpc-js, to measure
 * the client-side cost of signal-with-start before anyone edits lib/temporal.ts.
 */
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';

if (process.env.BENCH_NATIVE_CLIENT === '1') {
  // createTemporalClient (lib/temporal.ts) calls Connection.lazy, then ensureConnected: hand it a NativeConnection instead.
  Connection.lazy = ((options?: { address?: string }) => {
    let native: NativeConnection | undefined;
    const ensureConnected = async () => void (native ??= await NativeConnection.connect({ address: options?.address ?? '127.0.0.1:7233' }));
    const forward = (p: string | symbol) => {
      const v: unknown = Reflect.get(native!, p, native);
      return typeof v === 'function' ? v.bind(native) : v;
    };
    return new Proxy({}, { get: (_t, p) => (p === 'ensureConnected' ? ensureConnected : p === 'close' ? async () => native?.close() : forward(p)) });
  }) as unknown as typeof Connection.lazy;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
require('../../api/server');
