import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { installQuietRuntime } from '../helpers/services';

/** Decodes a history saved with JSON.stringify(fetchHistory()). */
const historyFromJSON = (json: unknown) => temporal.api.history.v1.History.fromObject(json as Record<string, unknown>);

const DIR = path.resolve(__dirname, '..', 'fixtures', 'histories');
const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

describe('replaying recorded customer workflow histories against the current code', () => {
  it('has recorded histories to replay', () => {
    expect(files.length).toBeGreaterThanOrEqual(8);
    // Histories recorded before the plan-change-catalog patch must keep replaying.
    expect(files.filter((f) => f.startsWith('v1-'))).toHaveLength(2);
    // … and those recorded before the customer-local-batch-apply patch (regular activity per event).
    expect(files.filter((f) => f.startsWith('v2-'))).toHaveLength(3);
    // The current generation: events applied in batches by local activities, behind the patch marker.
    const current = files.filter((f) => f.startsWith('v3-'));
    expect(current).toHaveLength(3);
    for (const f of current) {
      const { history } = JSON.parse(readFileSync(path.join(DIR, f), 'utf8'));
      const markers = history.events.map((e: any) => e.markerRecordedEventAttributes?.markerName).filter(Boolean);
      expect(markers).toContain('core_local_activity');
    }
  });

  it.each(files.map((f) => [f]))('%s replays without nondeterminism', async (file) => {
    installQuietRuntime();
    const { workflowId, history } = JSON.parse(readFileSync(path.join(DIR, file), 'utf8'));
    expect(history.events.length).toBeGreaterThan(5);
    await expect(
      Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') }, replayName: file }, historyFromJSON(history), workflowId),
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
