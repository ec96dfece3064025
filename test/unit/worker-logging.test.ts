import { describe, expect, it } from 'vitest';
import { createLogger } from '../../lib/logger';
import { pinoToTemporalLogger } from '../../worker/logging';

function capture() {
  const lines: Record<string, any>[] = [];
  const logger = createLogger({ level: 'debug', name: 'worker', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  return { lines, temporal: pinoToTemporalLogger(logger) };
}

describe('pinoToTemporalLogger', () => {
  it('keeps the SDK metadata as fields and redacts the activity task token', () => {
    const { lines, temporal } = capture();
    temporal.info('event applied', { workflowId: 'customer:cus_1', activityType: 'applyBillingEvent', taskToken: 'CiQ0ZjM…', eventId: 'evt_1', customerId: 'cus_1' });
    expect(lines[0]).toMatchObject({
      level: 'info',
      service: 'worker',
      component: 'temporal',
      workflowId: 'customer:cus_1',
      eventId: 'evt_1',
      customerId: 'cus_1',
      taskToken: '[redacted]',
      msg: 'event applied',
    });
  });

  it('keeps the message of an error (not enumerable) and drops driver fields such as query parameters', () => {
    const { lines, temporal } = capture();
    const err = Object.assign(new Error('relation "applied_events" does not exist'), { code: '42P01', parameters: ['jane@example.com'] });
    temporal.warn('Activity failed', { error: err, workflowId: 'customer:cus_1' });
    expect(lines[0]!.level).toBe('warn');
    expect(lines[0]!.error).toMatchObject({ name: 'Error', message: 'relation "applied_events" does not exist', code: '42P01' });
    expect(JSON.stringify(lines[0])).not.toContain('jane@example.com');
  });
});
