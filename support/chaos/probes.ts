/** What the chaos run installs in and reads from the stack: the audit triggers, a Postgres restart, the services' logs. */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { sleep } from '../billing-stack/stack';
import type { Sql } from '../../lib/db';
import { waitForPort, type PostgresHandle } from '../services';

/**
 * Chaos-only bookkeeping in the run's own database: which session (a replica's application_name) claimed
 * each inbox row for dispatch, and which applied each event. Triggers, so they commit or roll back with
 * the claim or apply itself: a SIGKILLed replica's committed claims are on record, nothing else is.
 */
export async function installAudit(sql: Sql): Promise<void> {
  await sql.unsafe(`
    CREATE TABLE chaos_claims (id bigserial PRIMARY KEY, event_id text NOT NULL, replica text NOT NULL);
    CREATE INDEX chaos_claims_event_idx ON chaos_claims (event_id, id);
    CREATE TABLE chaos_applies (id bigserial PRIMARY KEY, event_id text NOT NULL, replica text NOT NULL);
    CREATE FUNCTION chaos_note_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO chaos_claims (event_id, replica) VALUES (NEW.event_id, current_setting('application_name'));
      RETURN NULL;
    END $$;
    -- A claim is the one statement that counts an attempt (api/inbox-queries.ts).
    CREATE TRIGGER chaos_claims AFTER UPDATE OF dispatch_attempts ON webhook_events
      FOR EACH ROW WHEN (NEW.dispatch_attempts > OLD.dispatch_attempts) EXECUTE FUNCTION chaos_note_claim();
    CREATE FUNCTION chaos_note_apply() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO chaos_applies (event_id, replica) VALUES (NEW.event_id, current_setting('application_name'));
      RETURN NULL;
    END $$;
    CREATE TRIGGER chaos_applies AFTER INSERT ON applied_events FOR EACH ROW EXECUTE FUNCTION chaos_note_apply();
  `);
}

/**
 * Stops PostgreSQL (fast shutdown, like the handle's restart), keeps it down for downMs and starts it
 * again, without blocking this process: the handle runs pg_ctl synchronously, which would also stop the
 * sender, so no delivery would ever meet the outage.
 */
export async function restartPostgres(pg: PostgresHandle, downMs: number): Promise<void> {
  // The server's own command line names its binaries; PostgreSQL refuses root, so run pg_ctl as postgres then.
  const postgresBin = readFileSync(path.join(pg.dataDir, 'postmaster.opts'), 'utf8').trim().split(/\s+/)[0]!.replace(/"/g, '');
  const pgCtl = path.join(path.dirname(postgresBin), 'pg_ctl');
  const asRoot = process.getuid?.() === 0;
  const run = (args: string[]) => promisify(execFile)(asRoot ? 'runuser' : pgCtl, asRoot ? ['-u', 'postgres', '--', pgCtl, ...args] : args);
  await run(['-D', pg.dataDir, '-m', 'fast', '-w', 'stop']);
  await sleep(downMs);
  await run(['-D', pg.dataDir, '-o', `-p ${pg.port}`, '-l', path.join(pg.dataDir, 'server.log'), '-w', '-t', '60', 'start']);
  await waitForPort(pg.port, '127.0.0.1', 30_000, 'PostgreSQL');
}

/** Event ids the API logged as dispatched ('events dispatched', pino JSON) at or after `since`. */
export function readApiDispatchedSince(file: string, since: number): string[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"events dispatched"')) continue;
    try {
      const j = JSON.parse(line) as { time?: string; eventIds?: string[] };
      if (j.time && Date.parse(j.time) >= since) out.push(...(j.eventIds ?? []));
    } catch {
      /* a line cut by the SIGKILL */
    }
  }
  return out;
}

/** The worker's fault-injection log lines (pino JSON; other lines are skipped). */
export function readWorkerFaultLines(file: string): { msg: string; eventIds: string[] }[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: { msg: string; eventIds: string[] }[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"fault injected')) continue;
    try {
      const j = JSON.parse(line) as { msg?: string; eventIds?: string[] };
      if (j.msg) out.push({ msg: j.msg, eventIds: j.eventIds ?? [] });
    } catch {
      /* a line cut by the SIGKILL */
    }
  }
  return out;
}

