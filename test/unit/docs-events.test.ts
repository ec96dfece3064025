/**
 * docs/stripe-setup.md lists the event types to enable on the Stripe webhook endpoint and the API version
 * to pin it to: both must be what the code handles and pins, so the setup guide cannot drift.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HANDLED_EVENT_TYPES } from '../../domain/events';
import { STRIPE_API_VERSION } from '../../lib/stripe';

const doc = readFileSync(path.resolve(__dirname, '../../docs/stripe-setup.md'), 'utf8');

/** The lines of the fenced list between the handled-event-types markers. */
function documentedEventTypes(): string[] {
  const section = /<!-- handled-event-types:start -->\n```text\n([\s\S]*?)```\n<!-- handled-event-types:end -->/.exec(doc);
  if (!section) throw new Error('docs/stripe-setup.md has no handled-event-types section');
  return section[1]!.split('\n').map((l) => l.trim()).filter(Boolean);
}

describe('docs/stripe-setup.md', () => {
  it('lists exactly the Stripe event types the engine handles, each once', () => {
    const documented = documentedEventTypes();
    expect(new Set(documented).size, 'a type is listed twice').toBe(documented.length);
    expect([...documented].sort()).toEqual([...HANDLED_EVENT_TYPES].sort());
  });

  it('pins the webhook endpoint to the API version the client sends', () => {
    const versions = new Set([...doc.matchAll(/\b20\d\d-\d\d-\d\d\.[a-z]+\b/g)].map((m) => m[0]));
    expect([...versions]).toEqual([STRIPE_API_VERSION]);
  });
});
