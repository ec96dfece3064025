/**
 * The Temporal connection (lib/temporal.ts, settings from @temporalio/envconfig) over TLS and mTLS, with a CA and
 * certificates generated here by openssl. `temporal server start-dev` has no TLS options, so a TLS-terminating
 * proxy (node:tls, ALPN h2, piping to the shared plaintext dev server) stands in front of it; for mTLS the proxy
 * requires a client certificate signed by the CA. Both the client (grpc-js) and the worker (the SDK's Rust core)
 * connect through it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { Worker, type NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError, loadConfig } from '../../lib/config';
import { createTemporalClient, createWorkerConnection, describeTemporalTarget, temporalTarget } from '../../lib/temporal';
import { eventually, installQuietRuntime, uniqueId } from '../helpers/services';

const BASE_ENV = {
  NODE_ENV: 'test',
  DATABASE_URL: 'postgres://postgres@127.0.0.1:1/unused',
  STRIPE_SECRET_KEY: 'sk_test_tls',
  STRIPE_WEBHOOK_SECRET: 'whsec_tls',
};

interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client pair from another CA: the mTLS proxy must refuse it. */
  strangerCert: string;
  strangerKey: string;
}

/** A CA, a server certificate (127.0.0.1, temporal.test) and client certificates, with openssl. */
function generatePki(): Pki {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'temporal-tls-'));
  const f = (name: string) => path.join(dir, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string) =>
    ssl('req', '-x509', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.pem`), '-days', '2', '-subj', `/CN=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const leaf = (name: string, caName: string, ext: string) => {
    writeFileSync(f(`${name}.ext`), `${ext}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n`);
    ssl('req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${caName}.pem`), '-CAkey', f(`${caName}.key`), '-CAcreateserial',
      '-out', f(`${name}.pem`), '-days', '2', '-extfile', f(`${name}.ext`));
  };
  ca('test-ca');
  ca('stranger-ca');
  leaf('server', 'test-ca', 'subjectAltName=IP:127.0.0.1,DNS:temporal.test\nextendedKeyUsage=serverAuth');
  leaf('billing-worker', 'test-ca', 'extendedKeyUsage=clientAuth');
  leaf('stranger', 'stranger-ca', 'extendedKeyUsage=clientAuth');
  return {
    dir,
    ca: f('test-ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    clientCert: f('billing-worker.pem'),
    clientKey: f('billing-worker.key'),
    strangerCert: f('stranger.pem'),
    strangerKey: f('stranger.key'),
  };
}

interface TlsProxy {
  address: string;
  /** Common names of the client certificates of accepted connections. */
  clientNames: Set<string>;
  /** TLS connections accepted (handshake done and, for mTLS, the client certificate verified). */
  accepted(): number;
  close(): Promise<void>;
}

/** Terminates TLS (optionally requiring a client certificate) and pipes the bytes to a plaintext Temporal. */
async function startTlsProxy(pki: Pki, upstream: string, mutual: boolean): Promise<TlsProxy> {
  const [host, port] = [upstream.slice(0, upstream.lastIndexOf(':')), Number(upstream.slice(upstream.lastIndexOf(':') + 1))];
  const sockets = new Set<net.Socket>();
  const clientNames = new Set<string>();
  let accepted = 0;
  const server = tls.createServer(
    {
      cert: readFileSync(pki.serverCert),
      key: readFileSync(pki.serverKey),
      ca: readFileSync(pki.ca),
      requestCert: mutual,
      rejectUnauthorized: mutual,
      // gRPC is HTTP/2: both the Rust core and grpc-js insist on ALPN h2.
      ALPNProtocols: ['h2'],
    },
    (socket) => {
      accepted++;
      const cn = socket.getPeerCertificate()?.subject?.CN;
      if (cn) clientNames.add(Array.isArray(cn) ? cn.join(',') : cn);
      const up = net.connect({ host, port });
      sockets.add(socket).add(up);
      socket.pipe(up).pipe(socket);
      const drop = () => {
        socket.destroy();
        up.destroy();
        sockets.delete(socket);
        sockets.delete(up);
      };
      socket.on('error', drop).on('close', drop);
      up.on('error', drop).on('close', drop);
    },
  );
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: own } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${own}`,
    clientNames,
    accepted: () => accepted,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Starts a worker on the connection and waits until Temporal lists it as a poller of its task queue. */
async function proveWorkerPolls(connection: NativeConnection, client: Client): Promise<void> {
  const taskQueue = uniqueId('tq-tls-');
  const identity = uniqueId('tls-worker-');
  const worker = await Worker.create({
    connection,
    namespace: 'default',
    taskQueue,
    identity,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: {},
    shutdownGraceTime: '1 second',
  });
  const running = worker.run();
  try {
    await eventually(async () => {
      const res = await client.workflowService.describeTaskQueue({
        namespace: 'default',
        taskQueue: { name: taskQueue },
        taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
      });
      return (res.pollers ?? []).some((p) => p.identity === identity);
    }, 20_000, `worker ${identity} polling ${taskQueue}`);
  } finally {
    worker.shutdown();
    await running;
  }
}

/** Connects client and worker the way the entry points do, from an environment; proves both reach Temporal. */
async function connectBoth(env: Record<string, string>) {
  const config = loadConfig({ ...BASE_ENV, ...env });
  const target = temporalTarget(config, env);
  const client = await createTemporalClient(target);
  const connection = await createWorkerConnection(target);
  try {
    await client.workflowService.getSystemInfo({});
    await proveWorkerPolls(connection, client);
  } finally {
    await connection.close();
    await client.connection.close();
  }
  return target;
}

describe('the Temporal connection over TLS (lib/temporal.ts + @temporalio/envconfig)', () => {
  let pki: Pki;
  let tlsProxy: TlsProxy;
  let mtlsProxy: TlsProxy;

  beforeAll(async () => {
    installQuietRuntime();
    pki = generatePki();
    tlsProxy = await startTlsProxy(pki, inject('temporalAddress'), false);
    mtlsProxy = await startTlsProxy(pki, inject('temporalAddress'), true);
  });

  afterAll(async () => {
    await tlsProxy?.close();
    await mtlsProxy?.close();
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  it('connects a client and a worker over TLS, trusting the server CA from TEMPORAL_TLS_SERVER_CA_CERT_PATH', async () => {
    const before = tlsProxy.accepted();
    const target = await connectBoth({
      TEMPORAL_ADDRESS: tlsProxy.address,
      TEMPORAL_TLS: 'true',
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.ca,
    });
    expect(describeTemporalTarget(target)).toBe(`${tlsProxy.address} (namespace default, TLS)`);
    // Client and worker each came through the proxy.
    expect(tlsProxy.accepted() - before).toBeGreaterThanOrEqual(2);
  });

  it('refuses a server whose certificate is not signed by the configured CA', async () => {
    const target = temporalTarget(loadConfig({ ...BASE_ENV, TEMPORAL_ADDRESS: tlsProxy.address }), {
      TEMPORAL_TLS: 'true',
      // The stranger CA did not sign the proxy's certificate.
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: path.join(pki.dir, 'stranger-ca.pem'),
    });
    // Side by side: each refusal takes the SDK's connect timeout.
    await Promise.all([expect(createTemporalClient(target)).rejects.toThrow(), expect(createWorkerConnection(target)).rejects.toThrow()]);
  });

  it('connects a client and a worker over mTLS with the client certificate and key from TEMPORAL_TLS_CLIENT_*', async () => {
    const target = await connectBoth({
      TEMPORAL_ADDRESS: mtlsProxy.address,
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.ca,
      TEMPORAL_TLS_CLIENT_CERT_PATH: pki.clientCert,
      TEMPORAL_TLS_CLIENT_KEY_PATH: pki.clientKey,
    });
    expect(describeTemporalTarget(target)).toContain('mTLS');
    expect([...mtlsProxy.clientNames]).toEqual(['billing-worker']);
  });

  it('is refused under mTLS without a client certificate, or with one from another CA', async () => {
    const accepted = mtlsProxy.accepted();
    const noCert = temporalTarget(loadConfig({ ...BASE_ENV, TEMPORAL_ADDRESS: mtlsProxy.address }), {
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.ca,
    });
    const stranger = temporalTarget(loadConfig({ ...BASE_ENV, TEMPORAL_ADDRESS: mtlsProxy.address }), {
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.ca,
      TEMPORAL_TLS_CLIENT_CERT_PATH: pki.strangerCert,
      TEMPORAL_TLS_CLIENT_KEY_PATH: pki.strangerKey,
    });
    // Side by side: each refusal takes the SDK's connect timeout.
    await Promise.all([
      expect(createTemporalClient(noCert)).rejects.toThrow(),
      expect(createWorkerConnection(noCert)).rejects.toThrow(),
      expect(createTemporalClient(stranger)).rejects.toThrow(),
      expect(createWorkerConnection(stranger)).rejects.toThrow(),
    ]);
    expect(mtlsProxy.accepted()).toBe(accepted);
  });

  it('takes address, namespace and mTLS settings from the TOML profile named by TEMPORAL_PROFILE', async () => {
    const file = path.join(pki.dir, 'temporal.toml');
    writeFileSync(
      file,
      [
        '[profile.default]',
        `address = "${inject('temporalAddress')}"`,
        '',
        '[profile.cluster]',
        `address = "${mtlsProxy.address}"`,
        'namespace = "default"',
        '[profile.cluster.tls]',
        `server_ca_cert_path = "${pki.ca}"`,
        `client_cert_path = "${pki.clientCert}"`,
        `client_key_path = "${pki.clientKey}"`,
        // The certificate names temporal.test; the address is an IP.
        'server_name = "temporal.test"',
        '',
      ].join('\n'),
    );
    const env = { TEMPORAL_CONFIG_FILE: file, TEMPORAL_PROFILE: 'cluster' };
    expect(loadConfig({ ...BASE_ENV, ...env }).TEMPORAL_ADDRESS).toBe(mtlsProxy.address);
    expect(loadConfig({ ...BASE_ENV, TEMPORAL_CONFIG_FILE: file }).TEMPORAL_ADDRESS).toBe(inject('temporalAddress'));
    // A variable wins over the profile.
    expect(loadConfig({ ...BASE_ENV, ...env, TEMPORAL_ADDRESS: '10.0.0.1:7233' }).TEMPORAL_ADDRESS).toBe('10.0.0.1:7233');

    const accepted = mtlsProxy.accepted();
    const target = await connectBoth(env);
    expect(target).toMatchObject({ address: mtlsProxy.address, namespace: 'default', tls: { serverNameOverride: 'temporal.test' } });
    expect(mtlsProxy.accepted() - accepted).toBeGreaterThanOrEqual(2);
  });

  it('names the variable when the profile, the file or half of a client key pair is wrong', () => {
    const errorOf = (env: Record<string, string>) => {
      try {
        loadConfig({ ...BASE_ENV, ...env });
      } catch (err) {
        if (err instanceof ConfigError) return err;
        throw err;
      }
      throw new Error('expected a ConfigError');
    };
    const file = path.join(pki.dir, 'profiles.toml');
    writeFileSync(file, '[profile.default]\naddress = "127.0.0.1:7233"\n');
    expect(errorOf({ TEMPORAL_CONFIG_FILE: file, TEMPORAL_PROFILE: 'nope' }).variables).toEqual(['TEMPORAL_PROFILE']);
    expect(errorOf({ TEMPORAL_CONFIG_FILE: path.join(pki.dir, 'missing.toml') }).variables).toEqual(['TEMPORAL_CONFIG_FILE']);
    expect(errorOf({ TEMPORAL_TLS_CLIENT_CERT_PATH: pki.clientCert }).variables).toEqual(['TEMPORAL_TLS_CLIENT_KEY_PATH']);
    expect(errorOf({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: path.join(pki.dir, 'nope.pem') }).variables).toEqual(['TEMPORAL_TLS_SERVER_CA_CERT_PATH']);
    expect(errorOf({ TEMPORAL_TLS: 'yes' }).variables).toEqual(['TEMPORAL_TLS']);
    // An empty key (an unset compose variable) is no key: TLS stays off.
    expect(temporalTarget(loadConfig(BASE_ENV), { TEMPORAL_API_KEY: '' }).tls).toBeUndefined();
  });
});
