/**
 * Zero-install: `npm start` (`node bin/onceq.js start`, compiled) with no `DATABASE_URL` and no
 * `REDIS_URL`, on a machine where nothing answers on the default ports, starts an embedded
 * PostgreSQL and runs on it alone. The default ports are moved to free ones (`ONCEQ_PG_PORT`,
 * `ONCEQ_REDIS_PORT`): this machine's own servers listen on 5432 and 6379, and the test proves
 * the path a bare machine takes. Then the README's Quick start requests, run as a user runs them
 * from another shell (`onceq keys create` finds the embedded server by its data folder), apply
 * the message once; a repeat with the same token is a replay; SIGTERM stops everything,
 * PostgreSQL last; and a second start on the same folder finds the effect still there.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { expect } from 'chai';
import pg from 'pg';
import { ensureBuilt, BIN } from '../support/build.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { freePort } from '../../tools/support/child.js';
import { isPortAnswering } from '../../src/cli/embedded-postgres.js';

const TOKEN = /^oqt_[A-Za-z0-9_-]{32}$/;

describe('cli: zero-install, onceq start with no URLs and nothing on the default ports', function () {
  this.timeout(120_000);
  let dir: string;
  let env: Record<string, string>;
  let pgPort: number;
  let apiPort: number;
  const children: WorkerChild[] = [];

  before(async () => {
    await ensureBuilt();
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-zero-'));
    // mkdtemp makes it 0700; as root the server runs as another user, who must enter it.
    chmodSync(dir, 0o755);
    [pgPort, apiPort] = [await freePort(), await freePort()];
    const redisPort = await freePort();
    // Nothing may answer where the defaults point, or the test proves nothing.
    expect(await isPortAnswering('127.0.0.1', pgPort, 500)).to.equal(false);
    expect(await isPortAnswering('127.0.0.1', redisPort, 500)).to.equal(false);
    env = {
      // An empty variable is an unset one (config.ts): neither URL is set.
      DATABASE_URL: '',
      REDIS_URL: '',
      ONCEQ_PG_PORT: String(pgPort),
      ONCEQ_REDIS_PORT: String(redisPort),
      ONCEQ_DATA_DIR: path.join(dir, 'pg'),
      PORT: String(apiPort),
      HOST: '127.0.0.1',
      ONCEQ_SHUTDOWN_TIMEOUT: '5s',
    };
  });

  after(async () => {
    await Promise.all(children.map((c) => c.destroy()));
    rmSync(dir, { recursive: true, force: true });
  });

  function startOnce(): WorkerChild {
    const start = spawnWorker({
      schema: 'public',
      prefix: 'onceq',
      compiled: true,
      args: ['start'],
      cwd: dir,
      env,
    });
    children.push(start);
    return start;
  }

  async function cli(...args: string[]): Promise<string> {
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, ...args], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    return stdout.trim();
  }

  /** The embedded server's URL, as the data folder holds it. */
  function embeddedUrl(): string {
    const password = readFileSync(path.join(dir, 'pg', 'onceq.password'), 'utf8').trim();
    return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${pgPort}/onceq`;
  }

  async function accounts(owner: string): Promise<{ balance: string }[]> {
    const client = new pg.Client({ connectionString: embeddedUrl() });
    await client.connect();
    try {
      const { rows } = await client.query<{ balance: string }>(
        'select balance::text from accounts where owner = $1',
        [owner],
      );
      return rows;
    } finally {
      await client.end();
    }
  }

  it('starts an embedded PostgreSQL, says so first, and applies the Quick start request once', async () => {
    const start = startOnce();
    await start.waitForOutput('api listening', 60_000);
    const first = start
      .output()
      .split('\n')
      .find((l) => l.trim().startsWith('{'));
    expect(JSON.parse(first!)).to.include({ mode: 'postgres', embedded: true });
    expect(JSON.parse(first!).msg).to.match(/embedded PostgreSQL.*set DATABASE_URL/);
    expect(existsSync(path.join(dir, 'pg', 'PG_VERSION'))).to.equal(true);

    const key = await cli('keys', 'create', '--principal', 'shop');
    const api = `http://127.0.0.1:${apiPort}`;
    const auth = { authorization: `Bearer ${key}` };
    const { token } = (await (
      await fetch(`${api}/v1/tokens`, { method: 'POST', headers: auth })
    ).json()) as { token: string };
    expect(token).to.match(TOKEN);
    const send = () =>
      fetch(`${api}/v1/jobs`, {
        method: 'POST',
        headers: { ...auth, 'idempotency-key': token, 'content-type': 'application/json' },
        body: JSON.stringify({
          name: 'account.open',
          data: { owner: 'alice', openingBalance: 1000 },
        }),
      });
    const answer = await send();
    expect(answer.status).to.equal(202);
    const text = await answer.text();
    const body = JSON.parse(text) as { jobId: string; messageId: string; state: string };
    expect(body).to.include({ queue: 'ledger', name: 'account.open', state: 'queued' });
    // The same request with the same token: the first answer again, byte for byte.
    const again = await send();
    expect(again.status).to.equal(202);
    expect(await again.text()).to.equal(text);

    let status: { state?: string } = {};
    for (let i = 0; i < 100 && status.state !== 'completed'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await (await fetch(`${api}/v1/jobs/${body.jobId}`, { headers: auth })).json()) as {
        state?: string;
      };
    }
    expect(status.state).to.equal('completed');
    expect(await accounts('alice')).to.deep.equal([{ balance: '1000' }]);

    start.child.kill('SIGTERM');
    expect(await start.exited).to.deep.equal({ code: 0, signal: null });
    // Stopped last and cleanly: no server left on the folder or the port.
    expect(existsSync(path.join(dir, 'pg', 'postmaster.pid'))).to.equal(false);
    expect(await isPortAnswering('127.0.0.1', pgPort, 500)).to.equal(false);
  });

  it('keeps its data across a restart on the same folder', async () => {
    const start = startOnce();
    await start.waitForOutput('api listening', 60_000);
    expect(await accounts('alice')).to.deep.equal([{ balance: '1000' }]);
    start.child.kill('SIGTERM');
    expect(await start.exited).to.deep.equal({ code: 0, signal: null });
  });

  it('says in one line what is wrong when something else holds the PostgreSQL port', async () => {
    // Not a PostgreSQL: the port answers, so start takes it for the machine's server (an
    // embedded one cannot listen there anyway), fails to log in, and says where in one line.
    const squatter = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => squatter.listen(pgPort, '127.0.0.1', resolve));
    try {
      const start = startOnce();
      expect((await start.exited).code).to.equal(1);
      const lines = start.stderr().trim().split('\n');
      expect(lines).to.have.length(1);
      expect(lines[0]).to.match(new RegExp(`^onceq: .*PostgreSQL.*127\\.0\\.0\\.1:${pgPort}`));
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
    // The folder is left as it was: the next start runs on it.
    const start = startOnce();
    await start.waitForOutput('api listening', 60_000);
    expect(await accounts('alice')).to.deep.equal([{ balance: '1000' }]);
    start.child.kill('SIGTERM');
    expect(await start.exited).to.deep.equal({ code: 0, signal: null });
  });
});
