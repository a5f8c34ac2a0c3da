/**
 * Short chaos campaigns against the real thing, one per mode: the API and three workers as child
 * processes, every fault kind of the mode at least twice in well under a minute, then the checker.
 * In Redis mode the children share a private redis-server; in PostgreSQL-only mode there is no
 * Redis at all (no REDIS_URL, BullMQ on its PostgreSQL backend, tokens in a table), so the Redis
 * faults are left out and the checker holds the stores to durability. Slow by nature (about two
 * minutes each with start-up and drain); nothing in them depends on timing beyond generous bounds.
 */
import { expect } from 'chai';
import { readFile, rm } from 'node:fs/promises';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { runCampaign, type CampaignReport } from '../../tools/chaos/run.js';
import { formatReport } from '../../tools/chaos/report.js';
import { readHistory } from '../../tools/chaos/history.js';
import { faultKindsFor } from '../../tools/chaos/schedule.js';
import { createDb } from '../../src/db/create-db.js';
import type { BackendKind } from '../../src/queues/backend.js';
import { TEST_DATABASE_URL } from '../support/env.js';

/** Seeds fixed per mode, so a failure can be re-run with the same schedule. */
const SEEDS: Record<BackendKind, number> = { redis: 20_261_128, postgres: 20_261_201 };

for (const backend of ['redis', 'postgres'] as const) {
  const faults = faultKindsFor(backend);
  const mode = backend === 'redis' ? 'Redis mode' : 'PostgreSQL-only mode';
  // Every kind twice in well under a minute (about 2.8 s between faults, so they overlap):
  // npm test stays near ten minutes. `npm run chaos` runs the long ones.
  const seconds = backend === 'redis' ? 40 : 30;

  describe(`chaos campaign, ${mode} (${seconds} s, ${faults.join(', ')})`, function () {
    this.timeout(420_000);
    const dir = mkdtempSync(path.join(tmpdir(), `onceq-chaos-${backend}-`));
    let report: CampaignReport | undefined;

    after(async () => {
      // Keep the evidence of a failed run; remove it otherwise.
      if (report?.valid) await rm(dir, { recursive: true, force: true });
      else process.stderr.write(`chaos campaign files kept in ${dir}\n`);
    });

    it('injects every fault of the mode at least twice and the checker finds the run valid', async () => {
      report = await runCampaign({
        seed: SEEDS[backend],
        durationMs: seconds * 1_000,
        workers: 3,
        rate: 15,
        faults,
        backend,
        historyFile: path.join(dir, 'history.jsonl'),
        databaseUrl: TEST_DATABASE_URL,
        redisServer: process.env.TEST_REDIS_SERVER ?? 'redis-server',
        drainTimeoutMs: 120_000,
        keepSchema: 'invalid',
      });
      const text = formatReport(report);
      for (const kind of faults) {
        expect(report.injected[kind], `${kind} injected\n${text}`).to.be.at.least(2);
      }
      expect(report.backend).to.equal(backend);
      expect(report.result.accepted, text).to.be.above(100);
      expect(report.result.replays.checked, text).to.be.above(0);
      expect(report.result.poison.accepted + report.result.poison.rawInjected, text).to.be.above(0);
      expect(report.result.lost, text).to.deep.equal([]);
      expect(report.result.duplicated, text).to.deep.equal([]);
      expect(report.result.unexpected, text).to.deep.equal([]);
      expect(report.result.replays.mismatched, text).to.deep.equal([]);
      expect(report.result.invariants.violations, text).to.deep.equal([]);
      // Every accepted message's token was read back from the token store.
      expect(report.result.tokens?.checked, text).to.equal(report.result.accepted);
      expect(report.result.tokens?.anomalies, text).to.deep.equal([]);
      expect(report.result.vanished, text).to.deep.equal([]);
      expect(report.durableStores, text).to.equal(backend === 'postgres');
      expect(report.valid, text).to.equal(true);

      // The history on disk is what the checker read: every request with its answer.
      const history = await readHistory(report.historyFile);
      expect(history[0]!.type).to.equal('meta');
      const requests = history.filter((e) => e.type === 'request');
      expect(requests.length).to.equal(report.result.requests.total);
      expect(history.filter((e) => e.type === 'fault' && e.phase === 'heal')).to.have.length(
        Object.values(report.injected).reduce((a, b) => a + b, 0),
      );
      // Every child said which mode it runs in; none ran in the other.
      const output = await readFile(report.logFile, 'utf8');
      const [said, other] =
        backend === 'redis'
          ? ['Redis mode: queues and tokens in Redis', 'PostgreSQL-only mode']
          : ['PostgreSQL-only mode (no REDIS_URL)', 'Redis mode'];
      expect(output, 'mode line').to.include(said);
      expect(output, 'the other mode').not.to.include(other);
      if (backend === 'postgres') {
        // No Redis was started, and no child was told of one.
        expect(history.some((e) => e.type === 'process' && e.name === 'redis')).to.equal(false);
        expect((history[0] as { options: Record<string, unknown> }).options).not.to.have.property(
          'redisPort',
        );
      }

      // A valid run leaves nothing behind: onceq's schema and, without Redis, BullMQ's.
      const db = createDb({ url: TEST_DATABASE_URL, poolSize: 1, applicationName: 'onceq-test' });
      try {
        const left = await sql<{ name: string }>`
          select nspname as name from pg_namespace
          where nspname in (${report.schema}, ${report.prefix})`.execute(db);
        expect(left.rows).to.deep.equal([]);
      } finally {
        await db.destroy();
      }
    });
  });
}

