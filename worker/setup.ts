/** Idempotent namespace setup the worker performs at startup: custom search attributes. */
import type { NativeConnection } from '@temporalio/worker';
import type { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { CUSTOM_SEARCH_ATTRIBUTES } from '../workflows/contracts';

const IndexedValueType = temporal.api.enums.v1.IndexedValueType;

/** Registers missing custom search attributes; existing ones are left alone. */
export async function ensureSearchAttributes(connection: NativeConnection | Connection, namespace: string): Promise<string[]> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const have = new Set(Object.keys(existing.customAttributes ?? {}));
  const missing = Object.entries(CUSTOM_SEARCH_ATTRIBUTES).filter(([name]) => !have.has(name));
  if (missing.length === 0) return [];
  const searchAttributes: Record<string, number> = {};
  for (const [name] of missing) searchAttributes[name] = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;
  try {
    await connection.operatorService.addSearchAttributes({ namespace, searchAttributes });
  } catch (err) {
    // Another worker registered them concurrently.
    if (!/already exists/i.test(err instanceof Error ? err.message : String(err))) throw err;
  }
  return missing.map(([name]) => name);
}
