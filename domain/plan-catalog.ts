/** The plan catalog: stable plan ids mapped to Stripe prices; `rank` orders upgrades and downgrades. */
import { z } from 'zod';

export const PLAN_INTERVALS = ['day', 'week', 'month', 'year'] as const;

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
