/**
 * Counterexamples the HTTP properties (property.test.ts) found, kept as plain examples so that
 * each stays covered whatever seed a run draws.
 */
import { expect } from 'chai';
import { createApiTest, type ApiTest } from '../support/api.js';

describe('http: counterexamples of the properties', () => {
  let t: ApiTest;
  let alice: string;
  let bob: string;
  let admin: string;

  before(async () => {
    t = await createApiTest('prop_examples', {
      adminQueues: { queues: ['ledger'] },
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

  // Bytes that are not UTF-8 were decoded with U+FFFD in their place and accepted: the stored
  // data was not what the client sent. Other declared charsets were decoded as UTF-8 too.
  for (const [label, contentType, payload] of [
    [
      'an ISO-8859-1 é',
      'application/json; charset=iso-8859-1',
      Buffer.concat([
        Buffer.from('{"name":"account.open","data":{"owner":"Jos'),
        Buffer.from([0xe9]),
        Buffer.from('","openingBalance":1}}'),
      ]),
    ],
    [
      'a lone 0xFF byte, no charset',
      'application/json',
      Buffer.concat([
        Buffer.from('{"name":"account.open","data":{"owner":"a'),
        Buffer.from([0xff]),
        Buffer.from('","openingBalance":1}}'),
      ]),
    ],
    [
      'a UTF-16 charset',
      'application/json; charset=utf-16',
      Buffer.from('{"name":"account.open","data":{"owner":"a","openingBalance":1}}'),
    ],
  ] as const) {
    it(`a body that is not UTF-8 JSON (${label}): 400 bad_request, the token unused`, async () => {
      const token = await t.token(alice);
      const res = await t.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: {
          authorization: `Bearer ${alice}`,
          'idempotency-key': token,
          'content-type': contentType,
        },
        payload,
      });
      expect(res.statusCode, res.body).to.equal(400);
      expect(res.json()).to.include({ code: 'bad_request' });
      const accepted = await t.stack.db
        .selectFrom('accepted_messages')
        .select('message_id')
        .execute();
      expect(accepted).to.deep.equal([]);
      // The token is still unused: the same request in UTF-8 is a first use.
      const ok = await t.enqueue(alice, token, {
        name: 'account.open',
        data: { owner: 'José', openingBalance: 1 },
      });
      expect(ok.statusCode, ok.body).to.equal(202);
      await t.stack.db.deleteFrom('accepted_messages').execute();
    });
  }
});
