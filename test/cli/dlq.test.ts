/**
 * `onceq dlq`: the real CLI in child processes against real Redis and PostgreSQL. Bad input gets
 * one clear line and exit code 1 with nothing touched; two `replay --all` runs at once over the
 * same 500 dead letters still give one effect per message; a replay killed midway loses none.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestStack, type TestStack } from '../support/stack.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { waitFor } from '../support/ledger.js';
import { createFixtureTables, effectCounts, fixtureJobs, FIXTURE_QUEUE } from '../fixtures/jobs.js';
import { findDeadLetter, upsertDeadLetter } from '../../src/db/dead-letters.repository.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { generateToken } from '../../src/core/token.js';
import { jobIdFor } from '../../src/core/message.js';
import { replayDeadLetters, type ReplaySummary } from '../../src/worker/dead-letter-replay.js';

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

  it('a replay killed midway loses no letter: the reconciler and a second replay apply each once', async () => {
    // Enough letters that the replay is still running when its first jobs show up.
    const count = 6_000;
    const base = BigInt(firstSnowflakeAt(Date.now()));
    const ids = Array.from({ length: count }, (_, i) => String(base + BigInt(i)));
    const tokens = ids.map(() => generateToken());
    // Accepted, then dead-lettered with a visible copy each, as the API and the pipeline leave them.
    await sql`
      insert into accepted_messages (message_id, principal, token, fingerprint, queue, job_name, data, job_id)
      select m, 'test', t, 'f', ${FIXTURE_QUEUE}, 'fixture.bump', jsonb_build_object('n', 1), 'm-' || m::text
      from unnest(${ids}::bigint[], ${tokens}::text[]) as u(m, t)`.execute(stack.db);
    await sql`
      insert into dead_letters (message_id, queue, job_name, job_id, data, token, reason, error, attempts)
      select m, ${FIXTURE_QUEUE}, 'fixture.bump', 'm-' || m::text, jsonb_build_object('n', 1), t,
             'exhausted', 'boom', 3
      from unnest(${ids}::bigint[], ${tokens}::text[]) as u(m, t)`.execute(stack.db);
    const dlqQueue = stack.producer.queue(`${FIXTURE_QUEUE}.dlq`);
    for (let i = 0; i < count; i += 1_000) {
      await dlqQueue.addBulk(
        ids.slice(i, i + 1_000).map((m, j) => ({
          name: 'fixture.bump',
          data: { messageId: m, token: tokens[i + j], data: { n: 1 } },
          opts: { jobId: jobIdFor(m) },
        })),
      );
    }

    const queue = stack.producer.queue(FIXTURE_QUEUE);
    const child = dlq('replay', '--all', '--json');
    await waitFor('the first replayed jobs', async () => (await queue.count()) > 0, 30_000, 2);
    child.child.kill('SIGKILL');
    expect((await child.exited).signal).to.equal('SIGKILL');
    const { rows } = await sql<{ pending: string; claimed: string }>`
      select count(*) filter (where replayed_at is null)::text as pending,
             count(*) filter (where replayed_at is not null)::text as claimed
      from dead_letters`.execute(stack.db);
    const sent = await queue.count();
    // Claimed (marked replayed) but never sent: the letters a crash leaves to the reconciler.
    const stranded = Number(rows[0]!.claimed) - sent;
    expect(Number(rows[0]!.pending) + stranded, 'killed before the replay ended').to.be.above(0);

    const worker = await stack.startWorker({
      concurrency: 20,
      // Its own passes start at a random point of the hour: in practice only runOnce runs.
      reconciler: { intervalMs: 3_600_000, graceMs: 1 },
    });
    const reconciled = await worker.reconciler!.runOnce();
    expect(reconciled.reenqueued).to.equal(stranded);
    const second = await replayDeadLetters({
      db: stack.db,
      backend: stack.backend,
    });
    expect(second).to.include({ replayed: Number(rows[0]!.pending), failed: 0 });
    const counts = await waitFor(
      `${count} effects`,
      async () => {
        const c = await effectCounts(stack.db);
        return c.size === count ? c : undefined;
      },
      60_000,
    );
    expect([...counts.values()].filter((n) => n !== 1)).to.deep.equal([]);
  });
});
