/**
 * The durable inbox. The request path verifies and stores (`ingestVerified`): 2xx means the row is
 * committed. Handing stored rows to Temporal is the dispatcher's job (api/dispatcher.ts), which uses
 * `resolveStored` from here; admin replay and the stuck sweeper re-send one row with `redispatch`.
 */
import { trace, type Tracer } from '@opentelemetry/api';
import type { Client } from '@temporalio/client';
import Stripe from 'stripe';
import type { BillingEvent } from '../domain/billing-event';
import { NO_CUSTOMER_ERROR, normalizeStripeEvent } from '../domain/events';
import { customerWorkflowId } from '../domain/ids';
import { stripeEventsSignal } from '../workflows/contracts';
import { BillingWorkflowKindKey, StripeCustomerIdKey } from '../workflows/contracts';
import type { Sql } from '../lib/db';
import { logContext, type Logger } from '../lib/logger';
import { activeTraceparent } from '../lib/tracing';
import { createWebhookLoad } from './webhook-load';
import type { Metrics } from './metrics';
import { implausible, mayNeedSanitizing, missingAtStripe, plausibleUnix, sanitizeForJsonb, stripNul, truncatedPayload, unroutedLogFields, type Envelope, type Normalized } from './payload';

export interface IngestDeps {
  sql: Sql;
  temporal: Client;
  taskQueue: string;
  logger: Logger;
  metrics: Metrics;
  payloadStoreLimitBytes: number;
  /** Finds the customer of a dispute whose charge we have not seen; re-fetches a truncated payload on replay. */
  stripe?: Pick<Stripe, 'charges' | 'events'>;
  /** Deadline of one signal-with-start (default 5 s). */
  dispatchTimeoutMs?: number;
  /** Called after a routable delivery is committed (wakes this process's dispatcher at once). */
  onStored?: () => void;
  /** Set only when tracing is on (lib/tracing.ts): the webhook route and the dispatcher span with it. */
  tracer?: Tracer;
}

/** What the request path did with a verified delivery: the row is committed in every case. */
export type StoreOutcome =
  /** New and routable: 'received', the dispatcher hands it over. */
  | { status: 'received'; eventId: string; duplicate: false }
  /** A redelivery: the stored row's status is answered, nothing else is done. */
  | { status: 'duplicate'; eventId: string; previous: string }
  | { status: 'ignored'; eventId: string; reason: string }
  | { status: 'failed'; eventId: string; error: string };

/** What resolving a stored row decided: an event to hand over, or a status already written. */
export type Resolved =
  | { kind: 'event'; event: BillingEvent }
  | { kind: 'settled'; outcome: Extract<IngestOutcome, { status: 'ignored' | 'failed' | 'deferred' }> };

export type IngestOutcome =
  | { status: 'dispatched'; eventId: string; customerId: string; workflowId: string; duplicate: boolean }
  | { status: 'already_handled'; eventId: string; previous: string }
  | { status: 'ignored'; eventId: string; reason: string }
  | { status: 'failed'; eventId: string; error: string }
  /** Kept 'received': a Stripe lookup it needs failed transiently; the sweeper tries again. */
  | { status: 'deferred'; eventId: string; error: string }
  | { status: 'unavailable'; eventId: string; error: string };


/** Counts behind the inbox gauges (computed from Postgres at scrape time). */
export interface InboxHealth {
  quarantined: number;
  stuck: number;
  stuckOldestAgeSeconds: number;
}

