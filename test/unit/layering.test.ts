/**
 * scripts/ (tools people run) and test/ never import each other: what both need lives in support/. And
 * no module in scripts/ or support/ grows past 400 lines (issue 18).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');
const MAX_LINES = 400;

function tsFiles(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));
}

/** Every module specifier of a file: import/export … from, import '…', import(…), require(…). */
function specifiers(text: string): string[] {
  const re = /(?:\bfrom\s+|\bimport\s+|\bimport\s*\(\s*|\brequire\s*\(\s*)['"]([^'"]+)['"]/g;
  return [...text.matchAll(re)].map((m) => m[1]!);
}

/** The top-level folder a relative specifier of `file` resolves into (null for packages and node builtins). */
function topFolder(file: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null;
  return path.relative(ROOT, path.resolve(ROOT, path.dirname(file), spec)).split(path.sep)[0] ?? null;
}

describe('layering', () => {
  it.each([
    ['scripts', 'test'],
    ['test', 'scripts'],
  ])('nothing under %s/ imports %s/', (from, to) => {
    const offenders = tsFiles(from).flatMap((file) =>
      specifiers(readFileSync(path.join(ROOT, file), 'utf8'))
        .filter((spec) => topFolder(file, spec) === to)
        .map((spec) => `${file} → ${spec}`),
    );
    expect(offenders).toEqual([]);
  });

  it('support/ imports neither scripts/ nor test/', () => {
    const offenders = tsFiles('support').flatMap((file) =>
      specifiers(readFileSync(path.join(ROOT, file), 'utf8'))
        .filter((spec) => ['scripts', 'test'].includes(topFolder(file, spec) ?? ''))
        .map((spec) => `${file} → ${spec}`),
    );
    expect(offenders).toEqual([]);
  });

  it(`has no file over ${MAX_LINES} lines in scripts/ or support/`, () => {
    const long = [...tsFiles('scripts'), ...tsFiles('support')]
      .map((file) => ({ file, lines: readFileSync(path.join(ROOT, file), 'utf8').split('\n').length }))
      .filter((f) => f.lines > MAX_LINES)
      .map((f) => `${f.file}: ${f.lines}`);
    expect(long).toEqual([]);
  });
});
