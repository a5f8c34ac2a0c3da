/**
 * The README's tracing setup, run as written: its TypeScript block registers an SDK in a child
 * process, and a span of onceq's then reaches the exporter, with a trace context to carry in a
 * job. A sample that stopped working (a renamed export, a missing context manager) fails here.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// Inside the project, so that the sample's packages resolve from its node_modules.
const DIR = path.join(ROOT, 'node_modules', '.cache', `onceq-readme-tracing-${process.pid}`);

/** The TypeScript block of the README's "Tracing" section. */
function tracingSample(): string {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('\n### Tracing\n');
  expect(start, 'README section Tracing').to.be.greaterThan(-1);
  const end = readme.indexOf('\n### ', start + 1);
  const blocks = [...readme.slice(start, end).matchAll(/```ts\n([\s\S]*?)```/g)];
  expect(blocks, 'TypeScript blocks of Tracing').to.have.length(1);
  return blocks[0]![1]!;
}

const CHECK = (tracing: string) => `
import './tracing.ts';
import { ProxyTracerProvider, trace } from '@opentelemetry/api';
import { activeMessageTrace, inSpan } from ${JSON.stringify(pathToFileURL(tracing).href)};

let carried: unknown;
await inSpan('readme check', {}, async () => {
  carried = activeMessageTrace();
});
const provider = trace.getTracerProvider() as ProxyTracerProvider;
await (provider.getDelegate() as unknown as { forceFlush(): Promise<void> }).forceFlush();
console.log('CARRIED ' + JSON.stringify(carried));
`;

describe("telemetry: the README's tracing setup", function () {
  this.timeout(60_000);
  after(() => rmSync(DIR, { recursive: true, force: true }));

  it("registers an SDK that receives onceq's spans and propagates their context", async () => {
    mkdirSync(DIR, { recursive: true });
    // An ES module folder, as the sample's `import` lines and the check's top-level await need.
    writeFileSync(path.join(DIR, 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(path.join(DIR, 'tracing.ts'), tracingSample());
    writeFileSync(
      path.join(DIR, 'check.ts'),
      CHECK(path.join(ROOT, 'src', 'telemetry', 'tracing.ts')),
    );
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join(DIR, 'check.ts')],
      { cwd: ROOT, timeout: 30_000 },
    );
    // ConsoleSpanExporter prints each finished span.
    expect(stdout).to.contain("name: 'readme check'");
    const carried = JSON.parse(stdout.split('CARRIED ')[1]!) as {
      context: { traceparent: string };
    };
    const traceId = /traceId: '([0-9a-f]{32})'/.exec(stdout)?.[1];
    expect(carried.context.traceparent).to.match(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
  });
});
