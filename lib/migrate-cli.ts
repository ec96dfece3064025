/** `npm run db:migrate`: applies pending migrations to DATABASE_URL. */
import { createSql } from './db';
import { migrate, MigrationError } from './migrate';

async function main(): Promise<void> {
  const url = process.env.DATABASE_URL;
  if (!url) {
    process.stderr.write('Invalid configuration:\n  - DATABASE_URL is required\n');
    process.exit(1);
  }
  const sql = createSql(url, { max: 1, applicationName: 'billing-migrate' });
  try {
    const applied = await migrate(sql);
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'migrations: up to date\n');
  } finally {
    await sql.end({ timeout: 5 });
  }
}

main().catch((err: unknown) => {
  // Each file commits on its own: say which ones this run did apply before the failure.
  if (err instanceof MigrationError && err.applied.length) process.stdout.write(`applied: ${err.applied.join(', ')}\n`);
  process.stderr.write(`migration failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
