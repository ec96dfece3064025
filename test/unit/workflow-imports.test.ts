import { readFileSync, readdirSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');
const BUILTINS = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);

/** Import specifiers of a TS file, with whether the import is type-only. */
export function importsOf(source: string): { spec: string; typeOnly: boolean }[] {
  const out: { spec: string; typeOnly: boolean }[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?([^'"]*?\bfrom\s+)?['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(re)) {
    const clause = m[3] ?? '';
    const typeOnly = Boolean(m[2]) || /^\{\s*(type\s+[\w$]+\s*,?\s*)+\}\s*from\s+$/.test(clause.trim() + ' ');
    out.push({ spec: m[4]!, typeOnly });
  }
  for (const m of source.matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push({ spec: m[1]!, typeOnly: false });
  for (const m of source.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push({ spec: m[1]!, typeOnly: false });
  return out;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function resolveLocal(from: string, spec: string): string | null {
  const base = path.resolve(path.dirname(from), spec);
  for (const candidate of [`${base}.ts`, path.join(base, 'index.ts')]) {
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      /* next */
    }
  }
  return null;
}

/** Every violation in the value-import graph reachable from workflows/. */
function violations(): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  const queue = tsFiles(path.join(ROOT, 'workflows'));
  while (queue.length) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const rel = path.relative(ROOT, file);
    for (const { spec, typeOnly } of importsOf(readFileSync(file, 'utf8'))) {
      if (typeOnly) continue;
      if (BUILTINS.has(spec)) problems.push(`${rel} imports Node built-in ${spec}`);
      else if (spec.startsWith('.')) {
        const target = resolveLocal(file, spec);
        if (!target) continue;
        const top = path.relative(ROOT, target).split(path.sep)[0];
        if (top === 'activities' || top === 'lib' || top === 'api' || top === 'worker') {
          problems.push(`${rel} imports a value from ${path.relative(ROOT, target)} (only \`import type\` is allowed)`);
        }
        queue.push(target);
      } else if (!spec.startsWith('@temporalio/workflow') && !spec.startsWith('@temporalio/common') && spec !== 'zod') {
        problems.push(`${rel} imports package ${spec} (workflow code may use @temporalio/workflow, @temporalio/common, zod)`);
      }
    }
  }
  return problems;
}

describe('workflow sandbox guard', () => {
  it('workflows/ and what they import use no Node built-ins and no activity values', () => {
    expect(violations()).toEqual([]);
  });

  it('detects the violations it guards against', () => {
    const src = [
      "import fs from 'node:fs';",
      "import { createActivities } from '../activities';",
      "import type { Activities } from '../activities';",
      "import { type X } from './x';",
      "const p = require('path');",
    ].join('\n');
    const found = importsOf(src);
    expect(found).toContainEqual({ spec: 'node:fs', typeOnly: false });
    expect(found).toContainEqual({ spec: '../activities', typeOnly: false });
    expect(found).toContainEqual({ spec: '../activities', typeOnly: true });
    expect(found).toContainEqual({ spec: './x', typeOnly: true });
    expect(found).toContainEqual({ spec: 'path', typeOnly: false });
    expect(BUILTINS.has('path')).toBe(true);
  });
});

describe('domain/ is pure', () => {
  /** Every .ts file under dir, recursively. */
  function tsFiles(dir: string): string[] {
    return readdirSync(dir).flatMap((name) => {
      const full = path.join(dir, name);
      return statSync(full).isDirectory() ? tsFiles(full) : name.endsWith('.ts') ? [full] : [];
    });
  }

  it('imports nothing from Temporal, Node, activities, api or lib (the wire definitions live in workflows/contracts.ts)', () => {
    const bad: string[] = [];
    for (const file of tsFiles(path.join(ROOT, 'domain'))) {
      for (const { spec } of importsOf(readFileSync(file, 'utf8'))) {
        const external = !spec.startsWith('.');
        const allowed = spec === 'zod' || (!external && path.resolve(path.dirname(file), spec).startsWith(path.join(ROOT, 'domain')));
        if (!allowed || BUILTINS.has(spec)) bad.push(`${path.relative(ROOT, file)} imports ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });
});
