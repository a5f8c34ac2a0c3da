/**
 * All SQL lives behind `src/db/` (STYLE.md, "The house"): every query of onceq's tables is a named
 * function in the repository of its table, so that each table has one owner. This test reads
 * every TypeScript file under `src/` and fails when one outside `src/db/` builds a Kysely query,
 * writes an `sql` template, or talks to `pg` itself. Comments are ignored (TSDoc may show SQL).
 * The tools (tools/: chaos, bench, demo) are not the product and may write SQL of their own, to
 * check from outside what the product did; this test reads src/ only, and checks that src/ holds
 * no tool.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../src', import.meta.url));

/**
 * Files and folders (relative to `src/`, `/`-separated) that may hold SQL outside `src/db/`, and
 * why. Keep it short: a new entry needs a reason a reviewer accepts.
 */
const ALLOWED: { path: string; why: string }[] = [
  {
    path: 'jobs/context.ts',
    why:
      "`ctx.insertOnce` and `ctx.updateVersioned` run on the app's own tables, typed by the app's " +
      'Database: generic by design, no repository of onceq could own them',
  },
  { path: 'jobs/examples/', why: "the ledger example's domain code, on the example's own tables" },
];

/** What counts as SQL: Kysely's query builders, `sql` templates and helpers, raw pg queries. */
const SQL_PATTERNS: { name: string; re: RegExp }[] = [
  {
    name: 'Kysely query builder',
    re: /\.(selectFrom|selectNoFrom|insertInto|replaceInto|updateTable|deleteFrom|mergeInto)\s*\(/,
  },
  { name: 'sql template', re: /\bsql\s*(<[^`]*?>)?\s*`/ },
  { name: 'sql helper', re: /\bsql\.(raw|ref|id|lit|join|table|val)\s*\(/ },
  // A type-only import of pg (the `pg.Pool` a caller may pass in) runs no query.
  {
    name: 'raw query',
    re: /\.executeQuery\s*\(|\bCompiledQuery\b|^(?!import type\b).*from\s+['"]pg['"]/m,
  },
];

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return tsFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** The source without comments, line breaks kept so that line numbers still match. */
function withoutComments(source: string): string {
  return source
    .replace(/\/\*[\s\S]*?\*\//g, (block) => block.replace(/[^\n]/g, ' '))
    .replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
}

function isAllowed(path: string): boolean {
  return ALLOWED.some((a) => (a.path.endsWith('/') ? path.startsWith(a.path) : path === a.path));
}

/** `path:line: what` for every SQL outside `src/db/` and the allowed files. */
function findSqlOutsideDb(): string[] {
  const found: string[] = [];
  for (const file of tsFiles(SRC)) {
    const path = relative(SRC, file).split(sep).join('/');
    if (path.startsWith('db/') || isAllowed(path)) continue;
    const source = withoutComments(readFileSync(file, 'utf8'));
    const lines = source.split('\n');
    for (const { name, re } of SQL_PATTERNS) {
      // Over the whole file, not line by line: a type argument (`sql<{ ... }>`) may span lines.
      for (const match of source.matchAll(new RegExp(re.source, `g${re.flags}`))) {
        const line = source.slice(0, match.index).split('\n').length;
        found.push(`src/${path}:${line}: ${name}: ${lines[line - 1]!.trim()}`);
      }
    }
  }
  return found;
}

describe('layering: all SQL behind src/db/', () => {
  it('no file outside src/db/ (but the allowed ones) builds or writes SQL', () => {
    expect(
      findSqlOutsideDb(),
      'move these queries into the repository of their table',
    ).to.deep.equal([]);
  });

  it('reads src/ only: the tools live under tools/, outside it', () => {
    const files = tsFiles(SRC).map((f) => relative(SRC, f).split(sep).join('/'));
    for (const tool of ['chaos/', 'bench/', 'demo/', 'cli/chaos.ts', 'cli/demo.ts']) {
      expect(
        files.filter((f) => f.startsWith(tool)),
        `src/${tool} is a tool: it belongs under tools/`,
      ).to.deep.equal([]);
    }
  });

  it('every allowed path exists, so the list cannot hide a new file under an old name', () => {
    const files = tsFiles(SRC).map((f) => relative(SRC, f).split(sep).join('/'));
    for (const { path } of ALLOWED) {
      expect(
        files.some((f) => (path.endsWith('/') ? f.startsWith(path) : f === path)),
        `allowed path src/${path} no longer exists: drop it from ALLOWED`,
      ).to.equal(true);
    }
  });

  it('sees the SQL it is looking for (the patterns are not blind)', () => {
    const probes = [
      "await db.selectFrom('inbox').selectAll().execute();",
      "await trx.insertInto('dead_letters').values(row).execute();",
      'await sql`select 1`.execute(db);',
      'const { rows } = await sql<{ n: string }>`select count(*) from outbox`.execute(db);',
      'db.selectNoFrom((eb) => eb.val(1).as("one"))',
      'await sql<{\n  oldest: string | null;\n  n: string;\n}>`select 1`.execute(db);',
      "import pg from 'pg';",
    ];
    for (const probe of probes) {
      expect(
        SQL_PATTERNS.some(({ re }) => re.test(probe)),
        probe,
      ).to.equal(true);
    }
    // Prose that mentions SQL in a comment is not SQL.
    expect(
      withoutComments('/** run `` sql`SAVEPOINT a` `` */ const x = 1; // sql`x`'),
    ).to.not.match(SQL_PATTERNS[1]!.re);
  });
});
