/**
 * `npm run chaos -- --backend postgres` as the README documents it, through the compiled bin in
 * a child process: a short PostgreSQL-only campaign (no redis-server, one kill) that ends valid
 * with exit 0, and the refusals of the flags in one line each, exit 2, before anything starts
 * (`--redis-cluster` with postgres, `redis-failover` on a single Redis).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { ensureBuilt, BIN } from '../support/build.js';
import { TEST_DATABASE_URL } from '../support/env.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('cli: onceq chaos --backend', function () {
  this.timeout(120_000);
  let dir: string;

  before(async () => {
    await ensureBuilt();
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-chaos-cli-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function chaos(...args: string[]): Promise<Run> {
    return promisify(execFile)(process.execPath, [BIN, 'chaos', ...args], {
      cwd: dir,
      // No REDIS_URL: PostgreSQL-only mode needs none, and its campaign refuses one.
      env: { PATH: process.env.PATH ?? '', DATABASE_URL: TEST_DATABASE_URL },
      timeout: 110_000,
    }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (err: { code?: number; stdout?: string; stderr?: string }) => ({
        code: typeof err.code === 'number' ? err.code : null,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? '',
      }),
    );
  }

  it('refuses a Redis fault and an unknown backend in one line each, exit 2', async () => {
    const redisFault = await chaos('--backend', 'postgres', '--faults', 'kill,redis-flush');
    expect(redisFault.code).to.equal(2);
    expect(redisFault.stderr.trim().split('\n')).to.have.length(1);
    expect(redisFault.stderr).to.match(/^onceq chaos: --faults: .*redis-flush/);
    const unknown = await chaos('--backend', 'mongo');
    expect(unknown.code).to.equal(2);
    expect(unknown.stderr).to.match(/^onceq chaos: --backend mongo: expected redis or postgres/);
  });

  it('refuses --redis-cluster with postgres, and redis-failover without a cluster, exit 2', async () => {
    const pgCluster = await chaos('--backend', 'postgres', '--redis-cluster', '--faults', 'kill');
    expect(pgCluster.code).to.equal(2);
    expect(pgCluster.stderr).to.match(
      /^onceq chaos: --redis-cluster: the postgres backend runs without Redis\n$/,
    );
    const single = await chaos('--faults', 'kill,redis-failover');
    expect(single.code).to.equal(2);
    expect(single.stderr.trim().split('\n')).to.have.length(1);
    expect(single.stderr).to.match(
      /^onceq chaos: --faults: fault kind redis-failover needs a Redis Cluster \(--redis-cluster\)/,
    );
  });

  it('runs a short PostgreSQL-only campaign and finds it valid, exit 0', async () => {
    const history = path.join(dir, 'history.jsonl');
    const run = await chaos(
      '--backend',
      'postgres',
      '--seed',
      '31',
      '--duration',
      '6s',
      '--workers',
      '1',
      '--rate',
      '5',
      '--faults',
      'kill',
      '--keep-schema',
      'never',
      '--history',
      history,
    );
    expect(run.code, run.stderr.slice(-2_000)).to.equal(0);
    const output = run.stdout + run.stderr;
    expect(output).to.match(/chaos campaign seed 31, PostgreSQL-only mode: VALID\n/);
    expect(output).not.to.match(/redis-server/);
    // The history records the requests it sent.
    expect(readFileSync(history, 'utf8').split('\n').filter(Boolean).length).to.be.greaterThan(5);
  });
});
