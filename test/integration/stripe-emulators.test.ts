import { describe, expect, it, inject } from 'vitest';
import { createStripe } from '../../lib/stripe';

describe('the stripe SDK against local emulators', () => {
  it('creates a customer on stripe-mock (request validated against the OpenAPI spec)', async () => {
    const stripe = createStripe({ secretKey: 'sk_test_123', apiBase: inject('stripeMockUrl'), maxNetworkRetries: 0 });
    const customer = await stripe.customers.create({ email: 'mock@example.com', metadata: { source: 'test' } });
    expect(customer.id).toMatch(/^cus_/);
    expect(customer.object).toBe('customer');
    // stripe-mock rejects parameters the spec does not know: proof that requests are validated.
    await expect(
      stripe.customers.create({ not_a_real_param: 'x' } as never),
    ).rejects.toMatchObject({ type: 'StripeInvalidRequestError' });
  });

  it('creates and reads back a customer on localstripe (stateful)', async () => {
    const stripe = createStripe({ secretKey: 'sk_test_123', apiBase: inject('localstripeUrl'), maxNetworkRetries: 0 });
    const created = await stripe.customers.create({ email: 'local@example.com', name: 'Local Stripe' });
    expect(created.id).toMatch(/^cus_/);
    const read = await stripe.customers.retrieve(created.id);
    expect(read).toMatchObject({ id: created.id, email: 'local@example.com' });
  });
});
