/**
 * The chaos workload's clients against a real HTTP server on loopback that answers 503 with
 * `Retry-After` (as the API does while it cannot mint message ids) before it accepts: the
 * clients wait as told, send the same request again with the same Idempotency-Key, go on, and
 * count the 503s they waited out for the campaign's report.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { Workload } from '../../tools/chaos/workload.js';
import { HistoryWriter, readHistory, type RequestEvent } from '../../tools/chaos/history.js';
import { createRandom } from '../../tools/chaos/schedule.js';
import { generateToken } from '../../src/core/token.js';
import { closeRedis } from '../../src/redis/connection.js';
import {
  createTestSchema,
  deletePrefix,
  testRedis,
  uniqueName,
  type TestSchema,
} from '../support/env.js';

describe('chaos workload: waits out 503 + Retry-After and counts it', function () {
  this.timeout(30_000);
  const prefix = uniqueName('chaos_workload');
  let db: TestSchema;
  let redis: Redis;
  let queue: Queue;
  let server: Server;
  let dir: string;

  before(async () => {
    db = await createTestSchema('chaos_workload');
    redis = testRedis();
    queue = new Queue('ledger', { connection: redis, prefix });
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-workload-'));
  });

  after(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
    await queue.close();
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('resends after Retry-After, token requests included, and reports the 503s waited out', async () => {
    // The first token request and the first three job requests get 503 with Retry-After: 1.
    let tokenCalls = 0;
    let jobCalls = 0;
    let nextId = 1_000;
    const tokenTimes: number[] = [];
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const unavailable =
          req.url === '/v1/tokens' ? tokenCalls++ < 1 : req.url === '/v1/jobs' && jobCalls++ < 3;
        if (req.url === '/v1/tokens') tokenTimes.push(Date.now());
        if (unavailable) {
          res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' });
          res.end('{"status":503,"code":"service_unavailable"}');
        } else if (req.url === '/v1/tokens') {
          res.writeHead(201, { 'content-type': 'application/json' });
          const tokens = Array.from({ length: 50 }, () => ({ token: generateToken() }));
          res.end(JSON.stringify({ tokens }));
        } else {
          const messageId = String(nextId++);
          res.writeHead(202, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ jobId: `m-${messageId}`, messageId, state: 'queued' }));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const history = new HistoryWriter(path.join(dir, 'history.jsonl'));
    const workload = new Workload({
      port: (server.address() as AddressInfo).port,
      apiKey: 'oqk_test',
      rate: 10,
      // One client, so that the token request sent again is this client's own resend.
      clients: 1,
      random: createRandom(7),
      history,
      db: db.db,
      queue,
      maxAttempts: 3,
      shares: { replay: 0, duplicate: 0, poison: 0, rawPoison: 0 },
    });
    workload.start();
    await new Promise((r) => setTimeout(r, 6_000));
    await workload.stop();
    await history.close();

    expect(workload.stats.waited503).to.equal(4);
    // The token request was sent again only after the advertised second.
    expect(tokenTimes.length).to.be.at.least(2);
    expect(tokenTimes[1]! - tokenTimes[0]!).to.be.at.least(950);

    // Every job request answered 503 was sent again with the same token, and accepted.
    const requests = (await readHistory(history.file)).filter(
      (e): e is RequestEvent => e.type === 'request' && e.op !== 'tokens',
    );
    const refused = requests.filter((r) => r.status === 503);
    expect(refused).to.have.length(3);
    for (const r of refused) {
      const later = requests.filter((o) => o.token === r.token && o.invokedAt > r.invokedAt);
      expect(later.length, `token ${r.token}`).to.be.at.least(1);
      expect(later.at(-1)!.status).to.equal(202);
      expect(later[0]!.invokedAt - r.time).to.be.at.least(950);
    }
    expect(workload.stats.accepted).to.be.at.least(3);
  });
});
