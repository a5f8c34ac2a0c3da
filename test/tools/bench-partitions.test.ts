/**
 * `onceq bench --partitions` (`npm run bench:partitions`), run as the README documents it but at a
 * tiny size: it fills both shapes, measures every figure, migrates the old shape in place, prints
 * the table and the JSON line, exits on its own, and leaves no schema behind. Nothing here
 * asserts a figure's size: the machine is shared.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { spawnChild } from '../../tools/support/child.js';
import { createDb } from '../../src/db/create-db.js';
import { TEST_DATABASE_URL } from '../support/env.js';
import type { PartitionsBenchResult } from '../../tools/bench/partitions.js';

describe('tools: bench --partitions', function () {
  this.timeout(120_000);

  it('measures both shapes at a tiny size and drops its schemas', async () => {
    const child = spawnChild({
      name: 'bench-partitions',
      command: process.execPath,
      args: [
        '--import',
        'tsx',
        'tools/cli.ts',
        'bench',
        '--partitions',
        '--rows',
        '3000',
        '--days',
        '3',
        '--runs',
        '1',
        '--inserts',
        '200',
      ],
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        DATABASE_URL: TEST_DATABASE_URL,
      },
    });
    const exit = await child.exited;
    expect(exit, child.tail()).to.deep.equal({ code: 0, signal: null });
    const line = child
      .stdout()
      .split('\n')
      .find((l) => l.startsWith('{"bench":"partitions"'));
    expect(line, child.tail()).to.be.a('string');
    const result = JSON.parse(line!) as PartitionsBenchResult;
    expect(result).to.include({ rows: 3000, days: 3, rounds: 1 });
    for (const shape of [result.before, result.after]) {
      expect(shape.inboxRowsPerSec).to.be.greaterThan(0);
      expect(shape.acceptRowsPerSec).to.be.greaterThan(0);
      expect(shape.lookupMicros).to.be.greaterThan(0);
      expect(shape.pruneDaySec).to.be.greaterThan(0);
    }
    // The old shape's rows, less the day pruned, plus what the round inserted.
    expect(result.migratedRows).to.equal(2 * (3000 - 1000 + 200));
    expect(child.stdout()).to.match(/prune one day/);

    const db = createDb({ url: TEST_DATABASE_URL, poolSize: 1 });
    try {
      const { rows } = await sql<{ n: string }>`
        select count(*)::text as n from pg_namespace where nspname like 'bench_parts_%'`.execute(
        db,
      );
      expect(rows[0]!.n).to.equal('0');
    } finally {
      await db.destroy();
    }
  });
});
