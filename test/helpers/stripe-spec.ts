/** Stripe's OpenAPI spec from the pinned stripe-mock module, compiled with ajv into a webhook-shape validator. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import Ajv, { type ErrorObject } from 'ajv';

type Schema = Record<string, unknown>;

/** The parts of spec3.json the validator reads. */
export interface StripeSpec {
  info: { version: string };
  paths: Record<string, Record<string, { description?: string }>>;
  components: { schemas: Record<string, Schema> };
}

const ROOT = join(__dirname, '..', '..');
const SPEC_ID = 'stripe-spec3';
/** `$comment`s marking the fields reshaped for webhooks (ajv reports them back with `verbose`). */
const EXPANDABLE = 'expandable: webhooks carry the id';
const INCLUDABLE = 'includable: only with expand[]';
const MODULE = 'github.com/stripe/stripe-mock';

/** STRIPE_MOCK_VERSION as pinned in scripts/tools.sh (the one place that names it). */
export function pinnedStripeMockVersion(): string {
  const match = /^STRIPE_MOCK_VERSION=(v[0-9.]+)\b/m.exec(readFileSync(join(ROOT, 'scripts', 'tools.sh'), 'utf8'));
  if (!match?.[1]) throw new Error('scripts/tools.sh does not pin STRIPE_MOCK_VERSION=v…');
  return match[1];
}

function goModCache(): string {
  try {
    const dir = execFileSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8' }).trim();
    if (dir) return dir;
  } catch {
    // No Go toolchain on PATH: fall back to Go's own default below.
  }
  return process.env.GOMODCACHE || join(process.env.GOPATH || join(homedir(), 'go'), 'pkg', 'mod');
}

/** Path of embedded/openapi/spec3.json in the module cache copy of the pinned stripe-mock. */
export function stripeSpecPath(version = pinnedStripeMockVersion()): string {
  return join(goModCache(), `${MODULE}@${version}`, 'embedded', 'openapi', 'spec3.json');
}

/** Reads the pinned stripe-mock's spec; a missing module is a clear error that names the fix. */
export function loadStripeSpec(): StripeSpec {
  const version = pinnedStripeMockVersion();
  const path = stripeSpecPath(version);
  if (!existsSync(path)) {
    throw new Error(
      `Stripe OpenAPI spec not found at ${path}: stripe-mock ${version} is not in the Go module cache. ` +
        `Run \`bash scripts/tools.sh\` (npm test does) or \`go mod download ${MODULE}@${version}\`.`,
    );
  }
  return JSON.parse(readFileSync(path, 'utf8')) as StripeSpec;
}

const isSchema = (value: unknown): value is Schema => typeof value === 'object' && value !== null && !Array.isArray(value);

function resolve(spec: StripeSpec, schema: Schema): Schema {
  let current = schema;
  while (typeof current.$ref === 'string') {
    const name = current.$ref.replace('#/components/schemas/', '');
    const next = spec.components.schemas[name];
    if (!next) throw new Error(`dangling $ref ${current.$ref}`);
    current = next;
  }
  return current;
}

/**
 * Properties Stripe returns only when a request asks for them with `expand[]` (e.g. invoice.payments,
 * customer.subscriptions, charge.refunds): lists that the schema declares expandable but not required.
 * The spec says it in prose (GET /v1/invoice_payments: "there is an includable payments property");
 * the test checks that every such sentence is covered by this rule.
 */
export function includableProperties(spec: StripeSpec, schema: Schema): string[] {
  const properties = isSchema(schema.properties) ? schema.properties : {};
  const required = new Set((schema.required as string[] | undefined) ?? []);
  const expandable = new Set((schema['x-expandableFields'] as string[] | undefined) ?? []);
  return Object.entries(properties)
    .filter(([name, value]) => {
      if (required.has(name) || !expandable.has(name) || !isSchema(value)) return false;
      const object = resolve(spec, value).properties as Record<string, Schema> | undefined;
      return JSON.stringify(object?.object?.enum) === '["list"]';
    })
    .map(([name]) => name);
}

function withNull(schema: Schema): Schema {
  const out = { ...schema };
  if (Array.isArray(out.enum)) out.enum = [...out.enum, null];
  if (typeof out.type === 'string') out.type = [out.type, 'null'];
  else if (Array.isArray(out.anyOf)) out.anyOf = [...out.anyOf, { type: 'null' }];
  else if (typeof out.$ref === 'string') return { anyOf: [{ $ref: out.$ref }, { type: 'null' }] };
  return out;
}

