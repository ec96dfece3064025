/**
 * Delivery of one app_webhooks row: read it, sign `{ id, type, created, data }`, POST it to
 * APP_WEBHOOK_URL, record the attempt on the row; a 2xx is `delivered`, anything else `failed` and a
 * retryable failure (the workflow's retry policy is the backoff). At least once: the app dedups on `id`.
 */
import { log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { APP_WEBHOOK_EVENT_ID_HEADER, APP_WEBHOOK_SIGNATURE_HEADER, signAppWebhook } from '../lib/app-webhook-signature';
import type { Config } from '../lib/config';
import type { Sql } from '../lib/db';

/** Dependencies of the app webhook activities; `fetchImpl` defaults to the global fetch. */
export interface AppWebhookDeps {
  sql: Sql;
  config: Pick<Config, 'APP_WEBHOOK_URL' | 'APP_WEBHOOK_SECRET' | 'APP_WEBHOOK_TIMEOUT_MS'>;
  fetchImpl?: typeof fetch;
}

/** Input of both activities: the app_webhooks id (aevt_…). */
export interface AppWebhookRef {
  id: string;
}

/** What deliverAppWebhook did: posted it (and the app's status), or found it delivered before. */
export interface DeliverAppWebhookResult {
  status: 'delivered' | 'already_delivered';
  statusCode?: number;
}

/** The body the app receives, keys in this order. */
export interface AppWebhookBody {
  id: string;
  type: string;
  /** Unix seconds of the event's created_at. */
  created: number;
  data: unknown;
}

/** Failure types the delivery workflow does not retry. */
export const APP_WEBHOOK_NON_RETRYABLE = ['AppWebhookNotFound', 'AppWebhooksDisabled'] as const;

const USER_AGENT = 'billing-engine/0.1.0 (app-webhooks)';
/** last_error is for people reading the admin log: bounded. */
const MAX_ERROR_CHARS = 500;
/** How much of a refusing app's answer goes into last_error. */
const MAX_RESPONSE_SNIPPET_BYTES = 200;
/** An app's Retry-After is honoured up to the workflow's maximum interval. */
const MAX_RETRY_AFTER_SEC = 3600;

interface Row {
  id: string;
  type: string;
  status: string;
  created_at: Date;
  data: unknown;
}

/** The JSON body of an event, stable for a row: `{ id, type, created, data }`. */
export function appWebhookBody(row: { id: string; type: string; createdAt: Date; data: unknown }): string {
  const body: AppWebhookBody = { id: row.id, type: row.type, created: Math.floor(row.createdAt.getTime() / 1000), data: row.data };
  return JSON.stringify(body);
}

/** The app webhook activities (registered by the worker under these names). */
export function createAppWebhookActivities(deps: AppWebhookDeps) {
  const { sql, config } = deps;
  const fetchImpl = deps.fetchImpl ?? fetch;

  async function recordFailure(id: string, statusCode: number | null, error: string): Promise<void> {
    // A row another run has delivered meanwhile stays delivered; the attempt is still counted.
    await sql`
      UPDATE app_webhooks
      SET attempts = attempts + 1, last_status_code = ${statusCode}, last_error = ${error.slice(0, MAX_ERROR_CHARS)},
          last_attempt_at = now(), status = CASE WHEN status = 'delivered' THEN status ELSE 'failed' END
      WHERE id = ${id}`;
  }

  return {
    /** POSTs the event once; throws a retryable AppWebhookFailed unless the app answered 2xx. */
    async deliverAppWebhook(input: AppWebhookRef): Promise<DeliverAppWebhookResult> {
      const url = config.APP_WEBHOOK_URL;
      const secret = config.APP_WEBHOOK_SECRET;
      if (!url || !secret) {
        throw ApplicationFailure.nonRetryable('APP_WEBHOOK_URL and APP_WEBHOOK_SECRET must be set to deliver app webhooks', 'AppWebhooksDisabled');
      }
      const [row] = await sql<Row[]>`SELECT id, type, status, created_at, data FROM app_webhooks WHERE id = ${input.id}`;
      if (!row) throw ApplicationFailure.nonRetryable(`no app webhook ${input.id}`, 'AppWebhookNotFound');
      // An admin replay sets the row back to 'pending' before its run starts.
      if (row.status === 'delivered') return { status: 'already_delivered' };

      const body = appWebhookBody({ id: row.id, type: row.type, createdAt: row.created_at, data: row.data });
      // A fresh timestamp per attempt: a retry hours later must still be within the app's tolerance.
      const signature = signAppWebhook(body, secret, Math.floor(Date.now() / 1000));
      let res: Response;
      try {
        res = await fetchImpl(url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': USER_AGENT,
            [APP_WEBHOOK_SIGNATURE_HEADER]: signature,
            [APP_WEBHOOK_EVENT_ID_HEADER]: row.id,
          },
          body,
          // A redirect would turn the POST into a GET elsewhere: it counts as a failure.
          redirect: 'manual',
          signal: AbortSignal.timeout(config.APP_WEBHOOK_TIMEOUT_MS),
        });
      } catch (err) {
        const error = describeNetworkError(err, config.APP_WEBHOOK_TIMEOUT_MS);
        await recordFailure(row.id, null, error);
        log.warn('app webhook attempt failed', { id: row.id, type: row.type, error });
        throw ApplicationFailure.create({ message: `app webhook ${row.id}: ${error}`, type: 'AppWebhookFailed', details: [{ statusCode: null }] });
      }

      if (res.status >= 200 && res.status < 300) {
        await res.body?.cancel().catch(() => {});
        await sql`
          UPDATE app_webhooks
          SET attempts = attempts + 1, last_status_code = ${res.status}, last_error = NULL, last_attempt_at = now(),
              status = 'delivered', delivered_at = now()
          WHERE id = ${row.id}`;
        log.info('app webhook delivered', { id: row.id, type: row.type, statusCode: res.status });
        return { status: 'delivered', statusCode: res.status };
      }

      const snippet = await responseSnippet(res);
      const error = `HTTP ${res.status}${snippet ? `: ${snippet}` : ''}`;
      await recordFailure(row.id, res.status, error);
      log.warn('app webhook attempt failed', { id: row.id, type: row.type, statusCode: res.status });
      const retryAfter = retryAfterSeconds(res.headers.get('retry-after'));
      throw ApplicationFailure.create({
        message: `app webhook ${row.id}: ${error}`.slice(0, MAX_ERROR_CHARS),
        type: 'AppWebhookFailed',
        details: [{ statusCode: res.status }],
        ...(retryAfter !== null ? { nextRetryDelay: `${retryAfter} seconds` } : {}),
      });
    },

    /** Marks the row given up (retries exhausted or a non-retryable failure); a delivered row stays delivered. */
    async giveUpAppWebhook(input: AppWebhookRef & { error: string }): Promise<void> {
      await sql`
        UPDATE app_webhooks SET status = 'given_up', last_error = ${input.error.slice(0, MAX_ERROR_CHARS)}
        WHERE id = ${input.id} AND status <> 'delivered'`;
      log.warn('app webhook given up', { id: input.id, error: input.error.slice(0, MAX_ERROR_CHARS) });
    },
  };
}

