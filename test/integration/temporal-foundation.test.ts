import { describe, expect, it } from 'vitest';
import { customerWorkflowId } from '../../domain/ids';
import { stateQuery, stripeEventSignal } from '../../workflows/contracts';
import { BillingWorkflowKindKey, StripeCustomerIdKey } from '../../workflows/contracts';
import { normalizeStripeEvent } from '../../domain/events';
import { loadFixture } from '../fixtures';
import { useTestStack } from '../helpers/harness';
import { eventually, uniqueId } from '../helpers/services';

describe('a worker on the Temporal dev server', () => {
  const stack = useTestStack({ app: false });
  const { config } = stack;

  it('signals-with-start a customer workflow, answers its query and is listed by search attribute', async () => {
    const customerId = `cus_${uniqueId()}`;
    const envelope = loadFixture('customer.created');
    envelope.id = `evt_${uniqueId()}`;
    envelope.data.object.id = customerId;
    const normalized = normalizeStripeEvent(envelope);
    if (normalized.outcome !== 'handled') throw new Error(`fixture did not normalize: ${JSON.stringify(normalized)}`);

    const handle = await stack.client.workflow.signalWithStart('customerWorkflow', {
      workflowId: customerWorkflowId(customerId),
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      args: [{ customerId }],
      signal: stripeEventSignal,
      signalArgs: [normalized.event],
      typedSearchAttributes: [
        { key: StripeCustomerIdKey, value: customerId },
        { key: BillingWorkflowKindKey, value: 'customer' },
      ],
    });
    const state = await eventually(async () => {
      const s = await handle.query(stateQuery);
      return s.applied === 1 ? s : null;
    }, 20_000, 'the event to be applied');
    expect(state).toMatchObject({ customerId, applied: 1, lastEventId: envelope.id });

    const rows = await stack.sql`SELECT email FROM customers WHERE id = ${customerId}`;
    expect(rows[0]?.email).toBe(envelope.data.object.email);

    const listed = await eventually(async () => {
      const found: string[] = [];
      for await (const wf of stack.client.workflow.list({ query: `StripeCustomerId = '${customerId}' AND BillingWorkflowKind = 'customer'` })) {
        found.push(wf.workflowId);
      }
      return found.length ? found : null;
    }, 20_000, 'visibility to list the workflow');
    expect(listed).toEqual([customerWorkflowId(customerId)]);
  });
});