/**
 * The same campaign on a Redis Cluster of its own (3 masters, 3 replicas), short: a proof that
 * `redisCluster` runs the real processes on `REDIS_CLUSTER_NODES` and that `redis-failover`, a
 * promoted replica that lacks writes its master had acknowledged, leaves the run valid. The full
 * cluster campaign (every fault, 60 s and more) is `npm run chaos:cluster`, documented in the
 * README with its last result: npm test has no minute to spare for it.
 */
describe('chaos campaign on a Redis Cluster (20 s, redis-failover, kill)', function () {
  this.timeout(300_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'onceq-chaos-cluster-'));
  let report: CampaignReport | undefined;

  after(async () => {
    if (report?.valid) await rm(dir, { recursive: true, force: true });
    else process.stderr.write(`chaos campaign files kept in ${dir}\n`);
  });

  it('fails masters over with acknowledged writes lost, and the checker finds the run valid', async () => {
    report = await runCampaign({
      seed: 20_261_205,
      durationMs: 20_000,
      workers: 2,
      rate: 15,
      faults: ['redis-failover', 'kill'],
      backend: 'redis',
      redisCluster: true,
      historyFile: path.join(dir, 'history.jsonl'),
      databaseUrl: TEST_DATABASE_URL,
      drainTimeoutMs: 120_000,
      keepSchema: 'invalid',
    });
    const text = formatReport(report);
    expect(report.redisCluster).to.equal(true);
    expect(report.injected['redis-failover'], text).to.be.at.least(1);
    expect(report.failovers, text).to.have.length(report.injected['redis-failover']);
    // The lost-write path was taken: the promoted replica lacked part of what the master had
    // answered (bytes of its replication stream, far more than the odd 14-byte PING).
    expect(Math.max(...report.failovers.map((f) => f.lostBytes)), text).to.be.above(100);
    for (const f of report.failovers) expect(f.promoted, text).not.to.equal(f.master);
    expect(report.result.accepted, text).to.be.above(50);
    expect(report.result.lost, text).to.deep.equal([]);
    expect(report.result.duplicated, text).to.deep.equal([]);
    expect(report.result.unexpected, text).to.deep.equal([]);
    expect(report.result.replays.mismatched, text).to.deep.equal([]);
    expect(report.result.invariants.violations, text).to.deep.equal([]);
    expect(report.result.tokens?.checked, text).to.equal(report.result.accepted);
    expect(report.durableStores, text).to.equal(false);
    expect(report.valid, text).to.equal(true);
    expect(text).to.match(/^chaos campaign seed 20261205, Redis mode on a Redis Cluster: VALID/);

    const history = await readHistory(report.historyFile);
    const meta = history[0] as { options: Record<string, unknown> };
    expect(meta.options)
      .to.have.property('redisCluster')
      .that.matches(/^(127\.0\.0\.1:\d+,){5}127\.0\.0\.1:\d+$/);
    expect(meta.options).not.to.have.property('redisPort');
    const heals = history.filter(
      (e) => e.type === 'fault' && e.phase === 'heal' && e.kind === 'redis-failover',
    ) as { detail?: string }[];
    expect(heals.map((e) => e.detail).join('\n'), text).to.match(
      /promoted .* bytes of acknowledged writes lost; \d+ rejoined as a replica/,
    );
    // Every child ran on the cluster, none on a single Redis.
    const output = await readFile(report.logFile, 'utf8');
    expect(output).to.include(
      'Redis mode on a Redis Cluster (REDIS_CLUSTER_NODES, 6 startup nodes)',
    );
    expect(output).not.to.include('Redis mode: queues and tokens in Redis');
  });
});
