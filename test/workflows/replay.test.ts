import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { subscriptionVersionV1 } from '../../domain/plan-change';
import { installQuietRuntime } from '../helpers/services';

/** Decodes a history saved with JSON.stringify(fetchHistory()). */
const historyFromJSON = (json: unknown) => temporal.api.history.v1.History.fromObject(json as Record<string, unknown>);

/** The patch ids whose markers a history recorded. */
function patchesOf(history: { events: any[] }): string[] {
  return history.events
    .map((e) => e.markerRecordedEventAttributes)
    .filter((m) => m?.markerName === 'core_patch')
    .map((m) => JSON.parse(Buffer.from(m.details['patch-data'].payloads[0].data, 'base64').toString('utf8')).id as string);
}

const DIR = path.resolve(__dirname, '..', 'fixtures', 'histories');
const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

describe('replaying recorded customer, dunning, reconciliation, notice, app-webhook and retention workflow histories against the current code', () => {
  it('has recorded histories to replay', () => {
    expect(files.length).toBeGreaterThanOrEqual(8);
    // Histories recorded before the plan-change-catalog patch must keep replaying.
    expect(files.filter((f) => f.startsWith('v1-'))).toHaveLength(2);
    // … and those recorded before the customer-local-batch-apply patch (regular activity per event).
    expect(files.filter((f) => f.startsWith('v2-'))).toHaveLength(3);
    // … and those recorded before effects as data (events applied in batches by local activities).
    const v3 = files.filter((f) => f.startsWith('v3-'));
    expect(v3).toHaveLength(3);
    for (const f of v3) {
      const { history } = JSON.parse(readFileSync(path.join(DIR, f), 'utf8'));
      const markers = history.events.map((e: any) => e.markerRecordedEventAttributes?.markerName).filter(Boolean);
      expect(markers).toContain('core_local_activity');
      expect(patchesOf(history)).not.toContain('customer-effects-as-data');
    }
    // v4: effects as data, update writes in the main loop, dunning cycles that report to their customer
    // workflow (customer and dunning histories both); v5, the current code: dunning cycles that also read
    // the decline from Stripe, pay with the new card and re-read the invoice before the final action.
    // v6 adds the final-attempt notice of a cycle (patched dunning-final-attempt-notice), a notice
    // workflow that emails, and an app-webhook delivery that was retried after a 500.
    for (const generation of ['v4-', 'v5-', 'v6-']) {
      const current = files.filter(
        (f) =>
          f.startsWith(generation) && !f.includes('-reconciliation-') && !f.includes('-notice-sent') && !f.includes('-app-webhook-') && !f.includes('-retention-'),
      );
      expect(current).toHaveLength(generation === 'v6-' ? 7 : 6);
      const customer = current.filter((f) => f.includes('-customer-'));
      const dunning = current.filter((f) => f.includes('-dunning-') && !f.includes('-customer-'));
      expect(customer).toHaveLength(4);
      expect(dunning).toHaveLength(generation === 'v6-' ? 3 : 2);
      const finalAttempt = dunning.filter((f) => f.includes('-final-attempt-notice'));
      expect(finalAttempt).toHaveLength(generation === 'v6-' ? 1 : 0);
      for (const f of finalAttempt) expect(patchesOf(JSON.parse(readFileSync(path.join(DIR, f), 'utf8')).history)).toContain('dunning-final-attempt-notice');
      for (const f of customer) expect(patchesOf(JSON.parse(readFileSync(path.join(DIR, f), 'utf8')).history)).toContain('customer-effects-as-data');
      for (const f of dunning) {
        const patches = patchesOf(JSON.parse(readFileSync(path.join(DIR, f), 'utf8')).history);
        expect(patches).toContain('dunning-reports-to-parent');
        if (generation === 'v4-') expect(patches).not.toContain('dunning-decline-from-source');
        else expect(patches).toContain('dunning-decline-from-source');
      }
    }
    // The reconciliation workflow after patched('reconciliation-invoices'): a first run and the last run of its
    // continue-as-new chain.
    const reconciliation = files.filter((f) => f.startsWith('v5-reconciliation-') || f.startsWith('v6-reconciliation-'));
    expect(reconciliation).toHaveLength(4);
    // The workflows of issue 16: a notice sent by its own workflow, an app event delivered on the second attempt.
    expect(files.filter((f) => f.startsWith('v6-notice-') || f.startsWith('v6-app-webhook-'))).toEqual(['v6-app-webhook-retried.json', 'v6-notice-sent.json']);
    // The plan-change Update after patched('plan-change-commit-rules') (issue 19: preview and commit agree).
    expect(patchesOf(JSON.parse(readFileSync(path.join(DIR, 'v6-customer-plan-change-dunning.json'), 'utf8')).history)).toContain('plan-change-commit-rules');
    for (const f of files.filter((f) => /^v[1-5]-customer-/.test(f))) {
      expect(patchesOf(JSON.parse(readFileSync(path.join(DIR, f), 'utf8')).history), f).not.toContain('plan-change-commit-rules');
    }
    // Retention (issue 17): a first run and the last run of its continue-as-new chain.
    expect(files.filter((f) => f.startsWith('v6-retention-'))).toEqual(['v6-retention-last-run.json', 'v6-retention-run1.json']);
    for (const f of reconciliation) expect(patchesOf(JSON.parse(readFileSync(path.join(DIR, f), 'utf8')).history)).toContain('reconciliation-invoices');
    // v7 (issue 19, recorded with --new-only): a seat decrease scheduled, withdrawn, then an increase; a
    // paused trial resumed by the resume_subscription effect once the customer set a default card.
    expect(files.filter((f) => f.startsWith('v7-'))).toEqual(['v7-customer-seats.json', 'v7-customer-trial-resumed.json']);
    const activitiesOf = (f: string) =>
      JSON.parse(readFileSync(path.join(DIR, f), 'utf8')).history.events.map((e: any) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    expect(activitiesOf('v7-customer-seats.json')).toEqual(expect.arrayContaining(['scheduleSubscriptionQuantity', 'releaseSubscriptionSchedule', 'updateSubscriptionQuantity']));
    expect(activitiesOf('v7-customer-trial-resumed.json')).toContain('resumePausedSubscription');
  });

  it.each(files.map((f) => [f]))('%s replays without nondeterminism', async (file) => {
    installQuietRuntime();
    const { workflowId, history } = JSON.parse(readFileSync(path.join(DIR, file), 'utf8'));
    expect(history.events.length).toBeGreaterThan(5);
    await expect(
      Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') }, replayName: file }, historyFromJSON(history), workflowId),
    ).resolves.toBeUndefined();
  });

  it('replays a plan change committed with an sv1 subscription version (a preview from before seats were versioned)', async () => {
    installQuietRuntime();
    const file = 'v6-customer-plan-change-dunning.json';
    const { workflowId, history } = JSON.parse(readFileSync(path.join(DIR, file), 'utf8'));
    const tampered = structuredClone(history);
    const at = tampered.events.findIndex((e: any) => e.workflowExecutionUpdateAcceptedEventAttributes);
    const decode = (p: { data: string }) => JSON.parse(Buffer.from(p.data, 'base64').toString('utf8'));
    // The local subscription the workflow held when the update arrived: its last apply result before it.
    const applied = tampered.events
      .slice(0, at)
      .flatMap((e: any) => e.markerRecordedEventAttributes?.details?.result?.payloads ?? [])
      .map(decode)
      .flat()
      .filter((r: any) => r?.subscription);
    const sub = applied[applied.length - 1].subscription;
    const payload = tampered.events[at].workflowExecutionUpdateAcceptedEventAttributes.acceptedRequest.input.args.payloads[0];
    // The commit carried the token its preview issued then; the handler's re-check must compare it as then.
    payload.data = Buffer.from(JSON.stringify({ ...decode(payload), subscriptionVersion: subscriptionVersionV1(sub) })).toString('base64');
    expect(patchesOf(tampered)).not.toContain('subscription-version-quantity');
    await expect(
      Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') }, replayName: `${file} (sv1 token)` }, historyFromJSON(tampered), workflowId),
    ).resolves.toBeUndefined();
  });

  it('detects a history that does not match the code', async () => {
    installQuietRuntime();
    const { workflowId, history } = JSON.parse(readFileSync(path.join(DIR, files[0]!), 'utf8'));
    // Swap the first scheduled activity's type: the code would schedule a different command.
    const tampered = structuredClone(history);
    const ev = tampered.events.find((e: any) => e.activityTaskScheduledEventAttributes);
    ev.activityTaskScheduledEventAttributes.activityType.name = 'someOtherActivity';
    await expect(
      Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') }, replayName: 'tampered' }, historyFromJSON(tampered), workflowId),
    ).rejects.toThrow(/[Nn]ondetermin/);
  });
});
