/**
 * Counterexamples the HTTP properties (property.test.ts) found, kept as plain examples so that
 * each stays covered whatever seed a run draws.
 */
import { expect } from 'chai';
import { createApiTest, type ApiTest } from '../support/api.js';
import { uniqueName } from '../support/env.js';

describe('http: counterexamples of the properties', () => {
  let t: ApiTest;
  let alice: string;
  let bob: string;
  let admin: string;

  before(async () => {
    t = await createApiTest('prop_examples', {
      adminQueues: { prefix: uniqueName('prop_examples_board'), queues: ['ledger'] },
    });
    alice = await t.key('alice');
    bob = await t.key('bob');
    admin = await t.key('ops', true);
  });
  after(async () => t.close());

  // Node keeps only the first of several Authorization lines in `request.headers`: the request
  // was authenticated as whoever came first, whatever a proxy in front made of the others.
  for (const [method, url] of [
    ['GET', '/v1/jobs/m-1'],
    ['POST', '/v1/tokens'],
    ['GET', '/admin/queues/api/queues'],
  ] as const) {
    it(`Authorization sent twice: 401 on ${method} ${url}`, async () => {
      for (const pair of [
        [`Bearer ${alice}`, `Bearer ${bob}`],
        [`Bearer ${admin}`, `Bearer ${admin}`],
      ]) {
        // A repeated header is an array for inject, as Node's rawHeaders list it.
        const headers = { authorization: pair } as unknown as Record<string, string>;
        const res = await t.inject({ method, url, headers });
        expect(res.statusCode, res.body).to.equal(401);
        expect(res.headers['content-type']).to.match(/^application\/problem\+json/);
        expect(res.json()).to.include({ code: 'unauthorized' });
      }
      // One line is still fine.
      const one = await t.inject({ method, url, headers: { authorization: `Bearer ${admin}` } });
      expect(one.statusCode).not.to.equal(401);
    });
  }
});
