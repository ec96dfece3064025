import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const root = resolve(__dirname, '../..');
const composeText = readFileSync(resolve(root, 'docker-compose.yml'), 'utf8');
const dockerfile = readFileSync(resolve(root, 'Dockerfile'), 'utf8');
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
  healthcheck?: { test: string | string[] };
  volumes?: string[];
}

const compose = parse(composeText) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
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

describe('docker-compose.yml', () => {
  it('declares the whole topology', () => {
    expect(Object.keys(services).sort()).toEqual(
      [
        'api',
        'migrate',
        'postgres',
        'temporal',
        'temporal-admin-tools',
        'temporal-create-namespace',
        'temporal-ui',
        'worker',
      ].sort(),
    );
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
  });

  it('builds api, worker and migrate from the Dockerfile with their npm scripts', () => {
    const commands: Record<string, string> = { api: 'npm run api', worker: 'npm run worker', migrate: 'npm run db:migrate' };
    for (const [name, command] of Object.entries(commands)) {
      const s = service(name);
      const build = typeof s.build === 'string' ? { context: s.build } : s.build;
      expect(build?.context, name).toBe('.');
      expect(build?.dockerfile ?? 'Dockerfile', name).toBe('Dockerfile');
      expect(s.image, name).toBeUndefined();
      expect(script(name), name).toBe(command);
    }
  });

  it('publishes the api on 3000, temporal on 7233 and the UI on 8080', () => {
    expect(service('api').ports).toContain('3000:3000');
    expect(service('temporal').ports).toContain('7233:7233');
    expect(service('temporal-ui').ports).toContain('8080:8080');
  });

  it('orders startup with explicit depends_on conditions', () => {
    expect(service('temporal-admin-tools').depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    expect(service('temporal').depends_on).toEqual({
      'temporal-admin-tools': { condition: 'service_completed_successfully' },
    });
    expect(service('temporal-create-namespace').depends_on).toEqual({ temporal: { condition: 'service_healthy' } });
    expect(service('temporal-ui').depends_on).toEqual({ temporal: { condition: 'service_healthy' } });
    expect(service('migrate').depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    for (const name of ['api', 'worker']) {
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

  it.each(['api', 'worker'])('gives %s every app variable, in production mode', (name) => {
    const e = env(name);
    for (const key of APP_ENV) expect(e, `${name}.${key}`).toHaveProperty(key);
    expect(e.NODE_ENV).toBe('production');
    expect(e.PORT).toBe('3000');
    expect(e.TEMPORAL_ADDRESS).toBe('temporal:7233');
    expect(e.DATABASE_URL).toMatch(/^postgres:\/\/.+@postgres:5432\/billing$/);
  });

  it.each(['api', 'worker'])('makes compose refuse to start %s without its secrets', (name) => {
    const e = env(name);
    for (const key of REQUIRED_SECRETS) expect(e[key], `${name}.${key}`).toBe(`\${${key}:?set ${key}}`);
    expect(e.DATABASE_URL).toContain('${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}');
  });

  it('gives migrate only the database, not the Stripe secrets', () => {
    const e = env('migrate');
    expect(e.DATABASE_URL).toBe(env('api').DATABASE_URL);
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

  it('installs production dependencies only, from the lockfile', () => {
    expect(dockerfile).toMatch(/COPY package\.json package-lock\.json \.\//);
    expect(dockerfile).toMatch(/RUN npm ci --omit=dev\b/);
  });

  it('runs as the non-root node user and starts the api by default', () => {
    const lines = dockerfile.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    const lastFrom = lines.reduce((last, l, i) => (/^FROM\b/i.test(l) ? i : last), -1);
    const lastStage = lines.slice(lastFrom);
    expect(lastStage).toContain('USER node');
    expect(lastStage.at(-1)).toBe('CMD ["npm", "run", "api"]');
  });
});

describe('.dockerignore', () => {
  it('keeps secrets, dependencies and local state out of the build context', () => {
    for (const entry of ['.env', '.env.*', 'node_modules', '.git', '.tools', '.data']) expect(dockerignore).toContain(entry);
    expect(dockerignore).toContain('!.env.example');
  });
});
