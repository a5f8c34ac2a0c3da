/**
 * `onceq keys` and `onceq api` as real child processes: a key printed once and usable at once,
 * revoked by id; the API serving over a real socket and, at SIGTERM, closing and exiting 0.
 */
import { expect } from 'chai';
import {
  createTestSchema,
  deletePrefix,
  testRedis,
  uniqueName,
  type TestSchema,
} from '../support/env.js';
import { spawnWorker } from '../support/child.js';
import { closeRedis } from '../../src/redis/connection.js';
import { isWellFormedApiKey } from '../../src/core/api-key.js';

describe('cli: onceq keys and onceq api', function () {
  this.timeout(60_000);
  let db: TestSchema;
  const prefix = uniqueName('cli_api');

  before(async () => {
    db = await createTestSchema('cli_api');
  });
  after(async () => {
    const redis = testRedis();
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
    await db.drop();
  });

  async function run(args: string[], env: Record<string, string> = {}) {
    const child = spawnWorker({ schema: db.schema, prefix, args, env });
    const exit = await child.exited;
    return { ...exit, stdout: child.stdout(), stderr: child.stderr() };
  }

  it('keys create prints the key once on stdout; keys list shows it without the secret; keys revoke', async () => {
    const created = await run(['keys', 'create', '--principal', 'shop', '--admin']);
    expect(created.code, created.stderr).to.equal(0);
    const key = created.stdout.trim();
    expect(isWellFormedApiKey(key)).to.equal(true);
    const id = key.slice(4, 20);

    const listed = await run(['keys', 'list', '--json']);
    expect(listed.stdout).to.contain(id);
    expect(listed.stdout).not.to.contain(key.slice(21));
    expect(JSON.parse(listed.stdout.trim())).to.include({
      principal: 'shop',
      admin: true,
      revokedAt: null,
    });

    const bad = await run(['keys', 'create', '--principal', 'no spaces']);
    expect(bad.code).to.equal(1);

    const revoked = await run(['keys', 'revoke', id]);
    expect(revoked.code, revoked.stderr).to.equal(0);
    expect((await run(['keys', 'list'])).stdout).not.to.contain(id);
    expect((await run(['keys', 'list', '--all'])).stdout).to.contain(id);
  });

  it('api serves requests and exits 0 at SIGTERM', async () => {
    const created = await run(['keys', 'create', '--principal', 'shop']);
    const key = created.stdout.trim();
    const api = spawnWorker({
      schema: db.schema,
      prefix,
      args: ['api'],
      env: { PORT: '0', ONCEQ_HOST: '127.0.0.1' },
    });
    try {
      await api.waitForOutput('api listening');
      const address = /"address":"([^"]+)"/.exec(api.output())![1]!;
      expect((await fetch(`${address}/healthz`)).status).to.equal(200);
      const tokenRes = await fetch(`${address}/v1/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}` },
      });
      expect(tokenRes.status).to.equal(201);
      const { token } = (await tokenRes.json()) as { token: string };
      const enq = await fetch(`${address}/v1/jobs`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${key}`,
          'idempotency-key': token,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ name: 'account.open', data: { owner: 'x', openingBalance: 1 } }),
      });
      expect(enq.status).to.equal(202);
      api.child.kill('SIGTERM');
      const exit = await api.exited;
      expect(exit.code, api.output()).to.equal(0);
      expect(api.output()).to.contain('api stopped');
      expect(api.output()).not.to.contain(token);
      expect(api.output()).not.to.contain(key);
    } finally {
      await api.destroy();
    }
  });
});
