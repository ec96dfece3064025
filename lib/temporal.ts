/**
 * The one place that connects to Temporal (API client, worker connection, scripts): where and how comes from
 * @temporalio/envconfig — a TOML profile (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE) under the TEMPORAL_* variables
 * (TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_*) — with address and namespace as lib/config.ts resolved them.
 */
import { Client, Connection, type WorkflowClientInterceptor } from '@temporalio/client';
import type { TLSConfig } from '@temporalio/common/lib/internal-non-workflow';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import type { NativeConnection } from '@temporalio/worker';
import { temporalEnv, type Config } from './config';

/** Where and how to reach Temporal, for both the grpc-js client and the worker's native connection. */
export interface TemporalTarget {
  address: string;
  namespace: string;
  /** Bearer token (Temporal Cloud API key); implies TLS. */
  apiKey?: string;
  /** true: TLS with the system roots; an object: a CA, a client pair (mTLS), a server name. */
  tls?: TLSConfig | boolean;
  /** gRPC headers from the profile (`grpc_meta`, TEMPORAL_GRPC_META_*). */
  metadata?: Record<string, string>;
}

/** The connection settings of this process: config's address and namespace, the rest from envconfig (files read here). */
export function temporalTarget(
  config: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'>,
  env: Record<string, string | undefined> = process.env,
): TemporalTarget {
  const { connectionOptions } = loadClientConnectConfig({ overrideEnvVars: temporalEnv(env) });
  const { apiKey, tls, metadata } = connectionOptions;
  return {
    address: config.TEMPORAL_ADDRESS,
    namespace: config.TEMPORAL_NAMESPACE,
    ...(typeof apiKey === 'string' ? { apiKey } : {}),
    ...(tls !== undefined && tls !== null ? { tls } : {}),
    ...(metadata && Object.keys(metadata).length ? { metadata: metadata as Record<string, string> } : {}),
  };
}

/** For logs: the address and namespace, and which security is on (never the key or certificates themselves). */
export function describeTemporalTarget(t: TemporalTarget): string {
  const security = [
    t.tls === true || typeof t.tls === 'object' ? (typeof t.tls === 'object' && t.tls.clientCertPair ? 'mTLS' : 'TLS') : 'plaintext',
    ...(t.apiKey ? ['API key'] : []),
  ];
  return `${t.address} (namespace ${t.namespace}, ${security.join(', ')})`;
}

/**
 * Connects a client, or rejects (after at most 5 s) if Temporal cannot be reached; a failed attempt closes its
 * channel, so waitFor can retry it. Once connected, grpc-js reconnects by itself: an outage surfaces per call.
 */
export async function createTemporalClient(target: TemporalTarget, interceptors?: WorkflowClientInterceptor[]): Promise<Client> {
  const connection = Connection.lazy({
    address: target.address,
    tls: target.tls,
    apiKey: target.apiKey,
    metadata: target.metadata,
    connectTimeout: '5 seconds',
  });
  try {
    await connection.ensureConnected();
  } catch (err) {
    await connection.close().catch(() => {});
    throw err;
  }
  // interceptors: the OpenTelemetry client interceptor when tracing is on (lib/tracing.ts).
  return new Client({ connection, namespace: target.namespace, ...(interceptors?.length ? { interceptors: { workflow: interceptors } } : {}) });
}

/** The worker's connection (the SDK's Rust core); rejects at once if Temporal cannot be reached. */
export async function createWorkerConnection(target: TemporalTarget): Promise<NativeConnection> {
  // Loaded here: the API process never needs the native bridge.
  const { NativeConnection } = await import('@temporalio/worker');
  return NativeConnection.connect({ address: target.address, tls: target.tls, apiKey: target.apiKey, metadata: target.metadata });
}

/** gRPC status codes of Temporal calls that mean "the service is not there right now": retry later. */
const TRANSIENT_GRPC = new Set([1 /* CANCELLED */, 2 /* UNKNOWN */, 4 /* DEADLINE_EXCEEDED */, 8 /* RESOURCE_EXHAUSTED */, 14 /* UNAVAILABLE */]);

/** The gRPC status of a failed Temporal call (the error or its cause), if it has one. */
export function grpcCodeOf(err: unknown): number | null {
  for (let e: unknown = err, depth = 0; e && depth < 3; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'number') return code;
  }
  return null;
}

/** A Temporal call that failed because the service is not there right now (unavailable, deadline, overloaded, no status). */
export function isTransientTemporalError(err: unknown): boolean {
  const code = grpcCodeOf(err);
  return code === null || TRANSIENT_GRPC.has(code);
}
