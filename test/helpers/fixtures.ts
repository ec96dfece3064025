/** Fixture envelopes re-keyed per test so ids never collide across tests or workflows. */
import { randomBytes } from 'node:crypto';
import { loadFixtureText } from '../fixtures';

/** A fixture with every `…_Fixture…` id rewritten to a unique token and a fresh event id. */
export function uniqueFixture(type: string, opts: { legacy?: boolean; token?: string } = {}): { envelope: any; token: string; customerId: string } {
  const token = opts.token ?? `T${randomBytes(5).toString('hex')}`;
  const text = loadFixtureText(type, opts.legacy ? { legacy: true } : {}).replace(/_Fixture/g, `_${token}`).replace(/Fixture/g, token);
  const envelope = JSON.parse(text);
  envelope.id = `evt_${token}_${type.replace(/\./g, '_')}_${randomBytes(3).toString('hex')}`;
  return { envelope, token, customerId: `cus_${token}Customer01` };
}
