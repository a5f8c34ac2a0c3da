/**
 * Reserved principals: `local` (messages enqueued through the library and `onceq enqueue`) and
 * `outbox` (follow-ups) are onceq's own, and a key for either would read every message recorded
 * under it. `onceq keys create` (the real CLI, in a child process) and the repository function
 * behind it both refuse them, naming the value, and store nothing.
 */
import { expect } from 'chai';
import { createTestSchema, type TestSchema } from '../support/env.js';
import { spawnWorker } from '../support/child.js';
import { insertApiKey, listApiKeys } from '../../src/db/api-keys.repository.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { ValidationError } from '../../src/core/errors.js';
import { RESERVED_PRINCIPALS } from '../../src/core/principals.js';
import { LOCAL_PRINCIPAL } from '../../src/producer/producer.js';
import { OUTBOX_PRINCIPAL } from '../../src/db/outbox.repository.js';

describe('reserved principals', function () {
  this.timeout(60_000);
  let db: TestSchema;
  before(async () => {
    db = await createTestSchema('reserved_principals');
  });
  after(async () => {
    await db.drop();
  });
  beforeEach(async () => {
    await db.db.deleteFrom('api_keys').execute();
  });

  it('lists the principals the producer and the outbox relay record messages under', () => {
    expect(RESERVED_PRINCIPALS).to.include.members([LOCAL_PRINCIPAL, OUTBOX_PRINCIPAL]);
  });

  for (const name of [LOCAL_PRINCIPAL, OUTBOX_PRINCIPAL]) {
    it(`onceq keys create --principal ${name} exits 1 naming the value, and stores no key`, async () => {
      const child = spawnWorker({
        schema: db.schema,
        prefix: 'unused',
        args: ['keys', 'create', '--principal', name],
        env: { LOG_LEVEL: 'warn' },
      });
      const { code } = await child.exited;
      expect(code, child.stderr()).to.equal(1);
      expect(child.stdout()).to.equal('');
      expect(child.stderr()).to.contain(`principal "${name}" is reserved`);
      expect(child.stderr().trim().split('\n')).to.have.length(1);
      expect(await listApiKeys(db.db, { includeRevoked: true })).to.deep.equal([]);
    });

    it(`insertApiKey refuses principal ${name} with a ValidationError naming it`, async () => {
      const minted = mintApiKey();
      const err = await insertApiKey(db.db, {
        id: minted.id,
        principal: name,
        hash: minted.hash,
        admin: true,
      }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ValidationError);
      expect((err as ValidationError).message).to.contain(`"${name}"`);
      expect((err as ValidationError).details).to.deep.equal([
        { path: '/principal', message: (err as ValidationError).message },
      ]);
      expect(await listApiKeys(db.db, { includeRevoked: true })).to.deep.equal([]);
    });
  }

  it('names are exact: a principal that only looks like a reserved one is an ordinary principal', async () => {
    for (const principal of ['Outbox', 'local2', 'outbox.shop']) {
      const minted = mintApiKey();
      await insertApiKey(db.db, { id: minted.id, principal, hash: minted.hash, admin: false });
    }
    const rows = await listApiKeys(db.db);
    expect(rows.map((r) => r.principal).sort()).to.deep.equal(['Outbox', 'local2', 'outbox.shop']);
  });
});
