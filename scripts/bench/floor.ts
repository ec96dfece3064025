/**
 * The benchmark's floor: the least a correct webhook endpoint must do. Same framework (Hono on
 * @hono/node-server), same signature check (stripe SDK, raw body), same durable Postgres, one
 * INSERT … ON CONFLICT per delivery, then 200. No normalization, no Temporal, no state machine.
 * `ours / floor` in the bench output is what the durable hand-over to Temporal costs.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import Stripe from 'stripe';
import { createSql, type Sql } from '../../lib/db';

/** The floor's table (created by the bench in its own database of the same cluster). */
export async function createFloorSchema(sql: Sql): Promise<void> {
  await sql`
    CREATE TABLE IF NOT EXISTS floor_events (
      event_id     text PRIMARY KEY,
      type         text NOT NULL,
      payload      jsonb NOT NULL,
      attempts     integer NOT NULL DEFAULT 1,
      received_at  timestamptz NOT NULL DEFAULT now()
    )`;
}

function main(): void {
  const port = Number(process.env.PORT ?? 3999);
  const secret = process.env.STRIPE_WEBHOOK_SECRET ?? '';
  const sql = createSql(process.env.DATABASE_URL ?? '', { max: Number(process.env.DATABASE_POOL_MAX ?? 10), applicationName: 'bench-floor' });
  const app = new Hono();
  app.post('/webhooks/stripe', async (c) => {
    const raw = await c.req.text();
    let event: Stripe.Event;
    try {
      event = await Stripe.webhooks.constructEventAsync(raw, c.req.header('stripe-signature') ?? '', secret, 300);
    } catch {
      return c.json({ error: 'bad_signature' }, 400);
    }
    try {
      await sql`
        INSERT INTO floor_events (event_id, type, payload) VALUES (${event.id}, ${event.type}, ${sql.json(event as never)})
        ON CONFLICT (event_id) DO UPDATE SET attempts = floor_events.attempts + 1`;
    } catch {
      return c.json({ error: 'unavailable' }, 503);
    }
    return c.json({ received: true });
  });
  const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
  const stop = () => server.close(() => void sql.end({ timeout: 2 }).finally(() => process.exit(0)));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) main();
