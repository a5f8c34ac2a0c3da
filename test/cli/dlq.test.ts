/**
 * `onceq dlq`: the real CLI in child processes against real Redis and PostgreSQL. Bad input gets
 * one clear line and exit code 1 with nothing touched; two `replay --all` runs at once over the
 * same 500 dead letters still give one effect per message.
 */
import { expect } from 'chai';
import { createTestStack, type TestStack } from '../support/stack.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { waitFor } from '../support/ledger.js';
import { createFixtureTables, effectCounts, fixtureJobs, FIXTURE_QUEUE } from '../fixtures/jobs.js';
import { findDeadLetter, upsertDeadLetter } from '../../src/db/dead-letters.repository.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { generateToken } from '../../src/core/token.js';
import { jobIdFor } from '../../src/core/message.js';
import type { ReplaySummary } from '../../src/worker/dead-letter-replay.js';

describe('cli: onceq dlq', function () {
  this.timeout(90_000);
  let stack: TestStack;
  const children: WorkerChild[] = [];
  beforeEach(async () => {
    stack = await createTestStack('dlq-cli', { jobs: fixtureJobs });
    await createFixtureTables(stack.db);
  });
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.destroy()));
    await stack.close();
  });

  function dlq(...args: string[]): WorkerChild {
    const child = spawnWorker({
      schema: stack.schema,
      prefix: stack.prefix,
      args: ['dlq', ...args],
      env: { LOG_LEVEL: 'warn' },
    });
    children.push(child);
    return child;
  }

  async function run(...args: string[]) {
    const child = dlq(...args);
    const { code } = await child.exited;
    return { code, stdout: child.stdout(), stderr: child.stderr() };
  }

  /** Dead letters of `count` fixture.bump messages, as the pipeline writes them. */
  async function seed(count: number, reason: 'exhausted' | 'invalid' = 'exhausted') {
    const base = BigInt(firstSnowflakeAt(Date.now()));
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const messageId = String(base + BigInt(i) + (reason === 'invalid' ? 1_000_000n : 0n));
      ids.push(messageId);
      await upsertDeadLetter(stack.db, {
        messageId,
        queue: FIXTURE_QUEUE,
        jobName: 'fixture.bump',
        jobId: jobIdFor(messageId),
        data: { n: i },
        token: generateToken(),
        reason,
        error: 'boom',
        stack: 'Error: boom\n    at test',
        attempts: 3,
        options: {},
        enqueuedAt: new Date(),
      });
    }
    return ids;
  }

  it('refuses bad input with one line and exit code 1, touching nothing', async () => {
    const [known] = await seed(1);
    const cases: [string[], RegExp][] = [
      [['replay'], /name the messages to replay, or pass --all/],
      [['replay', known!, '--all'], /not both/],
      [
        ['replay', known!, '999', 'abc'],
        /no dead letter for messages 999, abc.*nothing was replayed/,
      ],
      [['replay', '--all', '--reason', 'bogus'], /--reason bogus: expected one of exhausted/],
      [['list', '--limit', '0'], /--limit 0: expected an integer from 1 to 10000/],
      [['list', '--limit', 'ten'], /--limit ten/],
      [['list', '--queue', 'bad:queue'], /--queue bad:queue/],
      [['show', '999'], /no dead letter for message 999/],
      [['show', 'not-an-id'], /no dead letter for message not-an-id/],
      [['purge', '--older-than', 'soon'], /--older-than soon: expected a duration/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(...args)));
    results.forEach((r, i) => {
      const [args, pattern] = cases[i]!;
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.equal(1);
      expect(r.stderr, args.join(' ')).to.match(pattern);
      expect(r.stderr.trim().split('\n'), `one line for ${args.join(' ')}`).to.have.length(1);
    });
    const row = (await findDeadLetter(stack.db, known!))!;
    expect(row.replayed_at).to.equal(null);
    expect(row.purged_at).to.equal(null);
    expect(await stack.producer.queue(FIXTURE_QUEUE).count()).to.equal(0);
  });

  it('lists, shows, dry-runs and purges', async () => {
    const ids = await seed(3);
    const [invalid] = await seed(1, 'invalid');
    const listed = await run('list', '--json');
    expect(listed.code, listed.stderr).to.equal(0);
    const rows = listed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(rows.map((r) => r.messageId)).to.deep.equal([...ids, invalid]);
    expect(rows[0]).to.include({ queue: FIXTURE_QUEUE, name: 'fixture.bump', reason: 'exhausted' });

    const human = await run('list', '--reason', 'invalid');
    expect(human.stdout).to.contain(invalid).and.contain('1 shown; 4 pending in all');

    const shown = await run('show', ids[0]!);
    expect(JSON.parse(shown.stdout)).to.deep.include({ messageId: ids[0], data: { n: 0 } });

    const dry = await run('replay', '--all', '--dry-run', '--json');
    expect(JSON.parse(dry.stdout) as ReplaySummary).to.include({ dryRun: true, replayed: 4 });
    expect((await findDeadLetter(stack.db, ids[0]!))!.replayed_at).to.equal(null);

    const young = await run('purge', '--older-than', '1h', '--json');
    expect(JSON.parse(young.stdout)).to.deep.equal({ purged: 0 });
    const purged = await run('purge', '--reason', 'invalid');
    expect(purged.stdout.trim()).to.equal('purged 1');
    expect((await findDeadLetter(stack.db, invalid!))!.purged_at).to.be.instanceOf(Date);
    const after = await run('list', '--json');
    expect(after.stdout.trim().split('\n')).to.have.length(3);
  });

  it('two concurrent replays of the same 500 dead letters give one effect each', async () => {
    const ids = await seed(500);
    await stack.startWorker({ concurrency: 20 });
    const [a, b] = [dlq('replay', '--all', '--json'), dlq('replay', '--all', '--json')];
    const [ea, eb] = await Promise.all([a.exited, b.exited]);
    expect(ea.code, a.stderr()).to.equal(0);
    expect(eb.code, b.stderr()).to.equal(0);
    const sa = JSON.parse(a.stdout()) as ReplaySummary;
    const sb = JSON.parse(b.stdout()) as ReplaySummary;
    expect(sa.failed + sb.failed).to.equal(0);
    expect(sa.replayed + sa.alreadyApplied + sb.replayed + sb.alreadyApplied).to.equal(500);
    const counts = await waitFor(
      '500 effects',
      async () => {
        const c = await effectCounts(stack.db);
        return c.size === 500 ? c : undefined;
      },
      60_000,
    );
    expect([...counts.keys()].sort()).to.deep.equal([...ids].sort());
    expect([...counts.values()].filter((n) => n !== 1)).to.deep.equal([]);
    // And a third replay, after both, finds nothing pending.
    const third = await run('replay', '--all', '--json');
    expect(JSON.parse(third.stdout) as ReplaySummary).to.include({ total: 0, replayed: 0 });
  });
});
