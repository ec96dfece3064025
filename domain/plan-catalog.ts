/** The plan catalog: stable plan ids mapped to Stripe prices; `rank` orders upgrades and downgrades. */
import { z } from 'zod';

export const PLAN_INTERVALS = ['day', 'week', 'month', 'year'] as const;

/** A feature key: what the app asks about (`sso`, `api_calls`); Stripe lookup keys use the same namespace. */
export const FeatureKeySchema = z.string().regex(/^[a-z0-9][a-z0-9_.:-]{0,79}$/, 'feature keys are lowercase letters, digits, _ . : or -, at most 80');

/**
 * One feature of a plan: a flag (`true`/`false`), a limit (a non-negative integer), unlimited (`null`),
 * or a per-seat limit (`{ "perSeat": n }`: n × the subscription's quantity).
 */
export const PlanFeatureValueSchema = z.union([
  z.boolean(),
  z.number().int().min(0),
  z.null(),
  z.strictObject({ perSeat: z.number().int().min(0) }),
]);
export type PlanFeatureValue = z.infer<typeof PlanFeatureValueSchema>;

/** A plan's features by key. */
export const PlanFeaturesSchema = z.record(FeatureKeySchema, PlanFeatureValueSchema);
export type PlanFeatures = z.infer<typeof PlanFeaturesSchema>;

/** One catalog entry as configured (PLANS_JSON or config/plans.json). */
export const PlanSchema = z.object({
  id: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'plan id must be lowercase letters, digits, - or _'),
  stripePriceId: z.string().min(1).max(255),
  name: z.string().min(1).max(200),
  /** Minor units per interval. */
  amount: z.number().int().min(0),
  currency: z.string().regex(/^[a-z]{3}$/, 'currency must be a lowercase ISO code such as usd'),
  interval: z.enum(PLAN_INTERVALS),
  rank: z.number().int(),
  active: z.boolean().default(true),
  /** What the plan entitles to (GET /customers/{id}/entitlements); absent: none. */
  features: PlanFeaturesSchema.optional(),
});
export type Plan = z.infer<typeof PlanSchema>;

/** A whole catalog: plan ids and Stripe price ids are unique. */
export const PlanCatalogSchema = z
  .array(PlanSchema)
  .min(1, 'the plan catalog must list at least one plan')
  .superRefine((plans, ctx) => {
    for (const key of ['id', 'stripePriceId'] as const) {
      const seen = new Set<string>();
      plans.forEach((p, i) => {
        if (seen.has(p[key])) ctx.addIssue({ code: 'custom', path: [i, key], message: `duplicate ${key} ${p[key]}` });
        seen.add(p[key]);
      });
    }
  });
