/**
 * ops/: the Prometheus alert rules, their scrape config and the Grafana dashboard refer only to series
 * that exist (the API's registry, the Temporal SDK's worker metrics, Prometheus' own `up`, recording
 * rules defined beside them), every alert is labelled and documented, and promtool — when installed
 * (npm run tools:promtool) — accepts the files and passes the rule unit tests in ops/alerts.test.yml.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createMetrics } from '../../api/metrics';

const ROOT = path.resolve(__dirname, '../..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const PROMTOOL = path.join(ROOT, '.tools', 'bin', 'promtool');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const alertsFile = parse(read('ops/alerts.yml')) as { groups: { name: string; rules: Rule[] }[] };
const rules = alertsFile.groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert);
const records = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));
const prometheusConfig = parse(read('ops/prometheus.yml'));
const compose = parse(read('docker-compose.yml'), { merge: true });
const dashboard = JSON.parse(read('ops/grafana-dashboard.json'));

/** Series names the API really registers (prom-client, with its default process/nodejs metrics). */
async function apiSeries(): Promise<Set<string>> {
  const text = await createMetrics({ defaultMetrics: true }).registry.metrics();
  const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => ({ name: m[1]!, type: m[2]! }));
  return new Set(types.flatMap((m) => (m.type === 'histogram' ? ['_bucket', '_sum', '_count'].map((s) => m.name + s) : [m.name])));
}

/** Metric names the worker's Temporal SDK (Core) defines, read from the sources it ships; prefixed temporal_. */
function temporalSeries(): Set<string> {
  const base = path.join(ROOT, 'node_modules/@temporalio/core-bridge/sdk-core/crates');
  const files = ['sdk-core/src/telemetry/metrics.rs', 'common/src/telemetry/metrics.rs', 'client/src/metrics.rs'];
  const names = new Set<string>();
  for (const file of files) {
    for (const m of readFileSync(path.join(base, file), 'utf8').matchAll(/"([a-z][a-z0-9_]*)"/g)) {
      for (const suffix of ['', '_bucket', '_sum', '_count']) names.add(`temporal_${m[1]}${suffix}`);
    }
  }
  return names;
}

// Keywords, and aggregation operators (they may stand before a `by (…)` clause instead of a parenthesis).
const PROMQL_WORDS = new Set(
  'by without and or unless offset bool on ignoring group_left group_right inf nan sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio'.split(' '),
);

/** The metric names a PromQL expression reads (strings, label matchers, groupings and ranges removed). */
function seriesIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\boffset\s+\w+/g, '');
  return [...bare.matchAll(/(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()/g)]
    .map((m) => m[1]!)
    .filter((name) => !PROMQL_WORDS.has(name.toLowerCase()) && !/^\d/.test(name));
}

/** GitHub's anchor for a Markdown heading. */
const slug = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\w\s-]/g, '')
    .replace(/\s/g, '-');

