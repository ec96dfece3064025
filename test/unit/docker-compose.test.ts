import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const root = resolve(__dirname, '../..');
const composeText = readFileSync(resolve(root, 'docker-compose.yml'), 'utf8');
const dockerfile = readFileSync(resolve(root, 'Dockerfile'), 'utf8');
const packageScripts: Record<string, string> = JSON.parse(readFileSync(resolve(root, 'package.json'), 'utf8')).scripts;
const dockerignore = readFileSync(resolve(root, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

interface Service {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Record<string, string | number | boolean | null> | string[];
  ports?: (string | number)[];
  depends_on?: Record<string, { condition: string }> | string[];
  healthcheck?: { test?: string | string[]; disable?: boolean };
  volumes?: string[];
  profiles?: string[];
  deploy?: { replicas?: number };
}

// Compose resolves YAML merge keys (<<: *app-image), so the test does too.
const compose = parse(composeText, { merge: true }) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
const services = compose.services;

function service(name: string): Service {
  const s = services[name];
  if (!s) throw new Error(`service ${name} is missing from docker-compose.yml`);
  return s;
}

function env(name: string): Record<string, string> {
  const e = service(name).environment ?? {};
  if (Array.isArray(e)) {
    return Object.fromEntries(e.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, v == null ? '' : String(v)]));
}

function script(name: string): string {
  const c = service(name).command;
  return Array.isArray(c) ? c.join(' ') : (c ?? '');
}

const APP_ENV = [
  'PORT',
  'DATABASE_URL',
  'TEMPORAL_ADDRESS',
  'TEMPORAL_NAMESPACE',
  'TEMPORAL_TASK_QUEUE',
  'STRIPE_SECRET_KEY',
  'STRIPE_WEBHOOK_SECRET',
  'STRIPE_API_BASE',
  'ADMIN_TOKEN',
  'API_TOKEN',
  'NODE_ENV',
];
const REQUIRED_SECRETS = ['STRIPE_SECRET_KEY', 'STRIPE_WEBHOOK_SECRET', 'ADMIN_TOKEN', 'API_TOKEN'];
const API_SERVICES = ['api-1', 'api-2'];
const APP_SERVICES = [...API_SERVICES, 'worker'];
/** The compiled entry point each role runs (package.json start:api / start:worker / migrate:prod run the same files). */
const ROLE_COMMANDS: Record<string, string> = {
  'api-1': 'node dist/api/server.js',
  'api-2': 'node dist/api/server.js',
  worker: 'node dist/worker/main.js',
  migrate: 'node dist/lib/migrate-cli.js',
};

describe('docker-compose.yml', () => {
  it('declares the whole topology', () => {
    expect(Object.keys(services).sort()).toEqual(
      [
        'api-1',
        'api-2',
        'mailpit',
        'migrate',
        'postgres',
        'prometheus',
        'temporal',
        'temporal-admin-tools',
        'temporal-create-namespace',
        'temporal-ui',
        'worker',
      ].sort(),
    );
  });

  it('runs 2 API and 2 worker containers', () => {
    for (const name of API_SERVICES) expect(service(name).deploy?.replicas ?? 1, name).toBe(1);
    expect(service('worker').deploy?.replicas).toBe(2);
  });

  it('puts Mailpit, and only Mailpit, under the dev profile, and leaves SMTP off by default', () => {
    for (const [name, s] of Object.entries(services)) expect(s.profiles, name).toEqual(name === 'mailpit' ? ['dev'] : undefined);
    for (const name of APP_SERVICES) {
      expect(env(name).SMTP_URL, name).toBe('${SMTP_URL:-}');
      expect(env(name).NOTIFY_FROM, name).toBe('${NOTIFY_FROM:-}');
    }
    expect(composeText).toContain('SMTP_URL=smtp://mailpit:1025');
  });

  it('pins every image to an explicit tag, never latest', () => {
    for (const [name, s] of Object.entries(services)) {
      if (s.build) continue;
      expect(s.image, name).toMatch(/^[a-z0-9./-]+:[A-Za-z0-9._-]+$/);
      expect(s.image!.split(':')[1], name).not.toBe('latest');
    }
    expect(service('postgres').image).toMatch(/^postgres:16(\.|-|$)/);
    expect(service('temporal').image).toMatch(/^temporalio\/server:1\.30\.\d+$/);
    expect(service('temporal-admin-tools').image).toMatch(/^temporalio\/admin-tools:1\.30\.\d+$/);
    expect(service('temporal-create-namespace').image).toBe(service('temporal-admin-tools').image);
    expect(service('temporal-ui').image).toMatch(/^temporalio\/ui:2\.34\.\d+$/);
    expect(service('prometheus').image).toMatch(/^prom\/prometheus:v3\.\d+\.\d+$/);
    expect(service('mailpit').image).toMatch(/^axllent\/mailpit:v1\.\d+\.\d+$/);
  });

  it('builds one image from the Dockerfile and runs each role\'s compiled entry point with node', () => {
    for (const [name, command] of Object.entries(ROLE_COMMANDS)) {
      const s = service(name);
      const build = typeof s.build === 'string' ? { context: s.build } : s.build;
      expect(build?.context, name).toBe('.');
      expect(build?.dockerfile ?? 'Dockerfile', name).toBe('Dockerfile');
      // One tag for every role: compose builds it once.
      expect(s.image, name).toBe('${BILLING_IMAGE:-billing-engine:local}');
      expect(script(name), name).toBe(command);
    }
    expect(packageScripts['start:api']).toBe(ROLE_COMMANDS['api-1']);
    expect(packageScripts['start:worker']).toBe(ROLE_COMMANDS.worker);
    expect(packageScripts['migrate:prod']).toBe(ROLE_COMMANDS.migrate);
  });

  it('publishes the api replicas on 3000 and 3001, temporal on 7233, the UI on 8080, Prometheus on 9090, Mailpit on 8025', () => {
    expect(service('api-1').ports).toEqual(['3000:3000']);
    expect(service('api-2').ports).toEqual(['3001:3000']);
    expect(service('worker').ports).toBeUndefined();
    expect(service('temporal').ports).toContain('7233:7233');
    expect(service('temporal-ui').ports).toContain('8080:8080');
    expect(service('prometheus').ports).toContain('9090:9090');
    expect(service('mailpit').ports).toContain('8025:8025');
  });

  it('health-checks every long-running service, and not the one-shot migrate', () => {
    for (const name of [...APP_SERVICES, 'postgres', 'temporal', 'prometheus', 'mailpit']) {
      expect(service(name).healthcheck?.test, name).toBeDefined();
    }
    for (const name of API_SERVICES) expect(JSON.stringify(service(name).healthcheck?.test), name).toContain('/readyz');
    // The worker serves no API: its check is the Temporal runtime's metrics endpoint (WORKER_METRICS_ADDRESS).
    expect(JSON.stringify(service('worker').healthcheck?.test)).toContain(':9464/metrics');
    expect(env('worker').WORKER_METRICS_ADDRESS).toBe('${WORKER_METRICS_ADDRESS:-0.0.0.0:9464}');
    expect(service('migrate').healthcheck).toEqual({ disable: true });
    // Single quotes only: a "$" in a healthcheck would be interpolated by compose.
    for (const name of APP_SERVICES) expect(JSON.stringify(service(name).healthcheck?.test), name).not.toContain('$');
  });

  it('orders startup with explicit depends_on conditions', () => {
    expect(service('temporal-admin-tools').depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    expect(service('temporal').depends_on).toEqual({
      'temporal-admin-tools': { condition: 'service_completed_successfully' },
    });
    expect(service('temporal-create-namespace').depends_on).toEqual({ temporal: { condition: 'service_healthy' } });
    expect(service('temporal-ui').depends_on).toEqual({ temporal: { condition: 'service_healthy' } });
    expect(service('migrate').depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    for (const name of APP_SERVICES) {
      expect(service(name).depends_on, name).toEqual({
        migrate: { condition: 'service_completed_successfully' },
        temporal: { condition: 'service_healthy' },
        'temporal-create-namespace': { condition: 'service_completed_successfully' },
      });
    }
  });

  it('health-checks postgres with pg_isready and keeps its data in a named volume', () => {
    expect(JSON.stringify(service('postgres').healthcheck?.test)).toContain('pg_isready');
    expect(service('postgres').volumes).toContain('postgres-data:/var/lib/postgresql/data');
    expect(compose.volumes).toHaveProperty('postgres-data');
    expect(service('temporal').healthcheck).toBeDefined();
  });

  it('runs Temporal on Postgres persistence', () => {
    expect(env('temporal')).toMatchObject({ DB: 'postgres12', POSTGRES_SEEDS: 'postgres', DB_PORT: '5432' });
    expect(env('temporal-ui')).toMatchObject({ TEMPORAL_ADDRESS: 'temporal:7233' });
  });

  it('sets up and migrates both Temporal schemas', () => {
    const s = script('temporal-admin-tools');
    expect(s).toContain('temporal-sql-tool --plugin postgres12');
    expect(s).toMatch(/for db in temporal temporal_visibility/);
    for (const step of ['create', 'setup-schema -v 0.0', 'update-schema -d']) expect(s).toContain(step);
    expect(s).toContain('/etc/temporal/schema/postgresql/v12/temporal/versioned');
    expect(s).toContain('/etc/temporal/schema/postgresql/v12/visibility/versioned');
  });

  it('creates the namespace and the Keyword search attributes the UI filters on', () => {
    const s = script('temporal-create-namespace');
    expect(s).toContain('temporal operator namespace create');
    expect(s).toContain('temporal operator search-attribute create');
    for (const name of ['StripeCustomerId', 'SubscriptionStatus', 'PlanId', 'DunningState', 'BillingWorkflowKind']) {
      expect(s).toContain(`--name ${name} --type Keyword`);
    }
  });

  it('escapes every shell $ in one-shot scripts so compose does not interpolate it from the host', () => {
    for (const name of ['temporal-admin-tools', 'temporal-create-namespace']) {
      // After YAML parsing, a lone "$" would be replaced by compose; "$$" reaches the shell as "$".
      expect(script(name).replace(/\$\$/g, ''), name).not.toContain('$');
    }
  });

  it('runs Prometheus on ops/prometheus.yml with the alert rules mounted', () => {
    expect(service('prometheus').volumes).toEqual(
      expect.arrayContaining(['./ops/prometheus.yml:/etc/prometheus/prometheus.yml:ro', './ops/alerts.yml:/etc/prometheus/alerts.yml:ro']),
    );
    expect(compose.volumes).toHaveProperty('prometheus-data');
  });

  it.each(APP_SERVICES)('gives %s every app variable, in production mode', (name) => {
    const e = env(name);
    for (const key of APP_ENV) expect(e, `${name}.${key}`).toHaveProperty(key);
    expect(e.NODE_ENV).toBe('production');
    expect(e.PORT).toBe('3000');
    expect(e.TEMPORAL_ADDRESS).toBe('temporal:7233');
    expect(e.DATABASE_URL).toMatch(/^postgres:\/\/.+@postgres:5432\/billing$/);
  });

  it.each(APP_SERVICES)('makes compose refuse to start %s without its secrets', (name) => {
    const e = env(name);
    for (const key of REQUIRED_SECRETS) expect(e[key], `${name}.${key}`).toBe(`\${${key}:?set ${key}}`);
    expect(e.DATABASE_URL).toContain('${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}');
  });

  it('gives migrate only the database, not the Stripe secrets', () => {
    const e = env('migrate');
    expect(e.DATABASE_URL).toBe(env('api-1').DATABASE_URL);
    for (const key of REQUIRED_SECRETS) expect(e).not.toHaveProperty(key);
  });

  it('contains no literal secret values', () => {
    expect(composeText).not.toMatch(/\b(sk|rk|pk)_(live|test)_/);
    expect(composeText).not.toMatch(/whsec_/);
    for (const name of Object.keys(services)) {
      for (const [key, value] of Object.entries(env(name))) {
        if (/PASSWORD|PWD|SECRET|TOKEN/.test(key)) expect(value, `${name}.${key}`).toMatch(/^\$\{[A-Z_]+:\?[^}]+\}$/);
      }
    }
  });
});

describe('Dockerfile', () => {
  const froms = [...dockerfile.matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gim)];

  it('is a multi-stage build on node:20-bookworm-slim', () => {
    expect(froms.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:20-bookworm-slim$/m);
    for (const from of froms) expect(from[1]).toBe('${NODE_IMAGE}');
  });

  const lines = dockerfile.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stage = (name: string) => {
    const start = lines.findIndex((l) => new RegExp(`^FROM \\S+ AS ${name}$`, 'i').test(l));
    expect(start, `stage ${name}`).toBeGreaterThanOrEqual(0);
    const end = lines.findIndex((l, i) => i > start && /^FROM\b/i.test(l));
    return lines.slice(start, end < 0 ? undefined : end);
  };

  it('compiles in a build stage: every dependency from the lockfile, then npm run build', () => {
    const build = stage('build');
    expect(build).toContain('COPY package.json package-lock.json ./');
    expect(build.some((l) => /^RUN npm ci\b/.test(l) && !l.includes('--omit=dev'))).toBe(true);
    expect(build.at(-1)).toBe('RUN npm run build');
    for (const dir of ['api', 'worker', 'workflows', 'activities', 'domain', 'lib', 'config']) expect(build).toContain(`COPY ${dir} ./${dir}`);
  });

  it('ships only production dependencies, dist/ and migrations/ in the runtime stage', () => {
    expect(stage('deps').some((l) => /^RUN npm ci --omit=dev\b/.test(l))).toBe(true);
    const runtime = stage('runtime');
    expect(runtime).toContain('COPY --from=deps /app/node_modules ./node_modules');
    expect(runtime).toContain('COPY --from=build /app/dist ./dist');
    expect(runtime).toContain('COPY migrations ./migrations');
    expect(runtime.filter((l) => /^COPY\b/.test(l))).toHaveLength(4);
    expect(runtime.join('\n')).not.toMatch(/\btsx\b/);
  });

  it('runs node dist/api/server.js as the non-root node user, with a readiness healthcheck', () => {
    const runtime = stage('runtime');
    expect(runtime).toContain('USER node');
    expect(runtime.findIndex((l) => l === 'USER node')).toBeLessThan(runtime.findIndex((l) => l.startsWith('CMD')));
    expect(runtime.at(-1)).toBe('CMD ["node", "dist/api/server.js"]');
    expect(dockerfile).toMatch(/^HEALTHCHECK --interval=\S+ --timeout=\S+ --start-period=\S+ --retries=\d+ \\\n\s+CMD \["node", "-e", ".*\/readyz/m);
  });
});

describe('.dockerignore', () => {
  it('keeps secrets, dependencies and local state out of the build context', () => {
    for (const entry of ['.env', '.env.*', 'node_modules', '.git', '.tools', '.data', 'dist', '.build-test-*']) expect(dockerignore).toContain(entry);
    expect(dockerignore).toContain('!.env.example');
  });
});
