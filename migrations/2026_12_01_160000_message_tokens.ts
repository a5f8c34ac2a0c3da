/**
 * Message tokens in PostgreSQL, for the PostgreSQL-only mode (no Redis): the table that holds
 * the state of each idempotency/message token, one row per token, and one PL/pgSQL function per
 * transition, the counterparts of the Redis store's Lua scripts (src/redis/lua/*-1.lua). The
 * store that calls them is src/db/token-store.ts; the contract both stores keep is
 * src/core/token-store.ts, checked by the one suite in test/tokens/.
 *
 * Each function is one round trip and one transaction: it locks the token's row
 * (`select … for update`), reads the time from `clock_timestamp()` once it holds the lock (the
 * database's clock plays the part Redis `TIME` plays), decides as its script does, writes, and
 * answers `[code, ...payload]` as JSON with the script's codes (src/core/token-codes.ts), so
 * that one decoder gives both stores the same answers.
 *
 * Expiry. A row is live while `expires_at_ms` is not before the clock, as a Redis key is
 * until its PEXPIRE time has passed. A row past it is exactly a missing key to every function:
 * `accept` answers unknown, `claim` and `complete` write a fresh row over it, `issue` may reuse
 * it, the others leave it. Nothing needs a row deleted in time, so deleting expired rows is a
 * batched chore (`deleteExpiredTokens`, on `message_tokens_expires_idx`).
 *
 * Outstanding tokens (the per-principal bound): counted from the rows themselves, live rows in
 * state `issued`, through the partial index `message_tokens_outstanding_idx`. `issue` counts and
 * inserts under a transaction-scoped advisory lock per (schema, principal), so concurrent issues
 * of one principal are serialised and the bound is never overshot.
 *
 * Times are bigint ms since the epoch, as the Redis store keeps them: exact arithmetic, and the
 * same numbers in every answer. The message id is text, as the caller gave it: the store echoes
 * it back, and its contract takes any decimal string of up to 20 digits, beyond bigint.
 */
import { sql, type Kysely } from 'kysely';

