/**
 * Short chaos campaigns against the real thing, one per mode: the API and three workers as child
 * processes, every fault kind of the mode at least twice in about a minute, then the checker.
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
  // Four fault kinds fit twice each in less time than six: npm test stays near ten minutes.
  const seconds = backend === 'redis' ? 60 : 40;

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