/** Creates the ingest service. */
export function createIngest(deps: IngestDeps) {
  const { sql, temporal, taskQueue, logger, metrics } = deps;

  /**
   * Normalizes, then refuses what cannot be stored or routed (see `implausible`). `knownCustomerId` is
   * the customer already recorded for a stored event, so a replay needs no second lookup.
   */
  async function normalize(envelope: Envelope, knownCustomerId: string | null = null): Promise<Normalized> {
    return implausible(await normalizeWithDisputeLookup(envelope, knownCustomerId));
  }

  /** Event types whose object names only a charge (disputes, early fraud warnings): the customer is looked up by it. */
  const CHARGE_ONLY_TYPES: ReadonlySet<string> = new Set(['charge.dispute.created', 'charge.dispute.closed', 'radar.early_fraud_warning.created']);

  /**
   * Disputes and early fraud warnings name only the charge: find its customer locally, else ask Stripe, then normalize again.
   * Stripe unreachable, failing or rate limiting is 'deferred' (kept for the sweeper); only a 404 is final.
   */
  async function normalizeWithDisputeLookup(envelope: Envelope, knownCustomerId: string | null): Promise<Normalized> {
    const first = normalizeStripeEvent(envelope, knownCustomerId ? { fallbackCustomerId: knownCustomerId } : {});
    if (first.outcome !== 'invalid' || first.error !== NO_CUSTOMER_ERROR || !CHARGE_ONLY_TYPES.has(String(envelope.type))) return first;
    const obj = ((envelope.data as Envelope | undefined)?.object ?? {}) as Envelope;
    const chargeId = typeof obj.charge === 'string' ? obj.charge : null;
    if (!chargeId) return first;
    const local = await sql<{ customer_id: string }[]>`SELECT customer_id FROM charges WHERE id = ${chargeId}`;
    let customerId = local[0]?.customer_id ?? null;
    if (!customerId && deps.stripe) {
      try {
        const charge = await deps.stripe.charges.retrieve(chargeId);
        customerId = typeof charge.customer === 'string' ? charge.customer : charge.customer?.id ?? null;
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        if (!missingAtStripe(err)) {
          logger.warn({ ...unroutedLogFields(envelope), chargeId, error }, 'could not look up the disputed charge; kept for the sweeper');
          return { outcome: 'deferred', error: `charge lookup ${chargeId}: ${error}`, eventId: first.eventId, type: String(envelope.type) };
        }
        logger.warn({ ...unroutedLogFields(envelope), chargeId, error }, 'the disputed charge does not exist at Stripe');
      }
    }
    return customerId ? normalizeStripeEvent(envelope, { fallbackCustomerId: customerId }) : first;
  }

  /** Hands one customer's events, in order, to its workflow in one signal-with-start (`stripeEvents`). */
  async function signalEvents(customerId: string, events: BillingEvent[]): Promise<string> {
    const workflowId = customerWorkflowId(customerId);
    // Bound the hand-over: a hung call must not hold the dispatcher's slot (or an admin request).
    await temporal.connection.withDeadline(Date.now() + (deps.dispatchTimeoutMs ?? 5000), () => temporal.workflow.signalWithStart('customerWorkflow', {
      workflowId,
      taskQueue,
      args: [{ customerId }],
      signal: stripeEventsSignal,
      signalArgs: [events],
      typedSearchAttributes: [
        { key: StripeCustomerIdKey, value: customerId },
        { key: BillingWorkflowKindKey, value: 'customer' },
      ],
    }));
    return workflowId;
  }

  /**
   * Turns a stored row into the event to hand over. Re-fetches a truncated payload and looks up a
   * dispute's customer when it must; writes 'ignored' / 'failed', or keeps the row 'received' with
   * the reason when Stripe did not answer ('deferred': tried again later).
   */
  async function resolveStored(
    row: { event_id: string; payload: Envelope; payload_truncated: boolean; customer_id: string | null },
    opts: { stripe?: Pick<Stripe, 'events'> } = {},
  ): Promise<Resolved> {
    const eventId = row.event_id;
    /** Stripe did not answer a call the event needs: record why; a received or failed row waits 'received'. */
    const defer = async (error: string): Promise<Resolved> => {
      await sql`
        UPDATE webhook_events
        SET status = CASE WHEN status IN ('received', 'failed') THEN 'received' ELSE status END, last_error = ${stripNul(error).slice(0, 2000)}
        WHERE event_id = ${eventId}`;
      return { kind: 'settled', outcome: { status: 'deferred', eventId, error } };
    };
    let envelope = row.payload;
    if (row.payload_truncated) {
      const stripe = opts.stripe ?? deps.stripe;
      if (!stripe) return { kind: 'settled', outcome: { status: 'failed', eventId, error: 'payload was truncated and no Stripe client is available to re-fetch it' } };
      try {
        envelope = sanitizeForJsonb(await stripe.events.retrieve(eventId)) as Envelope;
      } catch (err) {
        const error = `re-fetch of the truncated payload: ${err instanceof Error ? err.message : String(err)}`;
        // Stripe keeps events for 30 days: a 404 is final, anything else is worth another try.
        if (!missingAtStripe(err)) return defer(error);
        await sql`UPDATE webhook_events SET status = 'failed', last_error = ${stripNul(error).slice(0, 2000)} WHERE event_id = ${eventId} AND status <> 'applied'`;
        return { kind: 'settled', outcome: { status: 'failed', eventId, error } };
      }
    }
    const result = await normalize(envelope, row.customer_id);
    if (result.outcome === 'deferred') return defer(result.error);
    if (result.outcome === 'ignored') {
      await sql`UPDATE webhook_events SET status = 'ignored', dispatch_claimed_until = NULL WHERE event_id = ${eventId}`;
      return { kind: 'settled', outcome: { status: 'ignored', eventId, reason: result.reason } };
    }
    if (result.outcome === 'invalid') {
      await sql`UPDATE webhook_events SET status = 'failed', last_error = ${stripNul(result.error).slice(0, 2000)}, dispatch_claimed_until = NULL WHERE event_id = ${eventId}`;
      return { kind: 'settled', outcome: { status: 'failed', eventId, error: result.error } };
    }
    if (result.event.customerId !== row.customer_id || row.payload_truncated) {
      await sql`
        UPDATE webhook_events SET customer_id = ${result.event.customerId}, object_id = ${result.event.objectId}
        WHERE event_id = ${eventId}`;
    }
    return { kind: 'event', event: result.event };
  }

  /** Signals one event's workflow and marks the row dispatched (admin replay, stuck re-send); leaves it as it was if Temporal is down. */
  async function dispatch(event: BillingEvent): Promise<IngestOutcome> {
    try {
      const workflowId = await signalEvents(event.customerId, [event]);
      // first_dispatched_at is when the row entered 'dispatched'; a re-send of a row already there
      // (sweeper, replay) bumps only dispatched_at, so a stuck delivery stays counted until applied.
      await sql`
        UPDATE webhook_events
        SET status = 'dispatched', dispatched_at = now(), workflow_id = ${workflowId}, last_error = NULL, dispatch_claimed_until = NULL,
            first_dispatched_at = CASE WHEN status = 'dispatched' THEN coalesce(first_dispatched_at, dispatched_at, now()) ELSE now() END
        WHERE event_id = ${event.eventId} AND status IN ('received', 'failed', 'ignored', 'quarantined', 'dispatched')`;
      logger.info({ eventId: event.eventId, customerId: event.customerId, workflowId, type: event.type }, 'event dispatched');
      return { status: 'dispatched', eventId: event.eventId, customerId: event.customerId, workflowId, duplicate: false };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      await sql`UPDATE webhook_events SET last_error = ${`dispatch: ${message}`.slice(0, 1000)} WHERE event_id = ${event.eventId}`.catch(
        () => {},
      );
      logger.warn(
        { eventId: event.eventId, customerId: event.customerId, workflowId: customerWorkflowId(event.customerId), error: message },
        'temporal unavailable; event kept for the sweeper',
      );
      return { status: 'unavailable', eventId: event.eventId, error: message };
    }
  }

  /** The request path's classification: no network, no lookups (those are the dispatcher's). */
  function classify(envelope: Envelope): Normalized {
    const first = implausible(normalizeStripeEvent(envelope));
    // A dispute or early fraud warning names only its charge: stored 'received', the dispatcher finds the customer.
    if (first.outcome === 'invalid' && first.error === NO_CUSTOMER_ERROR && CHARGE_ONLY_TYPES.has(String(envelope.type))) {
      const obj = ((envelope.data as Envelope | undefined)?.object ?? {}) as Envelope;
      if (typeof obj.charge === 'string') return { outcome: 'deferred', error: 'customer not yet known: looked up by its charge', eventId: first.eventId, type: String(envelope.type) };
    }
    return first;
  }

  return {
    signalEvents,
    resolveStored,
    /** Webhook requests in flight in this process (counted by the route; the dispatcher yields to them). */
    load: createWebhookLoad(),
    /** Tracing on: the tracer of the webhook and dispatch spans (undefined: no span code runs). */
    tracer: deps.tracer,

    /**
     * Records a verified event, and only that: the answer can be 2xx as soon as this commits. A
     * redelivery bumps the attempt counter and answers the stored row's status.
     */
    async ingestVerified(raw: Envelope, rawBytes: number, rawText?: string): Promise<StoreOutcome> {
      // The workflow gets exactly what is stored: classify the jsonb-safe copy, not the raw envelope
      // (copied only when the raw text can hold something unsafe).
      const envelope = (rawText === undefined || mayNeedSanitizing(rawText) ? sanitizeForJsonb(raw) : raw) as Envelope;
      const result = classify(envelope);
      const eventId = typeof envelope.id === 'string' ? envelope.id : null;
      if (!eventId) throw new Error('ingestVerified requires an envelope with an id');
      const type = typeof envelope.type === 'string' ? envelope.type : 'unknown';
      // Text columns reject NUL and a Date must be representable: never let the payload make the INSERT fail.
      const created = plausibleUnix(envelope.created) ? envelope.created : Date.now() / 1000;
      const truncated = rawBytes > deps.payloadStoreLimitBytes;
      const stored = truncated ? truncatedPayload(envelope, rawBytes) : envelope;
      const routable = result.outcome === 'handled' || result.outcome === 'deferred';
      const status = routable ? 'received' : result.outcome === 'ignored' ? 'ignored' : 'failed';
      const lastError = result.outcome === 'invalid' ? stripNul(result.error).slice(0, 2000) : null;
      const customerId = result.outcome === 'handled' ? result.event.customerId : null;
      const objectId = result.outcome === 'handled' ? result.event.objectId : null;
      // Tracing on: the request span's context is stored with the row, so the dispatch continues its trace.
      const traceContext = deps.tracer ? activeTraceparent() : null;
      if (deps.tracer && customerId) trace.getActiveSpan()?.setAttribute('billing.customer.id', customerId);

      const rows = await sql<{ status: string; inserted: boolean }[]>`
        INSERT INTO webhook_events (
          event_id, type, api_version, livemode, stripe_created_at, customer_id, object_id, status,
          payload, payload_truncated, payload_bytes, last_error, trace_context)
        VALUES (
          ${eventId}, ${stripNul(type).slice(0, 200)}, ${typeof envelope.api_version === 'string' ? stripNul(envelope.api_version).slice(0, 100) : null},
          ${envelope.livemode === true}, ${new Date(Math.trunc(created) * 1000)}, ${customerId}, ${objectId}, ${status},
          ${sql.json(stored as never)}, ${truncated}, ${rawBytes}, ${lastError}, ${traceContext})
        ON CONFLICT (event_id) DO UPDATE SET attempts = webhook_events.attempts + 1, last_received_at = now()
        RETURNING status, (xmax = 0) AS inserted`;
      const row = rows[0]!;
      metrics.webhooksReceived.inc({ type: routable ? type : result.outcome });

      if (!row.inserted) {
        metrics.webhooksDuplicate.inc();
        return { status: 'duplicate', eventId, previous: row.status };
      }
      if (result.outcome === 'ignored') {
        metrics.webhooksIgnored.inc();
        logger.info({ ...unroutedLogFields(envelope), type }, 'event type not handled; stored as ignored');
        return { status: 'ignored', eventId, reason: result.reason };
      }
      if (result.outcome === 'invalid') {
        metrics.webhooksFailed.inc();
        logger.warn({ ...unroutedLogFields(envelope), type, error: lastError }, 'verified event failed validation; stored as failed');
        return { status: 'failed', eventId, error: result.error };
      }
      // One line per delivery: the request's own line carries these ids (api/app.ts); this one is debug.
      const ids = customerId ? { eventId, customerId, workflowId: customerWorkflowId(customerId), type } : { ...unroutedLogFields(envelope), type };
      const context = logContext.getStore();
      if (context) Object.assign(context, ids);
      logger.debug(ids, 'event stored');
      deps.onStored?.();
      return { status: 'received', eventId, duplicate: false };
    },

    /**
     * Re-dispatches a stored event (admin replay, stuck sweeper), whatever its status; it is 'dispatched'
     * afterwards. Already-applied events are a no-op, and a log row that missed its apply is marked applied.
     */
    async redispatch(eventId: string, opts: { stripe?: Pick<Stripe, 'events'> } = {}): Promise<
      IngestOutcome | { status: 'noop'; eventId: string; reason: string } | { status: 'not_found'; eventId: string }
    > {
      const rows = await sql<{ event_id: string; payload: Envelope | null; payload_truncated: boolean; status: string; customer_id: string | null }[]>`
        SELECT event_id, payload, payload_truncated, status, customer_id FROM webhook_events WHERE event_id = ${eventId}`;
      const row = rows[0];
      if (!row) return { status: 'not_found', eventId };
      const applied = await sql<{ applied_at: Date }[]>`SELECT applied_at FROM applied_events WHERE event_id = ${eventId}`;
      if (applied[0]) {
        // The apply committed but the log row says otherwise (e.g. it was logged after the apply): else
        // the sweeper would pick it up again on every tick and the stuck gauge would never clear.
        await sql`
          UPDATE webhook_events SET status = 'applied', applied_at = coalesce(applied_at, ${applied[0].applied_at}), last_error = NULL
          WHERE event_id = ${eventId} AND status IN ('received', 'dispatched')`;
        return { status: 'noop', eventId, reason: 'already applied' };
      }
      // Retention (retention-daily) purged the payload of this settled delivery: nothing to re-send.
      if (row.payload === null) return { status: 'noop', eventId, reason: `payload purged by retention (delivery ${row.status})` };
      const resolved = await resolveStored({ ...row, payload: row.payload }, opts);
      if (resolved.kind === 'settled') return resolved.outcome;
      return dispatch(resolved.event);
    },

    /**
     * Re-sends deliveries 'dispatched' for longer than thresholdMs and still not applied (a lost signal,
     * a workflow that dropped it); the workflow dedups by event id. Each is claimed by bumping
     * dispatched_at first, so every API replica together re-sends it at most once per threshold.
     */
    async sweepStuck(thresholdMs: number, limit = 200): Promise<{ attempted: number; dispatched: number }> {
      const cutoff = sql`now() - ${thresholdMs / 1000} * interval '1 second'`;
      let attempted = 0;
      let dispatched = 0;
      // One claim per re-send, longest waiting first: if Temporal is down only the row that found out waits.
      while (attempted < limit) {
        const [claimed] = await sql<{ event_id: string }[]>`
          UPDATE webhook_events SET dispatched_at = now(), first_dispatched_at = coalesce(first_dispatched_at, dispatched_at)
          WHERE event_id = (
            SELECT event_id FROM webhook_events
            WHERE status = 'dispatched' AND coalesce(first_dispatched_at, dispatched_at) < ${cutoff} AND dispatched_at < ${cutoff}
            ORDER BY coalesce(first_dispatched_at, dispatched_at), event_id
            LIMIT 1
            FOR UPDATE SKIP LOCKED)
          RETURNING event_id`;
        if (!claimed) break;
        attempted++;
        const out = await this.redispatch(claimed.event_id);
        if (out.status === 'dispatched') dispatched++;
        else if (out.status === 'unavailable') break;
      }
      return { attempted, dispatched };
    },

    /** Quarantined rows, and rows 'dispatched' longer than stuckThresholdMs with the oldest one's age (0 when none). */
    async inboxHealth(stuckThresholdMs: number): Promise<InboxHealth> {
      const rows = await sql<{ quarantined: number; stuck: number; oldest: number }[]>`
        SELECT
          (SELECT count(*) FROM webhook_events WHERE status = 'quarantined')::int AS quarantined,
          count(*)::int AS stuck,
          coalesce(EXTRACT(EPOCH FROM now() - min(coalesce(first_dispatched_at, dispatched_at))), 0)::float8 AS oldest
        FROM webhook_events
        WHERE status = 'dispatched'
          AND coalesce(first_dispatched_at, dispatched_at) < now() - ${stuckThresholdMs / 1000} * interval '1 second'`;
      const r = rows[0]!;
      return { quarantined: r.quarantined, stuck: r.stuck, stuckOldestAgeSeconds: r.oldest };
    },

    /** Deliveries stored and not yet handed to Temporal, and the oldest one's age in seconds (0 when none). */
    async inboxDepth(): Promise<{ depth: number; oldestAgeSeconds: number }> {
      const rows = await sql<{ depth: number; age: number | null }[]>`
        SELECT count(*)::int AS depth, EXTRACT(EPOCH FROM now() - min(received_at))::float8 AS age
        FROM webhook_events WHERE status = 'received'`;
      return { depth: rows[0]?.depth ?? 0, oldestAgeSeconds: rows[0]?.age ?? 0 };
    },
  };
}

