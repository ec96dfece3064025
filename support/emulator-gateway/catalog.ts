/** The plan catalog seeded into localstripe (as Plans: it has no Prices). */

/** A catalog plan, as config/plans.json or GET /plans describe it. */
export interface EmulatorCatalogPlan {
  id: string;
  stripePriceId: string;
  name: string;
  amount: number;
  currency: string;
  interval: string;
}

/**
 * Creates each catalog plan in localstripe as a Product + a Plan whose id is the catalog's
 * stripePriceId (localstripe has Plans, not Prices; the gateway reads `price` as `plan`). Idempotent:
 * a plan already there is left as it is (localstripe answers 409 to a second create of an id).
 */
export async function seedLocalstripeCatalog(opts: {
  localstripeUrl: string;
  secretKey: string;
  plans: EmulatorCatalogPlan[];
}): Promise<{ created: string[]; present: string[] }> {
  const call = async (method: string, path: string, params?: Record<string, string>) => {
    const res = await fetch(`${opts.localstripeUrl}${path}`, {
      method,
      headers: { Authorization: `Bearer ${opts.secretKey}`, ...(params ? { 'Content-Type': 'application/x-www-form-urlencoded' } : {}) },
      body: params ? new URLSearchParams(params).toString() : undefined,
      signal: AbortSignal.timeout(15_000),
    });
    return { status: res.status, text: await res.text() };
  };
  const result = { created: [] as string[], present: [] as string[] };
  for (const p of opts.plans) {
    const planPath = `/v1/plans/${encodeURIComponent(p.stripePriceId)}`;
    if ((await call('GET', planPath)).status === 200) {
      result.present.push(p.stripePriceId);
      continue;
    }
    const product = `prod_${p.id.replace(/[^A-Za-z0-9_]/g, '_')}`;
    const prod = await call('POST', '/v1/products', { id: product, name: p.name, type: 'service' });
    if (prod.status !== 200 && prod.status !== 409) throw new Error(`localstripe: creating product ${product} answered ${prod.status} ${prod.text.slice(0, 200)}`);
    const plan = await call('POST', '/v1/plans', {
      id: p.stripePriceId,
      product,
      amount: String(p.amount),
      currency: p.currency,
      interval: p.interval,
      nickname: p.name,
      'metadata[plan_id]': p.id,
    });
    if (plan.status === 409) result.present.push(p.stripePriceId);
    else if (plan.status === 200) result.created.push(p.stripePriceId);
    else throw new Error(`localstripe: creating plan ${p.stripePriceId} answered ${plan.status} ${plan.text.slice(0, 200)}`);
  }
  return result;
}
