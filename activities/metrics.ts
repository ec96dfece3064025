/**
 * Metrics of the worker process: counters the activities add to through Temporal's metric meter, exported
 * with the SDK's own series on WORKER_METRICS_ADDRESS (no-op when unset). Every name and help text lives here.
 */
import { Context } from '@temporalio/activity';

const counter = <L extends string = never>(name: string, description: string, labels: readonly L[] = []) => ({ name, description, labels });

/** Every counter the worker exports, by the key activities count with. */
export const WORKER_COUNTERS = {
  eventsQuarantined: counter('billing_events_quarantined', 'Events set aside by a data error in the apply path'),
  refetchRefused: counter('billing_refetch_refused', 'Objects re-fetched from Stripe refused because they belong to another customer'),
  dunningReportsRejected: counter('billing_dunning_reports_rejected', 'Dunning reports the database refused (data errors)'),
  retentionRows: counter('billing_retention_rows', 'Rows deleted (or payloads purged) by retention', ['table', 'action'] as const),
};

export type WorkerCounter = keyof typeof WORKER_COUNTERS;
type LabelsOf<K extends WorkerCounter> = Record<(typeof WORKER_COUNTERS)[K]['labels'][number], string>;

/** Adds to one of the worker's counters; a no-op outside an activity (a script or a direct test call). */
export function countInActivity<K extends WorkerCounter>(key: K, value = 1, ...labels: keyof LabelsOf<K> extends never ? [] : [LabelsOf<K>]): void {
  const { name, description } = WORKER_COUNTERS[key];
  try {
    Context.current().metricMeter.createCounter(name, '1', description).add(value, labels[0] ?? {});
  } catch {
    // Called outside an activity: nothing to count into.
  }
}
