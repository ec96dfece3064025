/**
 * Screenshots of the Temporal UI from a real run (used for docs/): the customer workflow list filtered by
 * a search attribute, and one customer workflow's history. Needs Debian's chromium
 * (`bash scripts/screenshot.sh` installs it) and a running stack (`npm run dev` + `npm run demo`).
 *   npx tsx scripts/screenshot.ts <temporal-ui-url> <customerId>
 */
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ROOT } from '../support/services';

async function main(): Promise<void> {
  const [uiUrl = 'http://localhost:8233', customerId] = process.argv.slice(2);
  if (!customerId) throw new Error('usage: screenshot.ts <temporal-ui-url> <customerId>');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    const query = encodeURIComponent(`BillingWorkflowKind="customer" AND ExecutionStatus="Running"`);
    await page.goto(`${uiUrl}/namespaces/default/workflows?query=${query}`, { waitUntil: 'networkidle' });
    await page.waitForTimeout(1500);
    const list = path.join(ROOT, 'docs', 'temporal-ui-customer-workflows.png');
    await page.screenshot({ path: list, fullPage: false });
    process.stdout.write(`saved ${list}\n`);

    // A running workflow's page keeps polling, so it never becomes network-idle: wait for its event history.
    await page.goto(`${uiUrl}/namespaces/default/workflows/${encodeURIComponent(`customer:${customerId}`)}`, { waitUntil: 'load' });
    await page.getByText(/event history/i).first().waitFor({ timeout: 30_000 });
    // The Event History tab in its Compact view: one row per signal (stripeEvent, reconcile, dunning…) and activity.
    await page.setViewportSize({ width: 1440, height: 1100 });
    const click = async (name: RegExp) => {
      const target = page.getByRole('link', { name }).or(page.getByRole('tab', { name })).or(page.getByRole('button', { name })).first();
      if (await target.isVisible().catch(() => false)) await target.click();
      await page.waitForTimeout(1500);
    };
    await click(/^event history/i);
    await click(/^compact$/i);
    await page.waitForTimeout(1500);
    const history = path.join(ROOT, 'docs', 'temporal-ui-customer-history.png');
    await page.screenshot({ path: history, fullPage: true });
    process.stdout.write(`saved ${history}\n`);
  } finally {
    await browser.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
