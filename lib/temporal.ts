/** Temporal client connection for the API process. */
import { Client, Connection } from '@temporalio/client';

/** Connects a client; the connection retries lazily, so a Temporal outage surfaces per call. */
export async function createTemporalClient(opts: { address: string; namespace: string }): Promise<Client> {
  const connection = await Connection.connect({ address: opts.address, connectTimeout: '5 seconds' });
  return new Client({ connection, namespace: opts.namespace });
}
