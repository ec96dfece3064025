import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, webhookSecrets } from '../../lib/config';

const base = {
  DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/billing',
  STRIPE_SECRET_KEY: 'sk_test_abc',
  STRIPE_WEBHOOK_SECRET: 'whsec_abc',
};

function errorOf(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected loadConfig to throw');
}

describe('loadConfig', () => {
  it('applies defaults for optional variables', () => {
    const c = loadConfig(base);
    expect(c.PORT).toBe(3000);
    expect(c.TEMPORAL_ADDRESS).toBe('127.0.0.1:7233');
    expect(c.TEMPORAL_NAMESPACE).toBe('default');
    expect(c.TEMPORAL_TASK_QUEUE).toBe('billing');
    expect(c.STRIPE_API_BASE).toBeUndefined();
    expect(c.ADMIN_TOKEN).toBeUndefined();
  });

  it('treats a dispatched delivery as stuck after 5 minutes unless STUCK_DISPATCH_THRESHOLD_MS says otherwise', () => {
    expect(loadConfig(base).STUCK_DISPATCH_THRESHOLD_MS).toBe(300_000);
    expect(loadConfig({ ...base, STUCK_DISPATCH_THRESHOLD_MS: '60000' }).STUCK_DISPATCH_THRESHOLD_MS).toBe(60_000);
    expect(errorOf({ ...base, STUCK_DISPATCH_THRESHOLD_MS: '10' }).variables).toEqual(['STUCK_DISPATCH_THRESHOLD_MS']);
  });

  it('rejects a missing secret with the variable name in the message', () => {
    const err = errorOf({ ...base, STRIPE_SECRET_KEY: undefined });
    expect(err.variables).toEqual(['STRIPE_SECRET_KEY']);
    expect(err.message).toContain('STRIPE_SECRET_KEY');
  });

  it('names every missing variable at once', () => {
    const err = errorOf({});
    expect(err.variables.sort()).toEqual(['DATABASE_URL', 'STRIPE_SECRET_KEY', 'STRIPE_WEBHOOK_SECRET']);
  });

  it('rejects invalid values with the variable name', () => {
    expect(errorOf({ ...base, PORT: 'eighty' }).message).toContain('PORT');
    expect(errorOf({ ...base, DATABASE_URL: 'mysql://x' }).message).toContain('DATABASE_URL');
    expect(errorOf({ ...base, STRIPE_API_BASE: 'not a url' }).message).toContain('STRIPE_API_BASE');
    expect(errorOf({ ...base, STRIPE_WEBHOOK_SECRET: 'nope' }).message).toContain('STRIPE_WEBHOOK_SECRET');
    expect(errorOf({ ...base, ADMIN_TOKEN: 'short' }).message).toContain('ADMIN_TOKEN');
  });

  it('treats an empty optional variable as unset', () => {
    expect(loadConfig({ ...base, STRIPE_API_BASE: '' }).STRIPE_API_BASE).toBeUndefined();
  });

  it('refuses production without an admin token', () => {
    const err = errorOf({ ...base, NODE_ENV: 'production' });
    expect(err.variables).toContain('ADMIN_TOKEN');
    expect(loadConfig({ ...base, NODE_ENV: 'production', ADMIN_TOKEN: 'x'.repeat(32) }).ADMIN_TOKEN).toHaveLength(32);
  });

  it('splits rotated webhook secrets', () => {
    expect(webhookSecrets(loadConfig({ ...base, STRIPE_WEBHOOK_SECRET: 'whsec_new, whsec_old' }))).toEqual(['whsec_new', 'whsec_old']);
  });
});
