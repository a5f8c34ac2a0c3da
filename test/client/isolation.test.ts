/**
 * `onceq/client` runs in browsers and must not drag the server into a bundle: every file of
 * src/client imports only files of src/client, no package and no `node:` module, and uses no
 * Node-only global. Read from the sources, so a new import fails here before it ships.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLIENT_DIR = join(ROOT, 'src/client');

/** Every module specifier of a source: static imports and re-exports, dynamic imports, require. */
function specifiers(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\s[^'";]*?\bfrom\s*['"]([^'"]+)['"]/g,
    /\bimport\s*['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"`]([^'"`]+)['"`]\s*\)/g,
    /\brequire\s*\(\s*['"`]([^'"`]+)['"`]\s*\)/g,
  ];
  for (const pattern of patterns) {
    for (const match of source.matchAll(pattern)) found.push(match[1]!);
  }
  return found;
}

/** The source without comments, so TSDoc examples (`import ... from 'onceq/client'`) don't count. */
function code(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
}

describe('client: src/client stands alone', () => {
  const files = readdirSync(CLIENT_DIR, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(CLIENT_DIR, f));

  it('has an index and its modules', () => {
    expect(files.map((f) => relative(CLIENT_DIR, f))).to.include.members(['index.ts', 'client.ts']);
  });

  it('imports only relative files inside src/client: no package, no node: module', () => {
    const outside: string[] = [];
    for (const file of files) {
      const source = code(readFileSync(file, 'utf8'));
      for (const spec of specifiers(source)) {
        const target = resolve(dirname(file), spec);
        const inside = spec.startsWith('./') || spec.startsWith('../');
        if (!inside || relative(CLIENT_DIR, target).startsWith('..')) {
          outside.push(`${relative(CLIENT_DIR, file)}: ${spec}`);
        }
      }
    }
    expect(outside).to.deep.equal([]);
  });

  it('finds imports the way it means to (the check checks something)', () => {
    expect(
      specifiers(
        "import { a } from 'node:fs';\nexport * from '../core/x.js';\nimport 'pg';\n" +
          "const m = await import('ioredis');\nimport type {\n  B,\n} from './b.js';",
      ),
    ).to.have.members(['node:fs', '../core/x.js', 'pg', 'ioredis', './b.js']);
  });

  it('uses no Node-only global (Buffer, process, require, __dirname)', () => {
    const used: string[] = [];
    for (const file of files) {
      // Words inside string literals are text, not uses.
      const source = code(readFileSync(file, 'utf8')).replace(/'[^'\n]*'|"[^"\n]*"/g, "''");
      for (const name of ['Buffer', 'process', 'require', '__dirname', 'global']) {
        if (new RegExp(`(?<![.\\w])${name}\\b`).test(source)) {
          used.push(`${relative(CLIENT_DIR, file)}: ${name}`);
        }
      }
    }
    expect(used).to.deep.equal([]);
  });

  it('type-checks as a browser sees it: DOM types only, no @types/node', async function () {
    this.timeout(60_000);
    const dir = mkdtempSync(join(tmpdir(), 'onceq-client-dom-'));
    try {
      const config = {
        compilerOptions: {
          target: 'ES2022',
          lib: ['ES2022', 'DOM'],
          types: [],
          module: 'ESNext',
          moduleResolution: 'Bundler',
          strict: true,
          noEmit: true,
        },
        files: [join(CLIENT_DIR, 'index.ts')],
      };
      writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(config));
      const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
      const run = await promisify(execFile)(process.execPath, [tsc, '-p', dir]).catch(
        (err: { stdout?: string; code?: number }) => ({ stdout: err.stdout ?? '', code: err.code }),
      );
      expect(run.stdout).to.equal('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