/** The activities' type, for `proxyActivities` in workflows/app-webhook.ts. */
export type AppWebhookActivities = ReturnType<typeof createAppWebhookActivities>;

/** A fetch failure in words: a timeout, or the network error and its code (never the URL or headers). */
function describeNetworkError(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return `timed out after ${timeoutMs} ms`;
  if (!(err instanceof Error)) return `network error: ${String(err)}`;
  const cause = err.cause as { code?: unknown; message?: unknown } | undefined;
  const detail = cause && typeof cause.code === 'string' ? cause.code : cause && typeof cause.message === 'string' ? cause.message : null;
  return `network error: ${err.message}${detail ? ` (${detail})` : ''}`;
}

/** The first bytes of a refusing answer, for the admin log; the rest is not read. */
async function responseSnippet(res: Response): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < MAX_RESPONSE_SNIPPET_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } catch {
    /* a body cut short (timeout, reset) still leaves the status */
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks)
    .subarray(0, MAX_RESPONSE_SNIPPET_BYTES)
    .toString('utf8')
    .replace(/\s+/g, ' ')
    .trim();
}

/** Retry-After as seconds (delta or HTTP date), capped; null when absent or unreadable. */
function retryAfterSeconds(value: string | null): number | null {
  if (!value) return null;
  const seconds = /^\d+$/.test(value.trim()) ? Number(value.trim()) : (Date.parse(value) - Date.now()) / 1000;
  if (!Number.isFinite(seconds)) return null;
  return Math.min(MAX_RETRY_AFTER_SEC, Math.max(1, Math.ceil(seconds)));
}