/** The functions, with their argument types, as `drop function` needs them. */
const FUNCTIONS = [
  'onceq_clock_ms()',
  'onceq_token_issue(text, text[], bigint, integer)',
  'onceq_token_accept(text, text, text, text, bigint, bigint)',
  'onceq_token_settle(text, text, boolean)',
  'onceq_token_rebind(text, text, text, text, text, bigint)',
  'onceq_token_claim(text, text, bigint, text, bigint)',
  'onceq_token_renew(text, text, bigint)',
  'onceq_token_release(text, text)',
  'onceq_token_complete(text, text, text, bigint)',
];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('message_tokens')
    .addColumn('token', 'text', (c) => c.primaryKey())
    .addColumn('state', 'text', (c) =>
      c.notNull().check(sql`state in ('issued', 'accepted', 'claimed', 'done')`),
    )
    // Null where the Redis hash has no such field: a token a claim or a completion created
    // (Redis lost the key) has no principal, fingerprint, issue or acceptance time.
    .addColumn('principal', 'text')
    // The request fingerprint as given (Redis keeps a compact form of the same string).
    .addColumn('fingerprint', 'text')
    // The message the token is bound to (TokenMismatchError's `boundMessageId`). Not named
    // `message_id`: across onceq's tables that name is a bigint key, and this is text.
    .addColumn('bound_message_id', 'text')
    .addColumn('owner', 'text')
    .addColumn('lease_until_ms', 'bigint')
    // The result's JSON text as the handler's result was serialised; null: none kept here (too
    // large, or not done). Text, not jsonb: given back byte for byte, key order included.
    .addColumn('result', 'text')
    .addColumn('issued_at_ms', 'bigint')
    .addColumn('accepted_at_ms', 'bigint')
    .addColumn('claimed_at_ms', 'bigint')
    .addColumn('done_at_ms', 'bigint')
    .addColumn('claims', 'integer', (c) => c.notNull().defaultTo(0))
    // End of the accepting request's in-flight window, while it is open.
    .addColumn('pending_until_ms', 'bigint')
    .addColumn('expires_at_ms', 'bigint', (c) => c.notNull())
    .execute();
  // deleteExpiredTokens: the oldest expired rows first, a batch at a time.
  await db.schema
    .createIndex('message_tokens_expires_idx')
    .on('message_tokens')
    .column('expires_at_ms')
    .execute();
  // A principal's outstanding tokens: its rows still `issued`, by expiry (count, Retry-After).
  await db.schema
    .createIndex('message_tokens_outstanding_idx')
    .on('message_tokens')
    .columns(['principal', 'expires_at_ms'])
    .where(sql.ref('state'), '=', 'issued')
    .execute();

  // Whole milliseconds, rounded down, as the scripts read Redis TIME. Volatile: a fresh reading
  // at each call, also inside one transaction (now() would give the transaction's start).
  await sql`
    create function onceq_clock_ms() returns bigint
    language sql volatile as $$
      select floor(extract(epoch from clock_timestamp()) * 1000)::bigint
    $$`.execute(db);

  /*
    issue: creates `issued` rows for a principal's fresh tokens, counted against its bound
    (reserve-1.lua and issue-1.lua in one). All or none against the bound: over it, nothing is
    written. A token whose row is live is refused (a collision, never seen with 192 random
    bits); an expired row is a missing key, and is written over.

    p_principal        the principal the tokens are bound to
    p_tokens           the fresh tokens, all distinct
    p_ttl_ms           lifetime of the unused tokens
    p_max_outstanding  most outstanding tokens of the principal; 0: no bound, nothing counted
                       (also for a retry of collided tokens, whose room is counted already)

    Returns {"reserve": R, "issued": [I, …]}, R null when nothing was counted, else
      [12, outstanding, expiresAtMs]    RESERVED    the tokens are counted; `issued` follows
      [-10, retryAfterMs, outstanding]  OVER_LIMIT  nothing written; `issued` is null
    and one I per token, in order:
      [1, expiresAtMs]                  ISSUED
      [-1]                              COLLISION   a live row holds the token; untouched
  */
  await sql`
    create function onceq_token_issue(
      p_principal text, p_tokens text[], p_ttl_ms bigint, p_max_outstanding integer
    ) returns json
    language plpgsql as $$
    declare
      now_ms bigint;
      outstanding integer;
      wanted integer := cardinality(p_tokens);
      excess integer;
      boundary bigint;
      written text[];
      reserve json;
    begin
      if p_max_outstanding > 0 then
        -- Serialises the issues of one principal (advisory keys are server-wide: the schema is
        -- in the key so that deployments sharing a server do not wait on each other).
        perform pg_advisory_xact_lock(hashtextextended(p_principal, hashtext(current_schema())));
        now_ms := onceq_clock_ms();
        select count(*) into outstanding from message_tokens t
        where t.principal = p_principal and t.state = 'issued' and t.expires_at_ms > now_ms;
        if outstanding + wanted > p_max_outstanding then
          -- Room for them once the excess earliest-expiring tokens are gone.
          excess := outstanding + wanted - p_max_outstanding;
          select t.expires_at_ms into boundary from message_tokens t
          where t.principal = p_principal and t.state = 'issued' and t.expires_at_ms > now_ms
          order by t.expires_at_ms offset excess - 1 limit 1;
          return json_build_object(
            'reserve', json_build_array(-10, greatest(1, coalesce(boundary - now_ms, 1)), outstanding),
            'issued', null);
        end if;
        reserve := json_build_array(12, outstanding + wanted, now_ms + p_ttl_ms);
      else
        now_ms := onceq_clock_ms();
      end if;

      with put as (
        insert into message_tokens as t (token, state, principal, issued_at_ms, claims, expires_at_ms)
        select tok, 'issued', p_principal, now_ms, 0, now_ms + p_ttl_ms from unnest(p_tokens) as tok
        on conflict (token) do update
          set state = 'issued', principal = excluded.principal, fingerprint = null,
              bound_message_id = null, owner = null, lease_until_ms = null, result = null,
              issued_at_ms = excluded.issued_at_ms, accepted_at_ms = null, claimed_at_ms = null,
              done_at_ms = null, claims = 0, pending_until_ms = null,
              expires_at_ms = excluded.expires_at_ms
          where t.expires_at_ms < now_ms
        returning t.token
      )
      select coalesce(array_agg(put.token), '{}') into written from put;

      return json_build_object('reserve', reserve, 'issued', (
        select json_agg(case when u.tok = any(written) then json_build_array(1, now_ms + p_ttl_ms)
                             else json_build_array(-1) end order by u.ord)
        from unnest(p_tokens) with ordinality as u(tok, ord)));
    end
    $$`.execute(db);

  /*
    accept: binds an issued token to one request (its fingerprint) and one message id
    (accept-1.lua). A missing or expired row and another principal's give the same answer.

    p_token, p_principal, p_fingerprint
    p_mid           message id minted for this request, kept only on first use
    p_ttl_ms        the row lives at least this long after a first use
    p_in_flight_ms  length of the in-flight window a first use opens; 0: none

    Returns
      [2, mid]             ACCEPTED  first use: issued -> accepted
      [3, mid, state]      REPLAY    the same fingerprint again: the stored mid, current state
      [-2]                 UNKNOWN   never issued, expired, or another principal's
      [-3, storedMid]      REUSED    used for a different request; nothing written
      [-8, pendingUntil]   IN_USE    the same fingerprint while the first request is in flight
  */
  await sql`
    create function onceq_token_accept(
      p_token text, p_principal text, p_fingerprint text, p_mid text, p_ttl_ms bigint,
      p_in_flight_ms bigint
    ) returns json
    language plpgsql as $$
    declare
      r message_tokens;
      now_ms bigint;
    begin
      select * into r from message_tokens t where t.token = p_token for update;
      now_ms := onceq_clock_ms();
      if not found or r.expires_at_ms < now_ms or r.principal is distinct from p_principal then
        return json_build_array(-2);
      end if;
      if r.state = 'issued' then
        update message_tokens t
        set state = 'accepted', fingerprint = p_fingerprint, bound_message_id = p_mid,
            accepted_at_ms = now_ms,
            pending_until_ms = case when p_in_flight_ms > 0 then now_ms + p_in_flight_ms
                                    else t.pending_until_ms end,
            expires_at_ms = greatest(t.expires_at_ms, now_ms + p_ttl_ms)
        where t.token = p_token;
        return json_build_array(2, p_mid);
      end if;
      if r.fingerprint = p_fingerprint then
        -- Only an accepted token can be in flight: a claimed or done one was answered.
        if r.state = 'accepted' and coalesce(r.pending_until_ms, 0) > now_ms then
          return json_build_array(-8, r.pending_until_ms);
        end if;
        return json_build_array(3, coalesce(r.bound_message_id, ''), r.state);
      end if;
      return json_build_array(-3, coalesce(r.bound_message_id, ''));
    end
    $$`.execute(db);

  /*
    settle: closes the in-flight window of message p_mid (settle-1.lua), or with p_forget
    deletes the token's row; only a live row bound to p_mid is touched.

    Returns
      [10]   SETTLED
  */
  await sql`
    create function onceq_token_settle(p_token text, p_mid text, p_forget boolean) returns json
    language plpgsql as $$
    begin
      if p_forget then
        delete from message_tokens t
        where t.token = p_token and t.bound_message_id = p_mid
          and t.expires_at_ms >= onceq_clock_ms();
      else
        update message_tokens t set pending_until_ms = null
        where t.token = p_token and t.bound_message_id = p_mid
          and t.pending_until_ms is not null and t.expires_at_ms >= onceq_clock_ms();
      end if;
      return json_build_array(10);
    end
    $$`.execute(db);

  /*
    rebind: writes PostgreSQL's acceptance record (mid, principal, fingerprint) over the token's
    state if it still holds message id p_from (rebind-1.lua). Another mid drops the claim and the
    result held for the old one (state accepted); the same mid keeps the state.

    p_from   the message id the caller saw the store hold ('' for none)
    p_ttl_ms the row lives at least this long after the rebind

    Returns
      [11, state]       REBOUND  the row holds the record; its state now
      [-9, storedMid]   MOVED    missing, expired, or another mid than p_from ('' for none);
                                 nothing written
  */
  await sql`
    create function onceq_token_rebind(
      p_token text, p_from text, p_mid text, p_principal text, p_fingerprint text, p_ttl_ms bigint
    ) returns json
    language plpgsql as $$
    declare
      r message_tokens;
      now_ms bigint;
    begin
      select * into r from message_tokens t where t.token = p_token for update;
      now_ms := onceq_clock_ms();
      if not found or r.expires_at_ms < now_ms then
        return json_build_array(-9, '');
      end if;
      if coalesce(r.bound_message_id, '') <> p_from then
        return json_build_array(-9, coalesce(r.bound_message_id, ''));
      end if;
      if coalesce(r.bound_message_id, '') <> p_mid then
        update message_tokens t
        set principal = p_principal, fingerprint = p_fingerprint, owner = null,
            lease_until_ms = null, result = null, claimed_at_ms = null, done_at_ms = null,
            state = 'accepted', bound_message_id = p_mid, accepted_at_ms = now_ms,
            expires_at_ms = greatest(t.expires_at_ms, now_ms + p_ttl_ms)
        where t.token = p_token;
        return json_build_array(11, 'accepted');
      end if;
      update message_tokens t
      set principal = p_principal, fingerprint = p_fingerprint,
          state = case when t.state = 'issued' then 'accepted' else t.state end,
          accepted_at_ms = case when t.state = 'issued' then now_ms else t.accepted_at_ms end,
          expires_at_ms = greatest(t.expires_at_ms, now_ms + p_ttl_ms)
      where t.token = p_token;
      return json_build_array(11, case when r.state = 'issued' then 'accepted' else r.state end);
    end
    $$`.execute(db);

  /*
    claim: takes the lease on a message for one owner, or says why not (claim-1.lua). A missing
    or expired row is claimable: a fresh row is written, bound to the message.

    p_owner     unique per delivery attempt
    p_lease_ms  lease length
    p_mid       the message id the job carries
    p_ttl_ms    the row lives at least max(p_ttl_ms, p_lease_ms) after the claim

    Returns
      [4, leaseUntil]          CLAIMED   state -> claimed by p_owner
      [5, resultJson]          DONE      applied already: the stored result
      [5, null]                DONE      applied already; the inbox row holds the result
      [-4, leaseUntil, owner]  BUSY      another owner holds a live lease
      [-5, storedMid]          MISMATCH  bound to another message; nothing written
  */
  await sql`
    create function onceq_token_claim(
      p_token text, p_owner text, p_lease_ms bigint, p_mid text, p_ttl_ms bigint
    ) returns json
    language plpgsql as $$
    declare
      r message_tokens;
      now_ms bigint;
      keep bigint := greatest(p_ttl_ms, p_lease_ms);
    begin
      loop
        select * into r from message_tokens t where t.token = p_token for update;
        now_ms := onceq_clock_ms();
        if found and r.expires_at_ms >= now_ms then
          -- Checked before done: another message's result must never pass for this one's.
          if coalesce(r.bound_message_id, '') not in ('', p_mid) then
            return json_build_array(-5, r.bound_message_id);
          end if;
          if r.state = 'done' then
            return json_build_array(5, r.result);
          end if;
          if r.state = 'claimed' and r.owner is distinct from p_owner
             and coalesce(r.lease_until_ms, 0) > now_ms then
            return json_build_array(-4, r.lease_until_ms, coalesce(r.owner, ''));
          end if;
          update message_tokens t
          set state = 'claimed', owner = p_owner, lease_until_ms = now_ms + p_lease_ms,
              bound_message_id = p_mid, claimed_at_ms = now_ms, claims = t.claims + 1,
              expires_at_ms = greatest(t.expires_at_ms, now_ms + keep)
          where t.token = p_token;
          return json_build_array(4, now_ms + p_lease_ms);
        end if;
        -- Missing, or expired (which is missing): a fresh row, as the script makes a fresh hash.
        if found then
          delete from message_tokens t where t.token = p_token;
        end if;
        insert into message_tokens
          (token, state, bound_message_id, owner, lease_until_ms, claimed_at_ms, claims,
           expires_at_ms)
        values (p_token, 'claimed', p_mid, p_owner, now_ms + p_lease_ms, now_ms, 1, now_ms + keep)
        on conflict (token) do nothing;
        if found then
          return json_build_array(4, now_ms + p_lease_ms);
        end if;
        -- Another transition created the row meanwhile: decide again on it, locked.
      end loop;
    end
    $$`.execute(db);

  /*
    renew: extends the lease of the owner holding the claim, also one that ran out while nobody
    else claimed (renew-1.lua).

    Returns
      [6, leaseUntil]     RENEWED
      [-6, state, owner]  LOST     state `missing` for a missing or expired row; owner '' if none
  */
  await sql`
    create function onceq_token_renew(p_token text, p_owner text, p_lease_ms bigint) returns json
    language plpgsql as $$
    declare
      r message_tokens;
      now_ms bigint;
    begin
      select * into r from message_tokens t where t.token = p_token for update;
      now_ms := onceq_clock_ms();
      if not found or r.expires_at_ms < now_ms then
        return json_build_array(-6, 'missing', '');
      end if;
      if r.state <> 'claimed' or r.owner is distinct from p_owner then
        return json_build_array(-6, r.state, coalesce(r.owner, ''));
      end if;
      update message_tokens t
      set lease_until_ms = now_ms + p_lease_ms,
          expires_at_ms = greatest(t.expires_at_ms, now_ms + p_lease_ms)
      where t.token = p_token;
      return json_build_array(6, now_ms + p_lease_ms);
    end
    $$`.execute(db);

  /*
    release: gives this owner's claim back, so that the next delivery claims at once
    (release-1.lua).

    Returns
      [7]                 RELEASED   claimed -> accepted; owner and lease cleared
      [-7, state, owner]  NOT_OWNER  nothing written; state `missing` for a missing or expired row
  */
  await sql`
    create function onceq_token_release(p_token text, p_owner text) returns json
    language plpgsql as $$
    declare
      r message_tokens;
    begin
      select * into r from message_tokens t where t.token = p_token for update;
      if not found or r.expires_at_ms < onceq_clock_ms() then
        return json_build_array(-7, 'missing', '');
      end if;
      if r.state <> 'claimed' or r.owner is distinct from p_owner then
        return json_build_array(-7, r.state, coalesce(r.owner, ''));
      end if;
      update message_tokens t set state = 'accepted', owner = null, lease_until_ms = null
      where t.token = p_token;
      return json_build_array(7);
    end
    $$`.execute(db);

  /*
    complete: marks the message done with its result, whoever holds the lease: the PostgreSQL
    commit is the truth (complete-1.lua). A missing or expired row is written afresh. Like the
    script's rewrite of the hash, only what later transitions read stays: principal and
    fingerprint (replays), the mid, the result and the time.

    p_mid     the message id that committed
    p_result  the result's JSON text; null to keep none (too large: the inbox row holds it)
    p_ttl_ms  the row lives at least this long after completion

    Returns
      [8]               COMPLETED     state -> done
      [9, resultJson]   ALREADY_DONE  the first result stays; nothing written
      [9, null]         ALREADY_DONE  done without a result kept here; nothing written
      [-5, storedMid]   MISMATCH      bound to another message; nothing written
  */
  await sql`
    create function onceq_token_complete(
      p_token text, p_mid text, p_result text, p_ttl_ms bigint
    ) returns json
    language plpgsql as $$
    declare
      r message_tokens;
      now_ms bigint;
    begin
      loop
        select * into r from message_tokens t where t.token = p_token for update;
        now_ms := onceq_clock_ms();
        if found and r.expires_at_ms >= now_ms then
          if coalesce(r.bound_message_id, '') not in ('', p_mid) then
            return json_build_array(-5, r.bound_message_id);
          end if;
          if r.state = 'done' then
            return json_build_array(9, r.result);
          end if;
          update message_tokens t
          set state = 'done', bound_message_id = p_mid, done_at_ms = now_ms, result = p_result,
              owner = null, lease_until_ms = null, issued_at_ms = null, accepted_at_ms = null,
              claimed_at_ms = null, claims = 0, pending_until_ms = null,
              expires_at_ms = greatest(t.expires_at_ms, now_ms + p_ttl_ms)
          where t.token = p_token;
          return json_build_array(8);
        end if;
        if found then
          delete from message_tokens t where t.token = p_token;
        end if;
        insert into message_tokens (token, state, bound_message_id, done_at_ms, result, expires_at_ms)
        values (p_token, 'done', p_mid, now_ms, p_result, now_ms + p_ttl_ms)
        on conflict (token) do nothing;
        if found then
          return json_build_array(8);
        end if;
      end loop;
    end
    $$`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  // The functions first: their `message_tokens` row type depends on the table.
  for (const fn of [...FUNCTIONS].reverse()) {
    await sql`drop function ${sql.raw(fn)}`.execute(db);
  }
  await db.schema.dropTable('message_tokens').execute();
}