/**
 * One OpenAPI 3.0 schema → JSON Schema for a webhook payload: `nullable` allows null; an expandable
 * field (`x-expansionResources`) accepts only its unexpanded string id, since webhooks are never
 * expanded; includable properties are dropped; every object with declared properties is closed.
 */
function toWebhookSchema(spec: StripeSpec, schema: Schema): Schema {
  let out: Schema = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key.startsWith('x-') || key === 'nullable') continue;
    out[key] = value;
  }
  if (schema['x-expansionResources'] && Array.isArray(schema.anyOf)) {
    const unexpanded = (schema.anyOf as Schema[]).filter((branch) => !('$ref' in branch));
    if (unexpanded.length !== 1) throw new Error(`expandable field without a single id branch: ${JSON.stringify(schema)}`);
    delete out.anyOf;
    out = { ...out, ...unexpanded[0], $comment: EXPANDABLE };
  }
  // ajv's strict mode knows `definitions`, not OpenAPI's `components`.
  if (typeof out.$ref === 'string') out.$ref = out.$ref.replace('#/components/schemas/', '#/definitions/');
  if (Array.isArray(out.anyOf)) out.anyOf = (out.anyOf as Schema[]).map((branch) => toWebhookSchema(spec, branch));
  if (isSchema(out.items)) out.items = toWebhookSchema(spec, out.items);
  if (isSchema(out.additionalProperties)) out.additionalProperties = toWebhookSchema(spec, out.additionalProperties);
  if (isSchema(out.properties)) {
    const includable = new Set(includableProperties(spec, schema));
    out.properties = Object.fromEntries(
      Object.entries(out.properties as Record<string, Schema>).map(([name, value]) => [
        name,
        includable.has(name) ? { not: {}, $comment: INCLUDABLE } : toWebhookSchema(spec, value),
      ]),
    );
    out.additionalProperties ??= false;
  }
  return schema.nullable === true ? withNull(out) : out;
}

/** Maps an event type's resource prefix to its object's schema name where the two differ. */
const OBJECT_OF_EVENT_RESOURCE: Record<string, string> = {
  'customer.subscription': 'subscription',
  'charge.dispute': 'dispute',
};

/** The `object` value (and spec schema name) that `data.object` of an event of `type` carries. */
export function objectTypeOfEvent(type: string): string {
  const resource = type.slice(0, type.lastIndexOf('.'));
  return OBJECT_OF_EVENT_RESOURCE[resource] ?? resource;
}

/**
 * Where an event's object legitimately differs from its resource schema. Stripe's event type reference
 * for invoice.upcoming: "The received Invoice object will not have an invoice ID."
 */
const OPTIONAL_IN_EVENT: Record<string, string[]> = {
  'invoice.upcoming': ['id'],
};

function describe(error: ErrorObject): string {
  const at = error.instancePath || '(root)';
  if (error.keyword === 'additionalProperties') return `${at}: unknown property '${String(error.params.additionalProperty)}'`;
  if (error.keyword === 'enum') return `${at}: ${error.message} ${JSON.stringify(error.params.allowedValues)}`;
  if (error.keyword === 'not' && error.parentSchema?.$comment === INCLUDABLE) {
    return `${at}: present only when a request expands it (includable), so never in a webhook`;
  }
  if (error.keyword === 'type' && error.parentSchema?.$comment === EXPANDABLE) {
    return `${at}: expanded, but an expandable field in a webhook is the object's id (${error.message})`;
  }
  return `${at}: ${error.message}`;
}

/** A nullable wrapper's "must be null" / "must match a schema in anyOf", noise next to the real error below it. */
const isWrapperNoise = (e: ErrorObject) => e.keyword === 'anyOf' || (e.keyword === 'type' && e.params.type === 'null');

function specific(errors: ErrorObject[]): ErrorObject[] {
  return errors.filter(
    (e) => !isWrapperNoise(e) || !errors.some((o) => !isWrapperNoise(o) && o.instancePath.startsWith(e.instancePath)),
  );
}

/** Validates webhook envelopes against one Stripe API version's spec. */
export interface WebhookValidator {
  /** The spec's API version (info.version), e.g. 2026-08-26.dahlia. */
  apiVersion: string;
  /** Every shape error of an envelope, `/json/pointer: message`; empty when Stripe could send it as is. */
  validate(envelope: unknown): string[];
}

