/** The demo's closing summary: what its customer's events and effects came to. */
import type { DemoHarness } from './harness';
import type { DemoSummary, Obj } from './types';

/** The summary of a run stopped before its story could go on (no subscription). */
export async function emptySummary(h: DemoHarness): Promise<DemoSummary> {
  const { ctx } = h;
  return {
    customerId: ctx.customerId,
    subscriptionId: ctx.subscriptionId,
    events: 0,
    deliveries: 0,
    applied: 0,
    duplicatesDropped: 0,
    bySource: { localstripe: 0, gateway: 0, fixture: 0 },
    dunning: ctx.dunningLine,
    email: ctx.emailLine,
    drift: ctx.driftLine,
    rows: [],
  };
}

/** The summary of a finished run, from the admin's delivery log of its customer. */
export async function buildSummary(h: DemoHarness): Promise<DemoSummary> {
  const { steps, ctx, admin } = h;
  const res = await admin('GET', `/admin/webhook-events?customer=${ctx.customerId}&limit=500`);
  const rows = (res.body.data ?? []) as Obj[];
  const bySource = { localstripe: 0, gateway: 0, fixture: 0 };
  for (const r of rows) {
    const id = String(r.eventId);
    if (id.startsWith('evt_fx')) bySource.fixture++;
    else if (id.startsWith('evt_gw')) bySource.gateway++;
    else bySource.localstripe++;
  }
  const deliveries = rows.reduce((s, r) => s + Number(r.attempts ?? 1), 0);
  const applied = rows.filter((r) => r.status === 'applied').length;
  const byStatus = rows.reduce<Record<string, number>>((acc, r) => ({ ...acc, [r.status]: (acc[r.status] ?? 0) + 1 }), {});
  const out: DemoSummary = {
    customerId: ctx.customerId,
    subscriptionId: ctx.subscriptionId,
    events: rows.length,
    deliveries,
    applied,
    duplicatesDropped: deliveries - rows.length,
    bySource,
    dunning: ctx.dunningLine,
    email: ctx.emailLine,
    drift: ctx.driftLine,
    rows: [],
  };
  out.rows = [
    ['customer', `${ctx.customerId} (subscription ${ctx.subscriptionId})`],
    ['events received', `${rows.length} (${bySource.localstripe} from localstripe, ${bySource.gateway} from the emulator gateway, ${bySource.fixture} signed fixtures), ${deliveries} deliveries`],
    ['events applied', `${applied}${Object.entries(byStatus).filter(([s]) => s !== 'applied').map(([s, n]) => `, ${n} ${s}`).join('')}`],
    ['duplicates dropped', `${out.duplicatesDropped} (redeliveries acknowledged, never re-applied)`],
    ['dunning', ctx.dunningLine],
    ['email', ctx.emailLine],
    ['drift', ctx.driftLine],
    ['steps', `${steps.filter((s) => s.ok).length}/6 passed${steps.some((s) => !s.ok) ? ` — failed: ${steps.filter((s) => !s.ok).map((s) => s.step).join(', ')}` : ''}`],
  ];
  return out;
}
