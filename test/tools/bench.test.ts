/**
 * The bench's figures and options, run for real with a handful of jobs: graphile-batched,
 * onceq-dup-only, a group-commit variant and the concurrency sweep land in the JSON with positive
 * rates and their ratios, and the sweep's chart is an SVG naming both series. The bench runs as
 * the CLI runs it, in a child process that must exit on its own: a runner, worker or pool left
 * open keeps it alive and fails the test at its bound. Nothing here asserts a rate or a ratio's
 * size: the machine is shared.
 */
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnChild } from '../../tools/support/child.js';
import { parseGroupVariants, SWEEP_CONCURRENCY, type Figure } from '../../tools/bench/bench.js';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from '../support/env.js';

describe('tools: bench', function () {
  this.timeout(180_000);
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'onceq-bench-test-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('runs the new figures, a variant and the sweep, writes them to the JSON and the chart', async () => {
    const json = join(dir, 'bench.json');
    const chart = join(dir, 'charts', 'sweep.svg');
    const child = spawnChild({
      name: 'bench',
      command: process.execPath,
      args: [
        '--import',
        'tsx',
        'tools/cli.ts',
        'bench',
        '--jobs',
        '30',
        '--runs',
        '1',
        '--concurrency',
        '4',
        '--only',
        'bullmq-noop,graphile-batched,onceq-insert,onceq-dup-only',
        '--group-variants',
        'savepoints:1:5',
        '--sweep',
        '--chart',
        chart,
        '--json',
        json,
      ],
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        DATABASE_URL: TEST_DATABASE_URL,
        REDIS_URL: TEST_REDIS_URL,
      },
    });
    const exit = await child.exited;
    expect(exit, child.tail()).to.deep.equal({ code: 0, signal: null });

    const report = JSON.parse(readFileSync(json, 'utf8')) as {
      figures: Figure[];
      ratios: Record<string, number>;
      groupVariants?: string[];
      sweep?: { concurrency: number[]; chart: string };
    };
    const byName = new Map(report.figures.map((f) => [f.name, f]));
    const sweepNames = SWEEP_CONCURRENCY.flatMap((c) => [
      `bullmq-insert@c${c}`,
      `onceq-insert@c${c}`,
    ]);
    const expected = [
      'bullmq-noop',
      'graphile-batched',
      'onceq-insert',
      'onceq-dup-only',
      'onceq-insert[savepoints:1:5]',
      'onceq-dup-only[savepoints:1:5]',
      ...sweepNames,
    ];
    expect([...byName.keys()]).to.have.members(expected);
    for (const name of expected) {
      const f = byName.get(name)!;
      expect(f.jobsPerSecond, name).to.be.greaterThan(0);
      expect(f.jobs, name).to.equal(30);
      expect(f.runs, name).to.equal(1);
    }
    expect(byName.get('graphile-batched')!.p99Ms).to.be.greaterThan(0);
    expect(byName.get('onceq-insert[savepoints:1:5]')!.groupCommit).to.equal('savepoints:1:5');
    for (const c of SWEEP_CONCURRENCY) {
      expect(byName.get(`onceq-insert@c${c}`)).to.include({
        concurrency: c,
        sweepOf: 'onceq-insert',
      });
    }
    for (const ratio of [
      'onceq-insert / graphile-batched',
      'onceq-dup-only / onceq-insert',
      'onceq-dup-only / bullmq-noop',
      'onceq-insert[savepoints:1:5] / onceq-insert',
      'onceq-insert@c50 / bullmq-insert@c50',
    ]) {
      expect(report.ratios[ratio], ratio).to.be.greaterThan(0);
    }
    expect(report.groupVariants).to.deep.equal(['savepoints:1:5']);
    expect(report.sweep).to.deep.equal({ concurrency: [...SWEEP_CONCURRENCY], chart });

    const svg = readFileSync(chart, 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).to.equal(true);
    expect(svg.trimEnd().endsWith('</svg>')).to.equal(true);
    expect(svg).to.include('>bullmq-insert<');
    expect(svg).to.include('>onceq-insert<');
    expect(child.stdout()).to.include('ratio onceq-insert / graphile-batched:');
  });

  it('reads --group-variants as mode[:maxGroups[:maxSize]] and refuses anything else', () => {
    expect(parseGroupVariants(undefined)).to.deep.equal([]);
    expect(parseGroupVariants('off, on, on:4:25, savepoints:2')).to.deep.equal([
      { spec: 'off', groupCommit: false },
      { spec: 'on', groupCommit: { savepoints: false } },
      { spec: 'on:4:25', groupCommit: { savepoints: false, maxGroups: 4, maxSize: 25 } },
      { spec: 'savepoints:2', groupCommit: { savepoints: true, maxGroups: 2 } },
    ]);
    for (const bad of ['sp:2:50', 'on:0:50', 'on:2:x', 'off:2', 'on:1:2:3']) {
      expect(() => parseGroupVariants(bad), bad).to.throw(/--group-variants/);
    }
  });
});