export type Ingest = ReturnType<typeof createIngest>;

/** Verifies a Stripe signature against any of the configured secrets (rotation), 300 s tolerance. */
export async function verifyStripeSignature(
  rawBody: string,
  signature: string,
  secrets: string[],
  toleranceSeconds = 300,
): Promise<{ ok: true; event: Stripe.Event } | { ok: false; reason: 'bad_signature' | 'stale_timestamp' | 'malformed_json'; message: string }> {
  let last: { reason: 'bad_signature' | 'stale_timestamp' | 'malformed_json'; message: string } = {
    reason: 'bad_signature',
    message: 'no webhook secret configured',
  };
  // The SDK refuses only timestamps older than the tolerance; one dated later than it is refused too
  // (a signature minted ahead of time must not stay valid until then).
  const t = Number(/(?:^|,)\s*t=(\d{1,12})(?:,|$)/.exec(signature)?.[1]);
  if (Number.isFinite(t) && t - Math.floor(Date.now() / 1000) > toleranceSeconds) {
    return { ok: false, reason: 'stale_timestamp', message: `signature timestamp is more than ${toleranceSeconds} s in the future` };
  }
  for (const secret of secrets) {
    try {
      const event = await Stripe.webhooks.constructEventAsync(rawBody, signature, secret, toleranceSeconds);
      return { ok: true, event };
    } catch (err) {
      if (err instanceof SyntaxError) return { ok: false, reason: 'malformed_json', message: 'body is not valid JSON' };
      const msg = err instanceof Error ? err.message : String(err);
      last = /tolerance/i.test(msg)
        ? { reason: 'stale_timestamp', message: 'signature timestamp outside the 300 s tolerance' }
        : { reason: 'bad_signature', message: 'signature does not match the body' };
    }
  }
  return { ok: false, ...last };
}
