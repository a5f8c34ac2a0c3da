/**
 * Operations routes of the API, through `app.inject()`: Bull Board at /admin/queues (admin keys
 * only, also as HTTP Basic for browsers) over the work and dead-letter queues, and /metrics
 * (any valid key).
 */
import { expect } from 'chai';
import { createApiTest, type ApiTest } from '../support/api.js';
import { createMetrics } from '../../src/metrics/metrics.js';
import { sample } from '../support/metrics.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { RESERVED_PRINCIPALS } from '../../src/core/principals.js';

describe('http: /admin/queues and /metrics', () => {
  let api: ApiTest;
  let admin: string;
  let producer: string;
  const metrics = createMetrics({ defaultMetrics: false });

  before(async () => {
    api = await createApiTest('http_admin', {
      metrics,
      adminQueues: { queues: ['ledger'] },
    });
    admin = await api.key('ops', true);
    producer = await api.key('shop');
  });
  after(async () => api.close());

  const get = (url: string, authorization?: string) =>
    api.inject({ method: 'GET', url, headers: authorization ? { authorization } : {} });
  const basic = (key: string) => `Basic ${Buffer.from(`admin:${key}`).toString('base64')}`;

  it('answers 401 without a key, with a Basic challenge a browser can answer', async () => {
    for (const url of ['/admin/queues', '/admin/queues/api/queues']) {
      const res = await get(url);
      expect(res.statusCode, url).to.equal(401);
      expect(res.headers['www-authenticate']).to.match(/^Basic realm="onceq admin"/);
      expect(res.headers['content-type']).to.contain('application/problem+json');
      expect(res.json()).to.include({ code: 'unauthorized', status: 401 });
    }
    expect((await get('/admin/queues', 'Bearer oqk_nope')).statusCode).to.equal(401);
  });

  it('a key made for a reserved principal before creation refused it authenticates as nothing', async () => {
    for (const principal of RESERVED_PRINCIPALS) {
      // Written as an older onceq would have, past insertApiKey's refusal.
      const minted = mintApiKey();
      await api.stack.db
        .insertInto('api_keys')
        .values({ key_id: minted.id, principal, key_hash: minted.hash, admin: true })
        .execute();
      for (const url of ['/metrics', '/admin/queues']) {
        const res = await get(url, `Bearer ${minted.key}`);
        expect(res.statusCode, `${principal} ${url}`).to.equal(401);
        expect(res.json()).to.include({ code: 'unauthorized' });
      }
      const tokens = await api.inject({
        method: 'POST',
        url: '/v1/tokens',
        headers: { authorization: `Bearer ${minted.key}` },
      });
      expect(tokens.statusCode, principal).to.equal(401);
    }
  });

  it('answers 403 for a valid key that is not an admin key', async () => {
    const res = await get('/admin/queues', `Bearer ${producer}`);
    expect(res.statusCode).to.equal(403);
    expect(res.json()).to.include({ code: 'forbidden' });
    expect((await get('/admin/queues', basic(producer))).statusCode).to.equal(403);
  });

  it('serves the board to an admin key, as Bearer or as Basic', async () => {
    const page = await get('/admin/queues', `Bearer ${admin}`);
    expect(page.statusCode).to.equal(200);
    expect(page.headers['content-type']).to.contain('text/html');
    const res = await get('/admin/queues/api/queues', basic(admin));
    expect(res.statusCode).to.equal(200);
    const queues = (res.json() as { queues: { name: string; readOnlyMode: boolean }[] }).queues;
    expect(queues.map((q) => [q.name, q.readOnlyMode])).to.deep.equal([
      ['ledger', false],
      ['ledger.dlq', true],
    ]);
  });

  it('serves /metrics to any valid key, and times the requests it answers', async () => {
    expect((await get('/metrics')).statusCode).to.equal(401);
    const res = await get('/metrics', `Bearer ${producer}`);
    expect(res.statusCode).to.equal(200);
    expect(res.headers['content-type']).to.contain('text/plain');
    expect(res.body).to.contain('# TYPE onceq_jobs_total counter');
    const again = await metrics.text();
    expect(
      sample(again, 'onceq_http_request_duration_seconds_count', {
        method: 'GET',
        route: '/metrics',
        status: '200',
      }),
    ).to.equal(1);
  });
});
