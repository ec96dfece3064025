/**
 * Property-based fuzzing of the HTTP surface (fast-check, in-process app on a real database and the
 * shared Temporal dev server): random bytes, truncated JSON, huge strings, wrong types, hostile payloads
 * under valid signatures, unicode and prototype-pollution keys. Every answer must be 2xx or 4xx, never
 * 5xx; rejected requests must leave the database as it was; the process must stay healthy.
 */
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HANDLED_EVENT_TYPES } from '../../domain/events';
import type { Sql } from '../../lib/db';
import { createLogger } from '../../lib/logger';
import { loadFixtureText } from '../fixtures';
import { buildTestApp, signPayload, stopTestDispatchers } from '../helpers/app';
import { createTestDatabase, testClient, testConfig, TEST_ADMIN_TOKEN, type TestDatabase } from '../helpers/services';

// ---------------------------------------------------------------- hostile values, rendered to JSON text by hand

/** A JSON tree whose objects are entry lists, so keys like `__proto__` and duplicates survive into the text. */
type H = string | number | boolean | null | { raw: string } | H[] | { entries: [string, H][] };

function render(h: H): string {
  if (h === null || typeof h !== 'object') return JSON.stringify(h) ?? 'null';
  if (Array.isArray(h)) return `[${h.map(render).join(',')}]`;
  if ('raw' in h) return h.raw;
  return `{${h.entries.map(([k, v]) => `${JSON.stringify(k)}:${render(v)}`).join(',')}}`;
}

const SPECIAL_STRINGS = [
  '', ' ', '\u0000', 'a\u0000b', '\ud800', '\udfff', 'x\ud83dy', '\uffff', '\u202e\u2066', '🦄💳', 'Ω≈ç√∫', 'ｃｕｓ＿', 'İı',
  '<script>alert(1)</script>', "' OR 1=1 --", '${process.exit()}', '%s%n%x', '../../etc/passwd', '\r\n\r\nHTTP/1.1 200',
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'cus_', 'cus_x', `cus_${'a'.repeat(3000)}`,
  `evt_${'x'.repeat(5000)}`, 'x'.repeat(70_000), '-1', '1e309', 'NaN', 'null', 'true', '[]', '{}', '2026-02-30T25:61:61Z',
];
const SPECIAL_NUMBERS = [
  0, -0, -1, 1.5, 2 ** 31, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 1e21, -1e21, 1e308, -1e308, 5e-324, 253_402_300_800, 8.64e12,
  -62_135_596_801, 1_700_000_000,
];
const RAW_NUMBERS = ['1e400', '-1e400', '123456789012345678901234567890', '0.0000000000000000000001', '-0', '1E+2'];

const hostileString = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.constantFrom(...SPECIAL_STRINGS) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
);
const hostileNumber: fc.Arbitrary<H> = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(...SPECIAL_NUMBERS),
  fc.constantFrom(...RAW_NUMBERS).map((raw) => ({ raw })),
);
const pollutionKey = fc.constantFrom('__proto__', 'constructor', 'prototype', '__defineGetter__', 'hasOwnProperty', 'toString', 'valueOf');
const hostileKey = fc.oneof(pollutionKey, hostileString);
const { hostile } = fc.letrec<{ hostile: H }>((tie) => ({
  hostile: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    hostileString,
    hostileNumber,
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('hostile'), { maxLength: 4 }),
    fc.array(fc.tuple(hostileKey, tie('hostile')), { maxLength: 5 }).map((entries) => ({ entries })),
  ),
}));
/** An object that tries to pollute Object.prototype when naively merged. */
const pollution: H = {
  entries: [
    ['__proto__', { entries: [['polluted', true], ['isAdmin', true]] }],
    ['constructor', { entries: [['prototype', { entries: [['polluted', true]] }]] }],
  ],
};

