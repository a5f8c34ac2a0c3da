/**
 * `POST /v1/tokens` past the principal's bound of outstanding tokens: 429 problem+json
 * `token_limit_reached` with `Retry-After`, nothing issued; a token used makes room at once;
 * `onceq_tokens_issued_total` counts what was issued and nothing that was refused.
 */
import { expect } from 'chai';
import { createApiTest, type ApiTest } from '../support/api.js';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.js';
import { sample } from '../support/metrics.js';

describe('http: outstanding-token bound', () => {
  let t: ApiTest;
  let metrics: Metrics;
  let key: string;
  beforeEach(async () => {
    metrics = createMetrics({ defaultMetrics: false });
    t = await createApiTest('token_limit', { metrics, stack: { maxOutstandingTokens: 100 } });
    key = await t.key('shop');
  });
  afterEach(async () => {
    await t.close();
  });

  const issue = (count?: number) =>
    t.inject({
      method: 'POST',
      url: '/v1/tokens',
      headers: { authorization: `Bearer ${key}` },
      ...(count === undefined ? {} : { payload: { count } }),
    });

  async function issuedTotal(): Promise<number> {
    const res = await t.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${key}` },
    });
    return sample(res.body, 'onceq_tokens_issued_total', {});
  }

  it('answers 429 token_limit_reached with Retry-After once the bound is reached; using a token makes room', async () => {
    const batch = await issue(100);
    expect(batch.statusCode, batch.body).to.equal(201);
    const tokens = (batch.json() as { tokens: { token: string }[] }).tokens;
    expect(await issuedTotal()).to.equal(100);

    for (const count of [undefined, 1, 50]) {
      const refused = await issue(count);
      expect(refused.statusCode, refused.body).to.equal(429);
      expect(refused.headers['content-type']).to.match(/^application\/problem\+json/);
      expect(refused.json()).to.include({ status: 429, code: 'token_limit_reached' });
      const retryAfter = Number(refused.headers['retry-after']);
      // The tokens live 24 h (the producer's default): room by expiry comes that late at most.
      expect(Number.isInteger(retryAfter)).to.equal(true);
      expect(retryAfter).to.be.within(1, 24 * 3600);
    }
    expect(await issuedTotal()).to.equal(100);

    const res = await t.enqueue(key, tokens[0]!.token, {
      name: 'account.open',
      data: { owner: 'alice', openingBalance: 10 },
    });
    expect(res.statusCode, res.body).to.equal(202);

    const one = await issue();
    expect(one.statusCode, one.body).to.equal(201);
    expect((await issue()).statusCode).to.equal(429);
    expect(await issuedTotal()).to.equal(101);
  });

  it('a refused count leaves the room that is there: 60 outstanding, 50 refused, 40 granted', async () => {
    expect((await issue(60)).statusCode).to.equal(201);
    expect((await issue(50)).statusCode).to.equal(429);
    expect((await issue(40)).statusCode).to.equal(201);
    expect(await issuedTotal()).to.equal(100);
  });
});
