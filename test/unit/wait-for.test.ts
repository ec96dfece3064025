import { describe, expect, it } from 'vitest';
import { isTransientPostgresError, waitFor } from '../../lib/wait-for';

describe('waitFor retryIf', () => {
  it('waits out errors retryIf accepts and rethrows the others at once', async () => {
    let calls = 0;
    const value = await waitFor('thing', async () => {
      calls += 1;
      if (calls < 3) throw Object.assign(new Error('the database system is shutting down'), { code: '57P03' });
      return 'ok';
    }, { initialDelayMs: 1, maxDelayMs: 2, retryIf: isTransientPostgresError });
    expect([value, calls]).toEqual(['ok', 3]);

    calls = 0;
    const bad = Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' });
    await expect(waitFor('thing', async () => {
      calls += 1;
      throw bad;
    }, { initialDelayMs: 1, retryIf: isTransientPostgresError })).rejects.toBe(bad);
    expect(calls).toBe(1);
  });
});

describe('isTransientPostgresError', () => {
  it.each([['57P01'], ['57P03'], ['08006'], ['53300'], ['ECONNREFUSED'], ['CONNECTION_CLOSED'], ['CONNECT_TIMEOUT']])('%s is the server not being there', (code) => {
    expect(isTransientPostgresError(Object.assign(new Error(code), { code }))).toBe(true);
  });
  it.each([['23505'], ['22003'], ['42P01'], ['42601']])('%s is about the statement', (code) => {
    expect(isTransientPostgresError(Object.assign(new Error(code), { code }))).toBe(false);
  });
});