/** Percent-encodes the UTF-8 bytes of any string (lone surrogates become U+FFFD, as on the wire). */
const pathEncode = (s: string) => [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0').toUpperCase()}`)).join('');
/** Header values are bytes: keep what a client can put on the wire (latin-1, no CR/LF/NUL). */
const headerSafe = (s: string) => s.replace(/[^\x20-\x7e\x80-\xff]/g, '');

// ---------------------------------------------------------------- fixtures and paths

const FIXTURE_TYPES = HANDLED_EVENT_TYPES.filter((t) => t !== 'charge.dispute.created');
const fixtureText = new Map(FIXTURE_TYPES.map((t) => [t, loadFixtureText(t)]));
const MUTATION_PATHS = [
  'id', 'type', 'created', 'livemode', 'api_version', 'data', 'data.object', 'data.previous_attributes', 'data.object.id',
  'data.object.object', 'data.object.customer', 'data.object.status', 'data.object.items', 'data.object.items.data',
  'data.object.items.data.0', 'data.object.items.data.0.price', 'data.object.items.data.0.current_period_end',
  'data.object.cancel_at_period_end', 'data.object.canceled_at', 'data.object.trial_end', 'data.object.amount_due',
  'data.object.amount_paid', 'data.object.attempt_count', 'data.object.email', 'data.object.invoice_settings',
  'data.object.metadata', 'data.object.lines', 'data.object.parent', 'data.object.subscription', 'data.object.currency',
  'data.object.charge', 'data.object.amount', 'data.object.amount_refunded', 'data.object.card', 'data.object.mode',
  'data.object.last_finalization_error', 'data.object.__proto__', 'constructor', '__proto__',
];

function setPath(root: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur: Record<string, unknown> = root;
  for (const p of parts.slice(0, -1)) {
    const next = Object.prototype.hasOwnProperty.call(cur, p) ? cur[p] : undefined;
    if (!next || typeof next !== 'object') {
      const created: Record<string, unknown> = {};
      Object.defineProperty(cur, p, { value: created, enumerable: true, writable: true, configurable: true });
      cur = created;
    } else cur = next as Record<string, unknown>;
  }
  Object.defineProperty(cur, parts[parts.length - 1]!, { value, enumerable: true, writable: true, configurable: true });
}

// ---------------------------------------------------------------- the test

type App = { request: (path: string, init?: RequestInit) => Response | Promise<Response> };

async function fingerprint(sql: Sql): Promise<string> {
  const [row] = await sql<{ fp: string }[]>`
    SELECT json_build_array(
      (SELECT count(*) FROM webhook_events),
      (SELECT coalesce(sum(attempts), 0) FROM webhook_events),
      (SELECT count(*) FROM webhook_events WHERE status <> 'received'),
      (SELECT max(last_received_at) FROM webhook_events),
      (SELECT count(*) FROM applied_events),
      (SELECT count(*) FROM customers),
      (SELECT count(*) FROM reconciliation_runs),
      (SELECT count(*) FROM checkout_sessions))::text AS fp`;
  return row!.fp;
}

describe('fuzzing the HTTP surface', () => {
  let webhookDb: TestDatabase;
  let jsonDb: TestDatabase;
  let client: Client;
  const config = testConfig();
  let webhookApp: App;
  let jsonApp: App;
  let requests = 0;
  let evtCounter = 0;
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);

  beforeAll(async () => {
    [webhookDb, jsonDb] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    client = await testClient();
    // FUZZ_LOG=1 shows the server's own warning and error lines (the cause behind a 5xx).
    const logger = process.env.FUZZ_LOG ? createLogger({ level: 'warn' }) : undefined;
    webhookApp = buildTestApp({ sql: webhookDb.sql, temporal: client, config, dispatch: false, ...(logger ? { logger } : {}) }).app;
    jsonApp = buildTestApp({ sql: jsonDb.sql, temporal: client, config, dispatch: false, ...(logger ? { logger } : {}) }).app;
  });

  afterAll(async () => {
    await stopTestDispatchers();
    // Customer workflows started by accepted hostile events wait on a task queue no worker polls: end them.
    await client?.workflowService
      .startBatchOperation({
        namespace: 'default',
        jobId: randomUUID(),
        reason: 'fuzz test cleanup',
        visibilityQuery: `TaskQueue = '${config.TEMPORAL_TASK_QUEUE}'`,
        terminationOperation: {},
      })
      .catch(() => {});
    await client?.connection.close();
    await Promise.all([webhookDb?.drop(), jsonDb?.drop()]);
  });

  /** Sends one request; fails the property on a 5xx (with the response body for the report). */
  async function send(app: App, path: string, init: RequestInit): Promise<Response> {
    requests++;
    const res = await app.request(path, init);
    if (res.status >= 500) throw new Error(`${init.method ?? 'GET'} ${path.slice(0, 200)} → ${res.status} ${(await res.text()).slice(0, 300)}`);
    return res;
  }

  /**
   * Runs a property where some inputs may be accepted: after every 4xx the database must be unchanged;
   * after a 2xx the new state becomes the reference.
   */
  async function mixed<T>(sql: Sql, arb: fc.Arbitrary<T>, numRuns: number, request: (v: T) => Promise<Response>): Promise<void> {
    let reference = await fingerprint(sql);
    await fc.assert(
      fc.asyncProperty(arb, async (v) => {
        const res = await request(v);
        const now = await fingerprint(sql);
        if (res.status >= 400 && now !== reference) {
          throw new Error(`a rejected request (${res.status} ${(await res.text()).slice(0, 200)}) changed the database: ${reference} → ${now}`);
        }
        reference = now;
      }),
      { numRuns, seed, endOnFailure: true },
    );
  }

  /** Runs a property whose inputs must all be rejected (4xx): the database is compared once around it. */
  async function rejected<T>(sql: Sql, arb: fc.Arbitrary<T>, numRuns: number, request: (v: T) => Promise<Response>): Promise<void> {
    const before = await fingerprint(sql);
    await fc.assert(
      fc.asyncProperty(arb, async (v) => {
        const res = await request(v);
        if (res.status < 400) throw new Error(`expected a rejection, got ${res.status} ${(await res.text()).slice(0, 200)}`);
      }),
      { numRuns, seed, endOnFailure: true },
    );
    expect(await fingerprint(sql)).toBe(before);
  }

  const postWebhook = (body: string | Uint8Array, signature: string | null, contentType = 'application/json') =>
    send(webhookApp, '/webhooks/stripe', {
      method: 'POST',
      body,
      headers: { 'content-type': contentType, ...(signature === null ? {} : { 'stripe-signature': signature }) },
    });
  const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

  // ------------------------------------------------ JSON endpoints (first, while no customer workflows exist)

  it('GET /customers/{id} never fails on any path segment', async () => {
    const segment = fc.oneof(
      hostileString.map(pathEncode),
      fc.constantFrom('%', '%zz', '%00', '..', '.', '%2F..%2F', 'cus_%F0%9F%A6%84', `cus_${'9'.repeat(300)}`, '%ED%A0%80'),
      fc.string({ unit: 'binary-ascii', maxLength: 30 }).map((s) => `cus_${pathEncode(s)}`),
    );
    const before = await fingerprint(jsonDb.sql);
    await fc.assert(
      fc.asyncProperty(segment, fc.constantFrom('GET', 'POST', 'DELETE'), async (seg, method) => {
        await send(jsonApp, `/customers/${seg}`, { method });
      }),
      { numRuns: 1000, seed, endOnFailure: true },
    );
    expect(await fingerprint(jsonDb.sql)).toBe(before);
  });

  it('GET /admin/webhook-events and /admin/reconciliations never fail on any query, cursor or credentials', async () => {
    const dateish = fc.oneof(
      fc.date({ noInvalidDate: false }).map((d) => (Number.isNaN(d.getTime()) ? 'Invalid Date' : d.toISOString())),
      fc.constantFrom('-271821-04-20T00:00:00.000Z', '+275760-09-13T00:00:00.000Z', '-000001-01-01T00:00:00.000Z', '0000-01-01T00:00:00Z', '2026-13-45', ''),
      hostileString,
    );
    const cursor = fc.oneof(
      fc.tuple(dateish, hostileString).map((t) => Buffer.from(JSON.stringify(t)).toString('base64url')),
      hostile.map((h) => Buffer.from(render(h)).toString('base64url')),
      hostileString,
    );
    const value = fc.oneof(hostileString, fc.integer().map(String), fc.constantFrom('received', 'applied', 'failed', '0', '501', '-1', '1e3', '50.5'));
    const query = fc.array(
      fc.tuple(fc.oneof(fc.constantFrom('status', 'type', 'customer', 'limit', 'cursor', 'windowHours', 'status[]', '__proto__'), hostileString), fc.oneof(value, cursor)),
      { maxLength: 5 },
    );
    const auth = fc.oneof(
      { weight: 6, arbitrary: fc.constant(admin) },
      { weight: 1, arbitrary: fc.constant({}) },
      { weight: 1, arbitrary: hostileString.map((s) => ({ authorization: `Bearer ${headerSafe(s)}` })) },
      { weight: 1, arbitrary: fc.constantFrom({ authorization: 'Basic YWRtaW46YWRtaW4=' }, { authorization: `bearer  ${TEST_ADMIN_TOKEN} ` }, { authorization: 'Bearer' }) },
    );
    const path = fc.constantFrom('/admin/webhook-events', '/admin/reconciliations', '/admin/checkout/success-rate', '/plans');
    const before = await fingerprint(jsonDb.sql);
    await fc.assert(
      fc.asyncProperty(path, query, auth, async (p, q, headers) => {
        const qs = new URLSearchParams(q.map(([k, v]): [string, string] => [k, v])).toString();
        await send(jsonApp, `${p}?${qs}`, { headers });
      }),
      { numRuns: 1200, seed, endOnFailure: true },
    );
    expect(await fingerprint(jsonDb.sql)).toBe(before);
  });

  it('admin event lookups and replays never fail on any id', async () => {
    await mixed(jsonDb.sql, fc.tuple(hostileString, fc.constantFrom('GET', 'POST')), 600, ([id, method]) =>
      send(jsonApp, `/admin/webhook-events/${pathEncode(id)}${method === 'POST' ? '/replay' : ''}`, { method, headers: admin }),
    );
  });

  it('JSON bodies (bulk replay, reconciliation, checkout, plan changes) never fail, whatever their shape', async () => {
    const body = fc.oneof(
      hostile.map(render),
      fc.record(
        {
          status: fc.oneof(hostileString, fc.constantFrom('received', 'failed', 'ignored', 'dispatched')),
          type: hostileString,
          limit: hostileNumber,
          ratePerSecond: hostileNumber,
          planId: fc.oneof(hostileString, fc.constantFrom('pro', 'basic')),
          requestId: hostileString,
          email: hostileString,
          customerId: hostileString,
          successUrl: hostileString,
          cancelUrl: hostileString,
          trialDays: hostileNumber,
          prorationDate: hostileNumber,
          atPeriodEnd: fc.oneof(fc.boolean(), hostileString),
          pagesPerRun: hostileNumber,
          pageSize: hostileNumber,
        },
        { requiredKeys: [] },
      ).map((o) => render({ entries: Object.entries(o) as [string, H][] })),
      fc.constant(render(pollution)),
      hostileString.map((s) => s),
      fc.string({ maxLength: 200 }).map((s) => `{"status":"failed","limit":1${s}`),
    );
    const target = fc.constantFrom(
      ['POST', '/admin/webhook-events/replay'],
      ['POST', '/admin/reconciliations'],
      ['POST', '/checkout'],
      ['PUT', '/customers/cus_fuzz01/subscription/plan'],
      ['POST', '/customers/cus_fuzz01/subscription/plan/preview'],
      ['POST', '/customers/cus_fuzz01/subscription/cancel'],
      ['POST', '/customers/cus_fuzz01/subscription/resume'],
      ['POST', '/customers/cus_fuzz01/subscription/plan/cancel-pending'],
    );
    const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', '');
    await mixed(jsonDb.sql, fc.tuple(target, body, contentType), 1000, ([[method, path], b, ct]) =>
      send(jsonApp, path, { method, body: b, headers: { ...admin, ...(ct ? { 'content-type': ct } : {}) } }),
    );
  });

  // ------------------------------------------------ the webhook endpoint

  it('rejects random bytes with any signature header, storing nothing', async () => {
    const signature = fc.oneof(
      fc.constant(null),
      hostileString.map(headerSafe),
      fc.tuple(fc.integer(), fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), maxLength: 64 })).map(([t, h]) => `t=${t},v1=${h}`),
      fc.constantFrom('t=,v1=', 't=1,v1=', ',,,', 'v1=abc', `t=${Math.floor(Date.now() / 1000)},v0=deadbeef`),
    );
    await rejected(webhookDb.sql, fc.tuple(fc.uint8Array({ maxLength: 4096 }), signature), 2000, ([bytes, sig]) => postWebhook(bytes, sig));
  });

  it('rejects validly signed bodies that are not a JSON event (text, scalars, arrays, objects without id or type)', async () => {
    const body = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.jsonValue({ maxDepth: 3 }).filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)).map((v) => JSON.stringify(v)),
      hostile.filter((h) => typeof h !== 'object' || h === null || Array.isArray(h) || 'raw' in h).map(render),
      fc.constantFrom('{}', '{"id":""}', '{"id":"evt_1"}', '{"type":"customer.created"}', '{"id":1,"type":"x"}', '{"id":"evt_x","type":null}', render(pollution)),
    );
    await rejected(webhookDb.sql, body, 1500, (b) => postWebhook(b, signPayload(b)));
  });

  it('rejects stale and wrongly keyed signatures over valid events', async () => {
    const now = Math.floor(Date.now() / 1000);
    const variant = fc.oneof(
      fc.integer({ min: 301, max: 10_000_000 }).map((d) => ({ timestamp: now - d, secret: undefined as string | undefined })),
      hostileString.map((s) => ({ timestamp: now, secret: `whsec_${s}` })),
    );
    await rejected(webhookDb.sql, fc.tuple(fc.constantFrom(...FIXTURE_TYPES), variant), 500, ([type, v]) => {
      const text = fixtureText.get(type)!.replace(/"evt_[A-Za-z0-9]+"/, `"evt_fuzz_sig_${evtCounter++}"`);
      return postWebhook(text, signPayload(text, v.secret, v.timestamp));
    });
  });

  it('handles signed truncations of real events', async () => {
    await mixed(webhookDb.sql, fc.tuple(fc.constantFrom(...FIXTURE_TYPES), fc.double({ min: 0, max: 1, noNaN: true })), 1000, ([type, frac]) => {
      const full = fixtureText.get(type)!.replace(/"evt_[A-Za-z0-9]+"/, `"evt_fuzz_cut_${evtCounter++}"`);
      const text = full.slice(0, Math.floor(full.length * frac));
      return postWebhook(text, signPayload(text));
    });
  });

  it('handles signed real events with any field replaced by a value of the wrong type', async () => {
    const mutation = fc.tuple(fc.constantFrom(...FIXTURE_TYPES), fc.array(fc.tuple(fc.constantFrom(...MUTATION_PATHS), hostile), { minLength: 1, maxLength: 3 }));
    await mixed(webhookDb.sql, mutation, 700, ([type, edits]) => {
      const env = JSON.parse(fixtureText.get(type)!);
      env.id = `evt_fuzz_wt_${evtCounter++}`;
      const rendered: string[] = [];
      for (const [path, value] of edits) {
        setPath(env, path, `@@H${rendered.length}@@`);
        rendered.push(render(value));
      }
      const text = JSON.stringify(env).replace(/"@@H(\d+)@@"/g, (_, i: string) => rendered[Number(i)]!);
      return postWebhook(text, signPayload(text));
    });
  });

  it('handles signed hostile envelopes: unicode, NUL, lone surrogates, prototype-pollution keys, extreme numbers', async () => {
    const envelope = fc.record({
      id: fc.oneof({ weight: 3, arbitrary: fc.constant('UNIQUE') }, { weight: 2, arbitrary: hostile }),
      type: fc.oneof(fc.constantFrom(...HANDLED_EVENT_TYPES, 'constructor', '__proto__', 'toString', 'hasOwnProperty'), hostile),
      created: fc.oneof(hostileNumber, hostile),
      livemode: hostile,
      object: fc.oneof(
        hostile,
        fc.record({
          id: hostileString,
          object: fc.constantFrom('subscription', 'invoice', 'customer', 'checkout.session', 'payment_method', 'charge'),
          customer: fc.oneof(hostileString, hostile),
          status: fc.oneof(fc.constantFrom('active', 'canceled', 'paid', 'open', 'complete'), hostileString),
          email: hostileString,
          amount_due: hostileNumber,
          amount_paid: hostileNumber,
          currency: hostileString,
          extra: fc.array(fc.tuple(hostileKey, hostile), { maxLength: 3 }),
        }).map(({ extra, ...o }): H => ({ entries: [...(Object.entries(o) as [string, H][]), ...extra, ...(pollution as { entries: [string, H][] }).entries] })),
      ),
      extra: fc.array(fc.tuple(hostileKey, hostile), { maxLength: 3 }),
    });
    await mixed(webhookDb.sql, envelope, 1500, (e) => {
      const id: H = e.id === 'UNIQUE' ? `evt_fuzz_h_${evtCounter++}` : e.id;
      const text = render({
        entries: [['id', id], ['object', 'event'], ['type', e.type], ['created', e.created], ['livemode', e.livemode], ['data', { entries: [['object', e.object]] }], ...e.extra],
      });
      return postWebhook(text, signPayload(text));
    });
  });

  it('handles huge signed bodies around the size limit', async () => {
    const limit = config.WEBHOOK_MAX_BODY_BYTES;
    await mixed(webhookDb.sql, fc.tuple(fc.integer({ min: 100_000, max: limit + 200_000 }), fc.constantFrom('email', 'description', 'metadata')), 30, ([size, field]) => {
      const env = JSON.parse(fixtureText.get('customer.updated')!);
      env.id = `evt_fuzz_big_${evtCounter++}`;
      env.data.object[field] = field === 'metadata' ? { blob: 'ü'.repeat(size / 2) } : 'x'.repeat(size);
      const text = JSON.stringify(env);
      return postWebhook(text, signPayload(text));
    });
  });

  it('is still healthy afterwards: no prototype pollution, /healthz answers, a real event is accepted', async () => {
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
    expect((await webhookApp.request('/healthz')).status).toBe(200);
    const text = fixtureText.get('customer.created')!.replace(/"evt_[A-Za-z0-9]+"/, `"evt_fuzz_final_${evtCounter++}"`);
    const res = await webhookApp.request('/webhooks/stripe', { method: 'POST', body: text, headers: { 'content-type': 'application/json', 'stripe-signature': signPayload(text) } });
    expect(res.status).toBe(200);
    expect(requests, `fast-check seed ${seed}`).toBeGreaterThanOrEqual(10_000);
  });
});
