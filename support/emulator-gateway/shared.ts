/** Helpers shared by the emulator gateway's modules: object shapes, ids, event envelopes, form bodies. */
import { randomBytes } from 'node:crypto';

export type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
export const now = () => Math.floor(Date.now() / 1000);
export const rand = (n: number) => randomBytes(n).toString('base64url').replace(/[^A-Za-z0-9]/g, '').slice(0, n);
export const idOf = (v: unknown): string | null => (typeof v === 'string' ? v : isObj(v) && typeof v.id === 'string' ? v.id : null);

/** An event envelope as Stripe sends it. */
export function eventEnvelope(type: string, object: Obj, opts: { apiVersion?: string; previousAttributes?: Obj; idempotencyKey?: string | null } = {}): Obj {
  return {
    id: `evt_gw${rand(20)}`,
    object: 'event',
    api_version: opts.apiVersion ?? '2017-08-15',
    created: now(),
    data: { object, ...(opts.previousAttributes ? { previous_attributes: opts.previousAttributes } : {}) },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: opts.idempotencyKey ?? null },
    type,
  };
}

// ------------------------------------------------------------------------------------------ form bodies

/** `a[b][0][c]=v` form encoding → nested objects and arrays (what Stripe's SDK sends). */
export function parseForm(params: URLSearchParams): Obj {
  const root: Obj = {};
  for (const [key, value] of params) {
    const parts = key.replace(/\]/g, '').split('[');
    let node: Obj = root;
    parts.forEach((part, i) => {
      const last = i === parts.length - 1;
      const k = part === '' ? String(Object.keys(node).length) : part;
      if (last) node[k] = value;
      else node = (isObj(node[k]) ? node[k] : (node[k] = {})) as Obj;
    });
  }
  const arrays = (v: unknown): unknown => {
    if (!isObj(v)) return v;
    const keys = Object.keys(v);
    if (keys.length > 0 && keys.every((k) => /^\d+$/.test(k))) return keys.sort((a, b) => Number(a) - Number(b)).map((k) => arrays(v[k]));
    return Object.fromEntries(keys.map((k) => [k, arrays(v[k])]));
  };
  return arrays(root) as Obj;
}

export const num = (v: unknown): number | null => (v === undefined || v === null || v === '' ? null : Number(v));
