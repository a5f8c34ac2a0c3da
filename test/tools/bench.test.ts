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
import { spawnChild, type Child } from '../../tools/support/child.js';
import {
  isChosen,
  parseGroupVariants,
  SWEEP_CONCURRENCY,
  type Figure,
} from '../../tools/bench/bench.js';
import { WORKER_PROCESSES } from '../../tools/bench/worker-processes.js';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from '../support/env.js';

describe('tools: bench', function () {
  this.timeout(180_000);
  let dir: string;

  /** The bench child of the test running now: ended in the after-hook if a test timed out. */
  let running: Child | undefined;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'onceq-bench-test-'));
  });
  afterEach(async () => {
    await running?.destroy();
    running = undefined;
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
    running = child;
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

  it('runs onceq worker processes on the single Redis and on a cluster, with commits and CPU', async () => {
    const json = join(dir, 'workers.json');
    const chart = join(dir, 'charts', 'workers.svg');
    const child = spawnChild({
      name: 'bench',
      command: process.execPath,
      args: [
        '--import',
        'tsx',
        'tools/cli.ts',
        'bench',
        '--jobs',
        '200',
        '--runs',
        '1',
        '--concurrency',
        '10',
        '--cases',
        'workers-1,workers-2,cluster-workers-1,cluster-workers-2,pg-commits',
        '--workers-chart',
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
    running = child;
    const exit = await child.exited;
    expect(exit, child.tail()).to.deep.equal({ code: 0, signal: null });

    const report = JSON.parse(readFileSync(json, 'utf8')) as {
      figures: Figure[];
      ratios: Record<string, number>;
      workers?: { processes: number[]; command: string; chart?: string };
    };
    const byName = new Map(report.figures.map((f) => [f.name, f]));
    expect([...byName.keys()]).to.have.members([
      'workers-1',
      'cluster-workers-1',
      'workers-2',
      'cluster-workers-2',
      'pg-commits',
    ]);
    for (const [name, processes, redis] of [
      ['workers-1', 1, 'single'],
      ['workers-2', 2, 'single'],
      ['cluster-workers-1', 1, 'cluster'],
      ['cluster-workers-2', 2, 'cluster'],
    ] as const) {
      const f = byName.get(name)!;
      expect(f, name).to.include({ processes, redis, jobs: 200, runs: 1, concurrency: 10 });
      expect(f.jobsPerSecond, name).to.be.greaterThan(0);
      expect(f.p99Ms, name).to.be.greaterThan(0);
      // 200 messages need at least 200 / 50 group commits (the default group size): a count that
      // missed the workers' commits, or counted only the bench's polls, would not say so.
      expect(f.commitsPerSecond! * (200 / f.jobsPerSecond), name).to.be.at.least(4);
      expect(f.jobsPerCommit, name).to.be.greaterThan(0).and.at.most(50);
      expect(f.cpuCores!.redis, name).to.be.at.least(0);
      expect(f.cpuCores!.workers, name).to.be.greaterThan(0);
      expect(f.cpuCores!.postgres, name).to.be.greaterThan(0);
    }
    // One INSERT per transaction: PostgreSQL counted every one of them (the test database is
    // shared with other suites, whose commits may be counted too, so not at most).
    const ceiling = byName.get('pg-commits')!;
    expect(ceiling.jobsPerCommit).to.be.greaterThan(0).and.at.most(1.05);
    for (const ratio of [
      'workers-2 / workers-1',
      'cluster-workers-2 / cluster-workers-1',
      'cluster-workers-1 / workers-1',
      'cluster-workers-2 / workers-2',
      'workers-2 commits/s / pg-commits',
    ]) {
      expect(report.ratios[ratio], ratio).to.be.greaterThan(0);
    }
    expect(report.workers).to.deep.include({ processes: [...WORKER_PROCESSES], chart });
    expect(report.workers!.command).to.be.oneOf(['compiled', 'sources']);
    const svg = readFileSync(chart, 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).to.equal(true);
    expect(svg).to.include('>single Redis<');
    expect(svg).to.include('>Redis Cluster (3+3)<');
    expect(child.stdout()).to.include('ratio cluster-workers-1 / workers-1:');
    expect(child.stdout()).to.match(/jobs\/commit +cpu pg +cpu redis +cpu workers +cpu machine/);
  });

  it('chooses figures by --only (exact names) and by --cases (name, part of a name, family)', () => {
    const workers = ['workers-1', 'cluster-workers-4'];
    for (const name of workers)
      expect(isChosen(name, 'workers', undefined, ['workers'])).to.equal(true);
    expect(isChosen('pg-commits', 'workers', undefined, ['workers'])).to.equal(true);
    expect(isChosen('onceq-insert', undefined, undefined, ['workers'])).to.equal(false);
    expect(isChosen('cluster-workers-2', 'workers', undefined, ['cluster'])).to.equal(true);
    expect(isChosen('workers-2', 'workers', undefined, ['cluster'])).to.equal(false);
    expect(isChosen('api-jobs', undefined, undefined, ['api'])).to.equal(true);
    expect(isChosen('workers-1', 'workers', ['workers'], undefined)).to.equal(false);
    expect(isChosen('onceq-insert', undefined, ['onceq-insert'], ['workers'])).to.equal(true);
    expect(isChosen('dlq-replay', undefined, undefined, undefined)).to.equal(true);
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
