/**
 * `onceq soak` as a developer runs it (the tools CLI in a child process, the compiled `onceq start`
 * under it), small: every message applied, the samples and the chart written, and with a short
 * token ttl every token and completed job gone from Redis at the end.
 */
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { ensureBuilt, ROOT } from '../support/build.js';
import { spawnChild } from '../../tools/support/child.js';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from '../support/env.js';
import type { SoakReport } from '../../tools/soak/soak.js';

describe('tools: onceq soak', function () {
  this.timeout(180_000);
  let dir: string;
  before(async () => {
    await ensureBuilt();
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-soak-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('sends every message through one onceq start, samples it, and Redis gives the memory back', async () => {
    const json = path.join(dir, 'soak.json');
    const chart = path.join(dir, 'soak.svg');
    const child = spawnChild({
      name: 'soak',
      command: process.execPath,
      args: [
        '--import',
        'tsx',
        path.join(ROOT, 'tools', 'cli.ts'),
        'soak',
        '--messages',
        '400',
        '--connections',
        '10',
        '--sample',
        '1s',
        '--token-ttl',
        '2s',
        '--json',
        json,
        '--chart',
        chart,
      ],
      env: {
        PATH: process.env.PATH ?? '',
        REDIS_URL: TEST_REDIS_URL,
        DATABASE_URL: TEST_DATABASE_URL,
      },
    });
    const exit = await child.exited;
    expect(exit.code, child.output()).to.equal(0);
    const report = JSON.parse(readFileSync(json, 'utf8')) as SoakReport;
    expect(report.messages).to.equal(400);
    const last = report.samples.at(-1)!;
    expect(last.applied, 'every message applied once').to.equal(400);
    expect(report.samples.every((s) => s.rssMb > 0 && s.redisMb > 0)).to.equal(true);
    expect(report.redis.tokensLeft, 'token keys left').to.equal(0);
    expect(report.redis.completedJobsLeft, 'completed jobs left').to.equal(0);
    expect(report.redis.tokenKeyBytes).to.be.within(1, 400);
    const svg = readFileSync(chart, 'utf8');
    expect(svg.startsWith('<svg')).to.equal(true);
    expect(svg).to.contain('onceq start RSS').and.to.contain('Redis used_memory');
    expect(child.stdout()).to.contain('Redis bytes held per message');
  });
});