describe('ops/alerts.yml', () => {
  it('covers inbox age, stuck, quarantined, drift, dunning, given-up deliveries and checkout success', () => {
    const byExpr = (pattern: RegExp) => alerts.filter((a) => pattern.test(a.expr) || [...records].some((r) => a.expr.includes(r) && pattern.test(rules.find((x) => x.record === r)!.expr)));
    expect(byExpr(/billing_webhook_oldest_undispatched_age_seconds/).length).toBeGreaterThanOrEqual(1);
    expect(byExpr(/billing_inbox_depth/).length).toBeGreaterThanOrEqual(1);
    expect(byExpr(/billing_webhook_events_stuck\b/).length).toBeGreaterThanOrEqual(1);
    expect(byExpr(/billing_webhook_events_quarantined/).length).toBeGreaterThanOrEqual(1);
    expect(byExpr(/billing_reconciliation_drift_found/).length).toBeGreaterThanOrEqual(1);
    expect(byExpr(/billing_dunning_cycles\{state="exhausted"\}/).length).toBeGreaterThanOrEqual(1);
    expect(byExpr(/billing_notices\{status="given_up"\}/).length).toBe(1);
    expect(byExpr(/billing_app_webhooks\{status="given_up"\}/).length).toBe(1);
    const checkout = alerts.find((a) => a.alert === 'BillingCheckoutSuccessRateLow');
    expect(checkout?.expr).toMatch(/max\(billing_checkout_success_rate\) < 0\.98/);
  });

  it('reads only series that exist', async () => {
    const known = new Set([...(await apiSeries()), ...temporalSeries(), ...records, 'up']);
    for (const rule of rules) {
      const names = seriesIn(rule.expr);
      expect(names.length, `${rule.alert ?? rule.record} reads no series`).toBeGreaterThan(0);
      for (const name of names) expect(known.has(name), `${rule.alert ?? rule.record}: ${name} is not a known series`).toBe(true);
    }
  });

  it('gives every alert a unique name, a severity, a summary, a description and a runbook section that exists', () => {
    const anchors = new Set(read('docs/operations.md').split('\n').flatMap((l) => (/^#{1,4}\s/.test(l) ? [slug(l.replace(/^#+/, ''))] : [])));
    expect(new Set(alerts.map((a) => a.alert)).size).toBe(alerts.length);
    for (const a of alerts) {
      expect(['critical', 'warning'], a.alert).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      expect(a.annotations?.description, a.alert).toBeTruthy();
      const runbook = a.annotations?.runbook ?? '';
      expect(runbook, a.alert).toMatch(/^docs\/operations\.md#/);
      expect(anchors, `${a.alert}: ${runbook}`).toContain(runbook.split('#')[1]);
    }
  });

  it('takes max, never sum, of the Postgres-derived gauges every replica reports alike', () => {
    for (const rule of rules) {
      expect(rule.expr, rule.alert ?? rule.record).not.toMatch(/sum\s*\(\s*billing_(inbox_depth|webhook_events_|webhook_oldest|reconciliation_|dunning_|checkout_success|notices|app_webhooks)/);
    }
  });
});

describe('ops/prometheus.yml', () => {
  it('loads the alert rules and scrapes both API replicas and every worker replica of docker-compose.yml', () => {
    expect(prometheusConfig.rule_files).toEqual(['alerts.yml']);
    const jobs = Object.fromEntries((prometheusConfig.scrape_configs as { job_name: string }[]).map((j) => [j.job_name, j as any]));
    const apiServices = Object.keys(compose.services).filter((s) => compose.services[s].command?.join(' ') === 'node dist/api/server.js');
    expect(apiServices.length).toBe(2);
    expect(jobs['billing-api'].static_configs[0].targets.sort()).toEqual(apiServices.map((s) => `${s}:3000`).sort());
    expect(jobs['billing-api'].metrics_path).toBe('/metrics');
    const metricsPort = Number(/:(\d+)\}$/.exec(compose['x-app-env'].WORKER_METRICS_ADDRESS)![1]);
    expect(jobs['billing-worker'].dns_sd_configs).toEqual([expect.objectContaining({ names: ['worker'], type: 'A', port: metricsPort })]);
  });

  it('is mounted by the compose prometheus service beside the rules it names', () => {
    const volumes: string[] = compose.services.prometheus.volumes;
    expect(volumes).toContain('./ops/prometheus.yml:/etc/prometheus/prometheus.yml:ro');
    expect(volumes).toContain('./ops/alerts.yml:/etc/prometheus/alerts.yml:ro');
    expect(compose.services.prometheus.command).toContain('--config.file=/etc/prometheus/prometheus.yml');
  });
});

describe('ops/grafana-dashboard.json', () => {
  const panels = (dashboard.panels as any[]).filter((p) => p.type !== 'row');

  it('is an importable dashboard with a Prometheus datasource variable and unique, non-overlapping panels', () => {
    expect(dashboard.title).toBeTruthy();
    expect(dashboard.uid).toMatch(/^[\w-]{1,40}$/);
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }));
    const ids = (dashboard.panels as any[]).map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels as any[]) {
      const { x, y, w, h } = p.gridPos;
      expect(x + w, p.title).toBeLessThanOrEqual(24);
      for (let i = x; i < x + w; i++) for (let j = y; j < y + h; j++) {
        expect(cells.has(`${i},${j}`), `${p.title} overlaps another panel`).toBe(false);
        cells.add(`${i},${j}`);
      }
    }
  });

  it('queries only series that exist, through the datasource variable', async () => {
    const known = new Set([...(await apiSeries()), ...temporalSeries(), ...records, 'up']);
    expect(panels.length).toBeGreaterThanOrEqual(15);
    for (const p of panels) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) {
        const names = seriesIn(t.expr);
        expect(names.length, `${p.title}: ${t.expr}`).toBeGreaterThan(0);
        for (const name of names) expect(known.has(name), `${p.title}: ${name} is not a known series`).toBe(true);
      }
    }
  });

  it('shows what the alerts watch', () => {
    const exprs = panels.flatMap((p) => p.targets.map((t: { expr: string }) => t.expr)).join('\n');
    for (const name of ['billing_webhook_oldest_undispatched_age_seconds', 'billing_webhook_events_stuck', 'billing_webhook_events_quarantined', 'billing_reconciliation_drift_found', 'billing_dunning_cycles', 'billing_checkout_success_rate', 'billing_notices', 'billing_app_webhooks']) {
      expect(exprs).toContain(name);
    }
  });
});

describe('seriesIn', () => {
  it('finds metric names and skips functions, keywords, labels and durations', () => {
    expect(seriesIn('histogram_quantile(0.99, sum by (le) (rate(billing_webhook_ack_seconds_bucket{status="200"}[5m]))) > 2')).toEqual(['billing_webhook_ack_seconds_bucket']);
    expect(seriesIn('max(a_b offset 1d) - max(c:d:e) and on (job) up == 0 or vector(0)')).toEqual(['a_b', 'c:d:e', 'up']);
  });
});

describe('promtool (installed by npm test; by hand: npm run tools:promtool)', () => {
  const promtool = (...args: string[]) => {
    if (!existsSync(PROMTOOL)) throw new Error(`${PROMTOOL} is missing: run npm run tools:promtool (npm test installs it)`);
    return spawnSync(PROMTOOL, args, { cwd: ROOT, encoding: 'utf8' });
  };

  it('accepts the rules and the scrape config', () => {
    const rulesCheck = promtool('check', 'rules', 'ops/alerts.yml');
    expect(rulesCheck.status, rulesCheck.stdout + rulesCheck.stderr).toBe(0);
    const configCheck = promtool('check', 'config', '--syntax-only', 'ops/prometheus.yml');
    expect(configCheck.status, configCheck.stdout + configCheck.stderr).toBe(0);
  });

  it('passes the alert unit tests (ops/alerts.test.yml)', () => {
    const res = promtool('test', 'rules', 'ops/alerts.test.yml');
    expect(res.status, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toContain('SUCCESS');
  });
});