/**
 * Objects the spec's webhook event list names (`entitlements.active_entitlement_summary.updated`) but whose
 * schema it does not define (stripe-mock v0.203.0, 2026-08-26.dahlia): declared here as stripe-node 23.1.0
 * types them (`ActiveEntitlementSummary`: object, customer, entitlements: ApiList<ActiveEntitlement>, livemode),
 * the list items checked against the spec's own `entitlements.active_entitlement`. A spec that defines one wins.
 */
const SUPPLEMENTED_SCHEMAS: Record<string, Schema> = {
  'entitlements.active_entitlement_summary': {
    type: 'object',
    required: ['customer', 'entitlements', 'livemode', 'object'],
    properties: {
      customer: { type: 'string', maxLength: 5000 },
      entitlements: {
        type: 'object',
        required: ['data', 'has_more', 'object', 'url'],
        properties: {
          data: { type: 'array', items: { $ref: '#/components/schemas/entitlements.active_entitlement' } },
          has_more: { type: 'boolean' },
          object: { type: 'string', enum: ['list'] },
          url: { type: 'string', maxLength: 5000 },
        },
      },
      livemode: { type: 'boolean' },
      object: { type: 'string', enum: ['entitlements.active_entitlement_summary'] },
    },
  },
};

/** Compiles the validator for event envelopes and every object schema they name. */
export function createWebhookValidator(spec: StripeSpec): WebhookValidator {
  const ajv = new Ajv({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
  ajv.addFormat('unix-time', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= 0 });
  ajv.addFormat('currency', /^[a-z]{3}$/);
  ajv.addFormat('decimal', /^-?\d+(\.\d+)?$/);
  const all = { ...SUPPLEMENTED_SCHEMAS, ...spec.components.schemas };
  const schemas = Object.fromEntries(Object.entries(all).map(([name, schema]) => [name, toWebhookSchema(spec, schema)]));
  ajv.addSchema({ $id: SPEC_ID, definitions: schemas });
  const compiled = (name: string) => {
    if (!schemas[name]) return null;
    const validate = ajv.getSchema(`${SPEC_ID}#/definitions/${name}`);
    if (!validate) throw new Error(`ajv could not compile components.schemas.${name}`);
    return validate;
  };
  const run = (name: string, value: unknown, prefix: string, optional: string[] = []): string[] => {
    const validate = compiled(name);
    if (!validate) return [`${prefix || '(root)'}: no schema components.schemas[${JSON.stringify(name)}] in the spec`];
    if (validate(value)) return [];
    return specific(validate.errors ?? [])
      .filter((e) => !(e.keyword === 'required' && e.instancePath === '' && optional.includes(String(e.params.missingProperty))))
      .map((error) => describe({ ...error, instancePath: prefix + error.instancePath }));
  };

  return {
    apiVersion: spec.info.version,
    validate(envelope) {
      const errors = run('event', envelope, '');
      if (!isSchema(envelope) || !isSchema(envelope.data) || !isSchema(envelope.data.object)) return errors;
      const object = envelope.data.object;
      const name = typeof envelope.type === 'string' ? objectTypeOfEvent(envelope.type) : String(object.object);
      if (object.object !== name) errors.push(`/data/object/object: ${envelope.type} carries a ${name}, not ${String(object.object)}`);
      if (envelope.api_version !== spec.info.version) {
        errors.push(`/api_version: ${JSON.stringify(envelope.api_version)} is not the spec's ${spec.info.version}`);
      }
      errors.push(...run(name, object, '/data/object', OPTIONAL_IN_EVENT[String(envelope.type)]));
      // previous_attributes holds partial old values (nested hashes only list changed keys), so only
      // its top-level names are checked: each must be a property the object itself can carry.
      const previous = envelope.data.previous_attributes;
      const properties = schemas[name]?.properties as Record<string, Schema> | undefined;
      if (isSchema(previous) && properties) {
        for (const key of Object.keys(previous)) {
          const known = Object.hasOwn(properties, key) && properties[key]?.$comment !== INCLUDABLE;
          if (!known) errors.push(`/data/previous_attributes: unknown property '${key}' of ${name}`);
        }
      }
      return errors;
    },
  };
}
