/**
 * What only the PostgreSQL token store has: its rows, its functions and the deletion of expired
 * rows, against the real PostgreSQL, each test in a schema of its own. The contract it shares
 * with the Redis store is test/tokens/.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { ErrorCode, InvalidArgumentError, OnceqError } from '../../src/core/errors.js';
import { generateToken } from '../../src/core/token.js';
import { toTokenResult } from '../../src/core/token-codes.js';
import type { TokenStore } from '../../src/core/token-store.js';
import { createDb } from '../../src/db/create-db.js';
import { createPgTokenStore, deleteExpiredTokens } from '../../src/db/token-store.js';
import {
  createTestSchema,
  TEST_DATABASE_URL,
  uniqueName,
  type TestSchema,
} from '../support/env.js';

const ALICE = 'alice';
const FP = 'fp-request-1';
const MID = '7203691551471493121';
const TTL = 60_000;
const LEASE = 10_000;

describe('db/token-store: rows, functions, expired rows', () => {
  let t: TestSchema;
  let store: TokenStore;

  beforeEach(async () => {
    t = await createTestSchema('pg_token');
    store = createPgTokenStore(t.db);
  });
  afterEach(async () => t.drop());

  /** Rows as they are, expired ones included. */
  async function rows(): Promise<{ token: string; state: string; expired: boolean }[]> {
    const { rows } = await sql<{ token: string; state: string; expired: boolean }>`
      select token, state, expires_at_ms < onceq_clock_ms() as expired from message_tokens
      order by token collate "C"`.execute(t.db);
    return rows;
  }

  /** Moves a token's expiry `ms` into the past, as if its ttl had run out. */
  async function expire(token: string, ms = 1_000): Promise<void> {
    await sql`update message_tokens set expires_at_ms = onceq_clock_ms() - ${ms}
              where token = ${token}`.execute(t.db);
  }

  async function issued(): Promise<string> {
    const [first] = await store.issue(ALICE, { ttlMs: TTL });
    return first!.token;
  }

  describe('deleteExpiredTokens', () => {
    it('deletes expired rows only, oldest first, at most limit a call, and says how many', async () => {
      const tokens = (await store.issue(ALICE, { ttlMs: TTL, count: 10 })).map((i) => i.token);
      // tokens[0] expired longest ago, tokens[6] most recently; 7 to 9 stay live.
      for (const [i, token] of tokens.slice(0, 7).entries())
        await expire(token, 10_000 - i * 1_000);
      expect(await deleteExpiredTokens(t.db, { limit: 3 })).to.equal(3);
      expect((await rows()).map((r) => r.token)).to.have.members(tokens.slice(3));
      expect(await deleteExpiredTokens(t.db, { limit: 100 })).to.equal(4);
      expect((await rows()).map((r) => r.token)).to.have.members(tokens.slice(7));
      expect(await deleteExpiredTokens(t.db, { limit: 100 })).to.equal(0);
      expect((await rows()).every((r) => !r.expired)).to.equal(true);
    });

    it('refuses a limit that is not a positive integer', async () => {
      for (const limit of [0, -1, 1.5, Number.NaN]) {
        const err = await deleteExpiredTokens(t.db, { limit }).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(InvalidArgumentError);
      }
    });

    it('changes no answer: a deleted row was a missing token already', async () => {
      const token = await issued();
      await store.accept(token, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL });
      await expire(token);
      const accept = () =>
        store.accept(token, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL });
      const before = [await accept(), await store.inspect(token)];
      expect(before).to.deep.equal([{ status: 'unknown' }, undefined]);
      expect(await deleteExpiredTokens(t.db, { limit: 10 })).to.equal(1);
      expect([await accept(), await store.inspect(token)]).to.deep.equal(before);
    });

    it('skips a row a transaction holds locked instead of waiting for it', async () => {
      const [locked, free] = (await store.issue(ALICE, { ttlMs: TTL, count: 2 })).map(
        (i) => i.token,
      );
      await expire(locked!);
      await expire(free!);
      const other = createDb({ url: TEST_DATABASE_URL, schema: t.schema, poolSize: 1 });
      try {
        await other.transaction().execute(async (trx) => {
          await sql`select 1 from message_tokens where token = ${locked} for update`.execute(trx);
          expect(await deleteExpiredTokens(t.db, { limit: 10 })).to.equal(1);
        });
      } finally {
        await other.destroy();
      }
      expect((await rows()).map((r) => r.token)).to.deep.equal([locked]);
      expect(await deleteExpiredTokens(t.db, { limit: 10 })).to.equal(1);
    });

    it('racing claims and completions over expired rows: every one answers as for a missing token', async () => {
      const tokens = (await store.issue(ALICE, { ttlMs: TTL, count: 100 })).map((i) => i.token);
      await sql`update message_tokens set expires_at_ms = onceq_clock_ms() - 1000`.execute(t.db);
      const [answers] = await Promise.all([
        Promise.all(
          tokens.map((token, i) =>
            i % 2
              ? store.claim(token, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL })
              : store.complete(token, { messageId: MID, result: i, ttlMs: TTL }),
          ),
        ),
        (async () => {
          while ((await deleteExpiredTokens(t.db, { limit: 7 })) > 0);
        })(),
      ]);
      expect(answers.map((a) => a.status)).to.deep.equal(
        tokens.map((_, i) => (i % 2 ? 'claimed' : 'completed')),
      );
      const after = await rows();
      expect(after.map((r) => r.token)).to.have.members(tokens);
      expect(after.every((r) => !r.expired)).to.equal(true);
    });

    it('finds expired rows through the expiry index', async () => {
      await store.issue(ALICE, { ttlMs: TTL, count: 100 });
      await sql`insert into message_tokens (token, state, principal, expires_at_ms)
                select 'oqt_' || lpad(i::text, 32, '0'), 'issued', 'bob', onceq_clock_ms() + 60000
                from generate_series(1, 5000) as i`.execute(t.db);
      await sql`analyze message_tokens`.execute(t.db);
      const { rows: plan } = await sql<{ 'QUERY PLAN': string }>`
        explain delete from message_tokens where token in (
          select token from message_tokens where expires_at_ms < (select onceq_clock_ms())
          order by expires_at_ms limit 100 for update skip locked)`.execute(t.db);
      expect(plan.map((p) => p['QUERY PLAN']).join('\n')).to.include('message_tokens_expires_idx');
    });
  });

  describe('the rows', () => {
    it('an issue over an expired row writes it afresh; over a live one it is a collision', async () => {
      const live = await issued();
      const stale = await issued();
      await store.accept(stale, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL });
      await expire(stale);
      const { rows: replies } = await sql<{ reply: { issued: unknown[] } }>`
        select onceq_token_issue('mallory', ${[live, stale]}, ${TTL}, 0) as reply`.execute(t.db);
      const [onLive, onStale] = replies[0]!.reply.issued.map((r) => toTokenResult('issue', r));
      expect(onLive).to.deep.equal({ status: 'collision' });
      expect(onStale).to.include({ status: 'issued' });
      expect(await store.inspect(live)).to.include({ state: 'issued', principal: ALICE });
      expect(await store.inspect(stale)).to.deep.include({
        state: 'issued',
        principal: 'mallory',
        fingerprint: undefined,
        messageId: undefined,
        acceptedAt: undefined,
      });
    });

    it('keeps the fingerprint as given and the result JSON byte for byte, key order included', async () => {
      const token = await issued();
      const fingerprint = `sha256:${'ab'.repeat(32)}`;
      await store.accept(token, { principal: ALICE, fingerprint, messageId: MID, ttlMs: TTL });
      await store.complete(token, { messageId: MID, result: { z: 1, a: [2.5, '3'] }, ttlMs: TTL });
      const { rows: stored } = await sql<{ fingerprint: string; result: string }>`
        select fingerprint, result from message_tokens where token = ${token}`.execute(t.db);
      expect(stored).to.deep.equal([{ fingerprint, result: '{"z":1,"a":[2.5,"3"]}' }]);
    });

    it('a token that leaves `issued` by a claim stops counting against the bound at once', async () => {
      // The Redis store counts it until its expiry (its set loses an entry only at accept): the
      // one place the two counts differ, reached only after Redis went back in time.
      store = createPgTokenStore(t.db, { maxOutstanding: 100 });
      const tokens = (await store.issue(ALICE, { ttlMs: TTL, count: 100 })).map((i) => i.token);
      await store.claim(tokens[0]!, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL });
      expect(await store.issue(ALICE, { ttlMs: TTL })).to.have.length(1);
    });
  });

  describe('errors', () => {
    it('a failure inside a function becomes ScriptFailed and never carries the token', async () => {
      const token = await issued();
      // A trigger that fails naming the token, as a broken function might.
      await sql`
        create function fail_on_claim() returns trigger language plpgsql as $$
        begin
          raise exception 'no claim of %', new.token using detail = 'row ' || new.token;
        end $$`.execute(t.db);
      await sql`create trigger fail_on_claim before update on message_tokens
                for each row when (new.state = 'claimed') execute function fail_on_claim()`.execute(
        t.db,
      );
      const err = await store
        .claim(token, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL })
        .catch((e: unknown) => e);
      expect(err).to.be.instanceOf(OnceqError);
      const failure = err as OnceqError;
      expect(failure.code).to.equal(ErrorCode.ScriptFailed);
      expect(failure.message).to.include('onceq_token_claim').and.include('oqt_<redacted>');
      const cause = failure.cause as Error & { code?: string; detail?: string };
      expect(cause.code).to.equal('P0001');
      const everything = JSON.stringify([failure.message, failure.stack, cause, cause.stack]);
      expect(everything).not.to.include(token.slice(4));
      expect(cause.detail).to.equal('row oqt_<redacted>');
    });

    it('a schema without the migrations answers MigrationsPending', async () => {
      const schema = uniqueName('pg_token_bare');
      const bare = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 1 });
      try {
        await sql`create schema ${sql.id(schema)}`.execute(bare);
        const err = await createPgTokenStore(bare)
          .claim(generateToken(), { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL })
          .catch((e: unknown) => e);
        expect(err).to.be.instanceOf(OnceqError);
        expect((err as OnceqError).code).to.equal(ErrorCode.MigrationsPending);
      } finally {
        await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(bare);
        await bare.destroy();
      }
    });
  });
});
