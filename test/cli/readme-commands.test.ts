/**
 * Every command the README documents, run as a user runs it: the compiled executable
 * (`node bin/onceq.js`, also through `npx onceq` and `npm run onceq --`) in a child process,
 * against the real Redis and PostgreSQL, configured by the documented environment variables only,
 * with its output and exit code checked. A README command without a case here is a defect.
 *
 * The cases build on each other in order, as the README's walk-through does: migrate, keys,
 * enqueue, a worker that applies what was enqueued, dead letters, the API, `start` with the
 * Quick start's requests, and the demo. One schema and one key prefix for the whole file.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import { createDb, type Db } from '../../src/db/create-db.js';
import { upsertDeadLetter } from '../../src/db/dead-letters.repository.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { jobIdFor } from '../../src/core/message.js';
import { generateToken } from '../../src/core/token.js';
import { closeRedis } from '../../src/redis/connection.js';
import {
  deletePrefix,
  testRedis,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
  uniqueName,
} from '../support/env.js';
import { ensureBuilt, ROOT } from '../support/build.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { waitFor } from '../support/ledger.js';

const API_KEY = /^oqk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/;
const TOKEN = /^oqt_[A-Za-z0-9_-]{32}$/;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface EnqueueAnswer {
  jobId: string;
  messageId: string;
  queue: string;
  name: string;
  token: string;
  state: string;
  replayed: boolean;
}

describe('cli: every command of the README, compiled, against the real services', function () {
  this.timeout(60_000);
  const schema = uniqueName('readme');
  const prefix = uniqueName('readme');
  const children: WorkerChild[] = [];
  const migrations = readdirSync(path.join(ROOT, 'migrations'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.replace(/\.ts$/, ''))
    .sort();
  /** The ledger example's, which `migrate latest` and `status` list after onceq's. */
  const ledgerMigrations = readdirSync(
    path.join(ROOT, 'src', 'jobs', 'examples', 'ledger', 'migrations'),
  )
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.replace(/\.ts$/, ''))
    .sort();
  let redis: Redis;
  let db: Db;
  let shopKey: string;
  let shopKeyId: string;
  let opened: EnqueueAnswer;

  /** The documented environment, and nothing else that onceq reads. */
  const env = (extra: Record<string, string> = {}) => ({
    ONCEQ_DB_SCHEMA: schema,
    ONCEQ_PREFIX: prefix,
    LOG_LEVEL: 'info',
    ...extra,
  });

  function spawn(args: string[], extra: Record<string, string> = {}): WorkerChild {
    const child = spawnWorker({ schema, prefix, args, env: env(extra), compiled: true });
    children.push(child);
    return child;
  }

  /** `node bin/onceq.js ARGS` to its end. */
  async function onceq(...args: string[]): Promise<Run> {
    const child = spawn(args);
    const { code } = await child.exited;
    return { code, stdout: child.stdout(), stderr: child.stderr() };
  }

  /** `npx onceq …` or `npm run onceq -- …`, as the README writes them. */
  async function viaNpm(command: 'npx' | 'npm', args: string[]): Promise<Run> {
    const { PATH, HOME } = process.env;
    const run = await promisify(execFile)(command, args, {
      cwd: ROOT,
      timeout: 50_000,
      env: {
        PATH,
        HOME,
        DATABASE_URL: TEST_DATABASE_URL,
        REDIS_URL: TEST_REDIS_URL,
        ...env({ LOG_LEVEL: 'warn' }),
      },
    }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (err: { code?: number; stdout?: string; stderr?: string }) => ({
        code: typeof err.code === 'number' ? err.code : null,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? '',
      }),
    );
    return run;
  }

  /** A long-running command, up once its log says `ready`. */
  async function serve(args: string[], ready: string[], extra: Record<string, string> = {}) {
    const child = spawn(args, { PORT: '0', ONCEQ_HOST: '127.0.0.1', ...extra });
    for (const line of ready) await child.waitForOutput(line, 45_000);
    const address = /"address":"(http:[^"]+)"/.exec(child.output())?.[1];
    return { child, address: address ?? '' };
  }

  /** SIGTERM, as a process manager stops it: exit 0. */
  async function stop(child: WorkerChild): Promise<void> {
    child.child.kill('SIGTERM');
    const exit = await child.exited;
    expect(exit, child.output()).to.deep.equal({ code: 0, signal: null });
  }

  function parseAnswer(run: Run): EnqueueAnswer {
    expect(run.code, run.stderr).to.equal(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines, run.stdout).to.have.length(1);
    return JSON.parse(lines[0]!) as EnqueueAnswer;
  }

  async function accountExists(id: string): Promise<boolean> {
    const { rows } = await sql<{ n: number }>`
      select count(*)::int as n from accounts where id = ${id}`.execute(db);
    return rows[0]!.n === 1;
  }

  before(async function () {
    this.timeout(150_000);
    await ensureBuilt();
    redis = testRedis();
    db = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 2, applicationName: 'onceq-test' });
  });

  after(async () => {
    await Promise.all(children.map((c) => c.destroy()));
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    await db.destroy();
  });

  it('onceq --help and onceq dlq --help list the commands', async () => {
    const help = await onceq('--help');
    expect(help.code).to.equal(0);
    for (const command of ['start', 'worker', 'api', 'keys', 'migrate', 'enqueue', 'dlq', 'demo']) {
      expect(help.stdout).to.match(new RegExp(`^\\s+${command}\\b`, 'm'));
    }
    const dlq = await onceq('dlq', '--help');
    expect(dlq.code).to.equal(0);
    for (const sub of ['list', 'show', 'replay', 'purge']) {
      expect(dlq.stdout).to.match(new RegExp(`^\\s+${sub}\\b`, 'm'));
    }
  });

  it('onceq migrate latest | status | down | (default) latest', async () => {
    const latest = await onceq('migrate', 'latest');
    expect(latest.code, latest.stderr).to.equal(0);
    const all = [...migrations, ...ledgerMigrations];
    expect(latest.stdout.trim().split('\n')).to.deep.equal(all.map((m) => `up   ${m}: Success`));

    const status = await onceq('migrate', 'status');
    expect(status.code, status.stderr).to.equal(0);
    const lines = status.stdout.trim().split('\n');
    expect(lines).to.have.length(all.length);
    lines.forEach((line, i) => expect(line).to.match(new RegExp(`^applied  ${all[i]}  \\d{4}-`)));

    // `down` undoes onceq's most recent; the ledger example's stay applied.
    const down = await onceq('migrate', 'down');
    expect(down.code, down.stderr).to.equal(0);
    expect(down.stdout.trim()).to.equal(`down ${migrations.at(-1)}: Success`);
    const after = (await onceq('migrate', 'status')).stdout.trim().split('\n');
    expect(after[migrations.length - 1]).to.equal(`pending  ${migrations.at(-1)}`);
    expect(after.at(-1)).to.match(new RegExp(`^applied  ${ledgerMigrations.at(-1)}  `));

    // `onceq migrate` alone is `latest`.
    const again = await onceq('migrate');
    expect(again.code, again.stderr).to.equal(0);
    expect(again.stdout.trim()).to.equal(`up   ${migrations.at(-1)}: Success`);
    expect((await onceq('migrate', 'latest')).stdout.trim()).to.equal('nothing to do');
  });

  it('onceq keys create [--admin] prints the key once on stdout; keys list [--all] [--json]; keys revoke ID', async () => {
    // As the Quick start writes it: KEY=$(npx onceq keys create --principal shop)
    const shop = await viaNpm('npx', ['onceq', 'keys', 'create', '--principal', 'shop']);
    expect(shop.code, shop.stderr).to.equal(0);
    expect(shop.stdout).to.match(/\n$/);
    shopKey = shop.stdout.trim();
    expect(shopKey).to.match(API_KEY);
    shopKeyId = shopKey.slice(4, 20);

    const ops = await onceq('keys', 'create', '--principal', 'ops', '--admin');
    expect(ops.code, ops.stderr).to.equal(0);
    expect(ops.stdout.trim()).to.match(API_KEY);
    const gone = await onceq('keys', 'create', '--principal', 'gone');
    const goneId = gone.stdout.trim().slice(4, 20);

    const list = await onceq('keys', 'list');
    expect(list.code, list.stderr).to.equal(0);
    expect(list.stdout).to.match(/^id\s+principal\s+admin\s+created\s+revoked$/m);
    expect(list.stdout).to.match(new RegExp(`^${shopKeyId}\\s+shop\\s+no\\s`, 'm'));
    expect(list.stdout).to.match(/\sops\s+yes\s/);
    // Never a secret, only ids.
    expect(list.stdout).not.to.contain(shopKey);

    const revoke = await onceq('keys', 'revoke', goneId);
    expect(revoke.code, revoke.stderr).to.equal(0);
    const json = (await onceq('keys', 'list', '--json')).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; principal: string; revokedAt: string | null });
    expect(json.map((k) => k.principal).sort()).to.deep.equal(['ops', 'shop']);
    const all = (await onceq('keys', 'list', '--all', '--json')).stdout.trim().split('\n');
    const revoked = all.map((l) => JSON.parse(l) as { id: string; revokedAt: string | null });
    expect(revoked.find((k) => k.id === goneId)?.revokedAt).to.be.a('string');
  });

  it('onceq enqueue NAME --data JSON [--token T] [--queue Q] [--delay MS] [--priority N]: a replay gives the same messageId', async () => {
    const data = '{"owner":"alice","openingBalance":1000}';
    opened = parseAnswer(await onceq('enqueue', 'account.open', '--data', data));
    expect(opened).to.include({ queue: 'ledger', name: 'account.open', state: 'queued' });
    expect(opened.replayed).to.equal(false);
    expect(opened.token).to.match(TOKEN);
    expect(opened.jobId).to.equal(jobIdFor(opened.messageId));

    // The same token and data again: the first message, not a second one.
    const replay = parseAnswer(
      await onceq('enqueue', 'account.open', '--data', data, '--token', opened.token),
    );
    expect(replay).to.deep.equal({ ...opened, replayed: true });

    // The same token with other data: refused in one line, no stack.
    const reused = await onceq(
      'enqueue',
      'account.open',
      '--data',
      '{"owner":"mallory","openingBalance":1000}',
      '--token',
      opened.token,
    );
    expect(reused.code).to.equal(1);
    expect(reused.stdout).to.equal('');
    expect(reused.stderr.trim().split('\n')).to.have.length(1);
    expect(reused.stderr).to.match(/^onceq: .*idempotency token/);

    const options = parseAnswer(
      await onceq(
        'enqueue',
        'account.open',
        '--data',
        '{"owner":"bob","openingBalance":5}',
        '--queue',
        'ledger',
        '--delay',
        '10',
        '--priority',
        '3',
      ),
    );
    expect(options.messageId).not.to.equal(opened.messageId);
    const job = await waitFor('the delayed job', () =>
      redis.hgetall(`${prefix}:ledger:${options.jobId}`).then((h) => (h.name ? h : undefined)),
    );
    expect(job.priority).to.equal('3');
    expect(job.delay).to.equal('10');

    // `npm run onceq -- …` runs the same command from the sources.
    const npm = await viaNpm('npm', [
      'run',
      '--silent',
      'onceq',
      '--',
      'enqueue',
      'account.open',
      '--data',
      data,
      '--token',
      opened.token,
    ]);
    expect(parseAnswer(npm)).to.deep.equal({ ...opened, replayed: true });
  });

  it('onceq worker applies what was enqueued, and onceq dlq list | show | replay | purge', async () => {
    const { child: worker } = await serve(['worker'], ['worker started']);
    await waitFor('the account to be opened', () => accountExists(opened.messageId), 30_000);

    // Two dead letters as the pipeline writes them, with data that applies on replay.
    const base = BigInt(firstSnowflakeAt(Date.now()));
    const letters = [String(base + 1n), String(base + 2n)];
    for (const [i, messageId] of letters.entries()) {
      await upsertDeadLetter(db, {
        messageId,
        queue: 'ledger',
        jobName: 'account.open',
        jobId: jobIdFor(messageId),
        data: { owner: `dead-${i}`, openingBalance: 7 },
        token: generateToken(),
        reason: 'exhausted',
        error: 'boom',
        stack: 'Error: boom\n    at test',
        attempts: 10,
        options: {},
        enqueuedAt: new Date(),
      });
    }

    const list = await onceq('dlq', 'list');
    expect(list.code, list.stderr).to.equal(0);
    for (const id of letters) expect(list.stdout).to.match(new RegExp(`^${id}\\s.*exhausted`, 'm'));
    expect(list.stdout).to.contain('2 shown; 2 pending in all');
    const listed = (await onceq('dlq', 'list', '--json')).stdout.trim().split('\n');
    expect(listed.map((l) => (JSON.parse(l) as { messageId: string }).messageId)).to.have.members(
      letters,
    );

    const show = await onceq('dlq', 'show', letters[0]!);
    expect(show.code, show.stderr).to.equal(0);
    const shown = JSON.parse(show.stdout) as Record<string, unknown>;
    expect(shown).to.deep.include({
      messageId: letters[0],
      queue: 'ledger',
      name: 'account.open',
      reason: 'exhausted',
      error: 'boom',
      data: { owner: 'dead-0', openingBalance: 7 },
    });
    expect(shown.stack).to.contain('Error: boom');

    const replay = await onceq('dlq', 'replay', letters[0]!);
    expect(replay.code, replay.stderr).to.equal(0);
    expect(replay.stdout.trim()).to.equal('replayed 1, already applied 0, failed 0 of 1');
    await waitFor('the replayed message to apply', () => accountExists(letters[0]!), 30_000);

    const dry = await onceq('dlq', 'replay', '--all', '--dry-run');
    expect(dry.stdout.trim()).to.equal('would replay 1, already applied 0, failed 0 of 1');
    const narrowed = await onceq(
      'dlq',
      'replay',
      '--all',
      '--queue',
      'ledger',
      '--reason',
      'invalid',
      '--dry-run',
    );
    expect(narrowed.code, narrowed.stderr).to.equal(0);
    expect(narrowed.stdout.trim()).to.equal('would replay 0, already applied 0, failed 0 of 0');
    const purge = await onceq('dlq', 'purge');
    expect(purge.code, purge.stderr).to.equal(0);
    // Purge takes the pending letter and, by design, the replayed one's record too; the
    // replayed message's effect stays.
    expect(purge.stdout.trim()).to.equal('purged 2');
    expect((await onceq('dlq', 'list')).stdout).to.contain('no dead letters match');
    expect(await accountExists(letters[0]!)).to.equal(true);
    expect(await accountExists(letters[1]!)).to.equal(false);

    await stop(worker);
    expect(worker.output()).to.contain('shutting down');
  });

  it('onceq api serves the documented routes with the key from keys create, until SIGTERM', async () => {
    const { child: api, address } = await serve(['api'], ['api listening']);
    const auth = { authorization: `Bearer ${shopKey}` };
    expect((await fetch(`${address}/healthz`)).status).to.equal(200);
    expect((await fetch(`${address}/readyz`)).status).to.equal(200);
    const tokens = await fetch(`${address}/v1/tokens`, { method: 'POST', headers: auth });
    expect(tokens.status).to.equal(201);
    const { token } = (await tokens.json()) as { token: string };
    const send = () =>
      fetch(`${address}/v1/jobs`, {
        method: 'POST',
        headers: { ...auth, 'idempotency-key': token, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'account.open', data: { owner: 'carol', openingBalance: 3 } }),
      });
    const first = await send();
    expect(first.status).to.equal(202);
    const body = (await first.json()) as { jobId: string; messageId: string };
    const again = await send();
    expect(again.headers.get('idempotent-replayed')).to.equal('true');
    expect(await again.json()).to.deep.equal(body);
    const status = await fetch(`${address}/v1/jobs/${body.jobId}`, { headers: auth });
    expect(status.status).to.equal(200);
    // No worker runs now: the job waits.
    expect(await status.json()).to.include({ jobId: body.jobId, state: 'queued' });
    expect((await fetch(`${address}/metrics`, { headers: auth })).status).to.equal(200);
    await stop(api);
  });

  it('onceq start runs the Quick start: key, token, job, applied; SIGTERM exits 0', async () => {
    const { child: start, address } = await serve(['start'], ['api listening', 'worker started']);
    const auth = { authorization: `Bearer ${shopKey}` };
    const { token } = (await (
      await fetch(`${address}/v1/tokens`, { method: 'POST', headers: auth })
    ).json()) as { token: string };
    const res = await fetch(`${address}/v1/jobs`, {
      method: 'POST',
      headers: { ...auth, 'idempotency-key': token, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'account.open',
        data: { owner: 'alice', openingBalance: 1000 },
      }),
    });
    expect(res.status).to.equal(202);
    const { jobId, messageId } = (await res.json()) as { jobId: string; messageId: string };
    expect(jobId).to.equal(`m-${messageId}`);
    const done = await waitFor(
      'the job to complete',
      async () => {
        const r = await fetch(`${address}/v1/jobs/${jobId}`, { headers: auth });
        const b = (await r.json()) as { state: string; result?: unknown };
        return b.state === 'completed' ? b : undefined;
      },
      30_000,
    );
    expect(done.result).to.deep.equal({ status: 'applied', accountId: messageId });
    await stop(start);
  });

  it('onceq demo --transfers 1000 (its own stack), then demo --url U --key K (and ONCEQ_API_URL, ONCEQ_API_KEY) against onceq api', async function () {
    this.timeout(180_000);
    const own = await onceq('demo', '--transfers', '1000');
    expect(own.code, own.stdout + own.stderr).to.equal(0);
    expect(own.stdout).to.contain('invariants hold: yes');
    expect(own.stdout).to.match(/messages accepted\s+1010\b/);

    const { child: api, address } = await serve(['api'], ['api listening']);
    const driven = await onceq(
      'demo',
      '--url',
      address,
      '--key',
      shopKey,
      '--accounts',
      '3',
      '--transfers',
      '50',
      '--workers',
      '1',
      '--kills',
      '1',
    );
    expect(driven.code, driven.stdout + driven.stderr).to.equal(0);
    expect(driven.stdout).to.contain('invariants hold: yes');
    expect(driven.stdout).to.match(/messages accepted\s+53\b/);

    // The same through the documented variables instead of the flags.
    const child = spawn(['demo', '--accounts', '2', '--transfers', '10', '--kills', '0'], {
      ONCEQ_API_URL: address,
      ONCEQ_API_KEY: shopKey,
    });
    const exit = await child.exited;
    expect(exit.code, child.output()).to.equal(0);
    expect(child.stdout()).to.match(/messages accepted\s+12\b/);
    await stop(api);
  });
});
