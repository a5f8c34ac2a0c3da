/**
 * `inbox` and `accepted_messages` become tables partitioned by message-id range, one partition
 * per UTC day of snowflakes, so that the pruner drops a day whole instead of deleting it row by
 * row (at 2,000 messages a second a 7-day window is 1.2 billion rows of each, and the deletes
 * would run forever), and each day's indexes stay a day's size.
 *
 * In place, data kept, no copy: each old table is renamed `<table>_legacy` and attached as the
 * first partition, covering every id below the first day boundary after the newest row (and
 * after now), so it holds everything written before the migration and the rest of today. ATTACH
 * checks the legacy rows against that bound with one sequential scan; the migration runs in one
 * transaction holding both tables exclusively, so validating a CHECK first would scan as long
 * and block as long, and buys nothing. The indexes are not rebuilt: the old primary keys become
 * the partitions' own. Past the legacy partition come day partitions (`<table>_pYYYYMMDD`),
 * created ahead by the workers (`onceq_ensure_partitions`, also run here), and a DEFAULT
 * partition that catches any id past the last one (a fleet down for longer than the days
 * created ahead), so such an insert never fails a message.
 *
 * The one guarantee partitioning cannot keep by itself: a unique index of a partitioned table
 * must contain the partition key, so the global `UNIQUE (principal, token)` of
 * accepted_messages (one acceptance per token: the first wins, whatever message id a retry
 * minted) cannot exist on a table partitioned by message id. It is enforced by a trigger
 * instead, `onceq_accepted_token_unique`, before each row:
 *
 * - it takes a transaction advisory lock on the (schema, principal, token) key, so two writers
 *   of one token serialize: the second waits until the first commits or rolls back (a
 *   transaction past 512 such locks takes one schema-wide lock instead, see
 *   TOKEN_LOCKS_PER_TRANSACTION);
 * - then looks the token up in every partition; the function is volatile and the session is
 *   READ COMMITTED, so that query takes a fresh snapshot after the wait and sees the first
 *   writer's committed row (the same property `onceq_assert_not_pruned` relies on);
 * - and skips the row when the token is recorded (returns NULL): what the writers' former
 *   `ON CONFLICT (principal, token) DO NOTHING` did. A primary-key clash still raises 23505.
 *
 * An earlier row of the same statement is seen too (rows a command processed before the current
 * one are visible to a BEFORE trigger's queries), so a batch holding one token twice keeps the
 * first. Under REPEATABLE READ or SERIALIZABLE the lookup would read the snapshot taken before
 * the wait and could miss a concurrent acceptance, so the trigger refuses those (SQLSTATE
 * 0A000) rather than let a second acceptance through. Each day partition (and the default) also
 * has a `UNIQUE (principal, token)` of its own, and the legacy partition keeps its old one: a
 * backstop inside a partition. The token lookup (`findAcceptedByToken`, the trigger) probes the
 * `(principal, token)` index of each partition: about 13 small probes for a 7-day window.
 *
 * `down` restores the old shape: the legacy partition detached and given back the rows of the
 * others (or, once the pruner dropped it, a fresh old-shape table), the global unique constraint
 * and the old names.
 */
import { sql, type Kysely } from 'kysely';

/** Days of partitions the migration creates past today, as the workers do. */
const DAYS_AHEAD = 3;

/**
 * Token locks one transaction takes before it switches to the schema-wide one. Every advisory
 * lock takes a slot of PostgreSQL's shared lock table (max_locks_per_transaction x
 * max_connections, 6,400 by default), and a transaction that ran out of slots would fail with
 * "out of shared memory": a bulk INSERT of many acceptances (an import, a test fixture) takes
 * the exclusive schema-wide lock instead, which every token writer holds shared, and so excludes
 * them all until it commits. Above the acceptance writer's largest batch (500), so that it never
 * switches.
 */
const TOKEN_LOCKS_PER_TRANSACTION = 512;

/** The tables partitioned, and what each keeps of its old shape. */
const TABLES = ['inbox', 'accepted_messages'] as const;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
  const schema = rows[0]!.schema;

  // The first id of a UTC day: (ms since the onceq epoch, 2025-01-01) << 22, as
  // core/snowflake.ts's firstSnowflakeAt. Immutable: partition bounds are computed from it.
  await sql`
    create function onceq_day_first_id(d date) returns bigint
    language sql immutable strict as $$
      select ((extract(epoch from d::timestamp) * 1000)::bigint - 1735689600000) << 22
    $$`.execute(db);

  // The first day boundary after both now and the newest row of either table: the legacy
  // partitions end there.
  const bound = await sql<{ day: string; first_id: string }>`
    with newest as (
      select greatest(
        coalesce((select max(message_id) from inbox), 0),
        coalesce((select max(message_id) from accepted_messages), 0)) as id
    ), at as (
      select greatest(now(), to_timestamp(((select id from newest) >> 22) / 1000.0 + 1735689600)) as t
    )
    select ((t at time zone 'UTC')::date + 1)::text as day,
           onceq_day_first_id((t at time zone 'UTC')::date + 1)::text as first_id
    from at`.execute(db);
  const legacyUpper = bound.rows[0]!.first_id;

  for (const table of TABLES) {
    const legacy = `${table}_legacy`;
    await sql`alter table ${sql.id(table)} rename to ${sql.id(legacy)}`.execute(db);
    await sql`alter index ${sql.id(`${table}_pkey`)} rename to ${sql.id(`${legacy}_pkey`)}`.execute(
      db,
    );
  }
  await sql`
    alter table accepted_messages_legacy
    rename constraint accepted_messages_principal_token_key
    to accepted_messages_legacy_principal_token_key`.execute(db);

  // The same columns as migration 2026_11_28_000000_core. Storage parameters (the inbox's
  // fillfactor) belong to each partition, not to the parent.
  await sql`
    create table inbox (
      message_id bigint not null,
      queue text not null,
      job_name text not null,
      result jsonb,
      applied_at timestamptz not null default now(),
      constraint inbox_pkey primary key (message_id)
    ) partition by range (message_id)`.execute(db);
  await sql`
    create table accepted_messages (
      message_id bigint not null,
      principal text not null,
      token text not null,
      fingerprint text not null,
      queue text not null,
      job_name text not null,
      data jsonb not null,
      job_id text not null,
      options jsonb not null default '{}'::jsonb,
      accepted_at timestamptz not null default now(),
      constraint accepted_messages_pkey primary key (message_id)
    ) partition by range (message_id)`.execute(db);

  for (const table of TABLES) {
    await sql`
      alter table ${sql.id(table)} attach partition ${sql.id(`${table}_legacy`)}
      for values from (minvalue) to (${sql.lit(legacyUpper)})`.execute(db);
  }
  await sql`create table inbox_default partition of inbox default with (fillfactor = 80)`.execute(
    db,
  );
  await sql`create table accepted_messages_default partition of accepted_messages default`.execute(
    db,
  );
  await sql`
    alter table accepted_messages_default
    add constraint accepted_messages_default_principal_token_key unique (principal, token)`.execute(
    db,
  );

  await sql`
    create function onceq_accepted_token_unique() returns trigger
    language plpgsql as $$
    declare
      held integer := coalesce(nullif(current_setting('onceq.accept_token_locks', true), ''), '0')::integer;
    begin
      if current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'accepted_messages is written under READ COMMITTED only, not %',
          current_setting('transaction_isolation')
          using errcode = '0A000',
                hint = 'one acceptance per (principal, token) is checked with a fresh snapshot after a lock wait';
      end if;
      if held < 0 then
        null;  -- this transaction holds every token of the schema already
      elsif held < ${sql.lit(TOKEN_LOCKS_PER_TRANSACTION)} then
        perform pg_advisory_xact_lock_shared(hashtext(${sql.lit(schema)}), 4);
        perform pg_advisory_xact_lock(
          hashtextextended(new.principal || ' ' || new.token, hashtext(${sql.lit(schema)})));
        perform set_config('onceq.accept_token_locks', (held + 1)::text, true);
      else
        perform pg_advisory_xact_lock(hashtext(${sql.lit(schema)}), 4);
        perform set_config('onceq.accept_token_locks', '-1', true);
      end if;
      if exists (select 1 from ${sql.id(schema)}.accepted_messages a
                 where a.principal = new.principal and a.token = new.token) then
        return null;
      end if;
      return new;
    end
    $$`.execute(db);
  await sql`
    create trigger accepted_messages_token_unique before insert on accepted_messages
    for each row execute function onceq_accepted_token_unique()`.execute(db);

  /*
    onceq_ensure_partitions: creates the day partitions of both tables from today (UTC) to
    today + p_days_ahead, those not covered yet; returns how many it created. Idempotent, and
    safe to run from every worker at once: a transaction advisory lock serializes the runs, the
    second finds the work done. Each partition is created standalone and then attached, which
    takes SHARE UPDATE EXCLUSIVE on the parent (inserts go on) where CREATE TABLE ... PARTITION
    OF would take ACCESS EXCLUSIVE; a lock not granted within 1 s fails the run (55P03), to be
    tried again at the next one rather than queue every insert behind it. A day whose ids the
    DEFAULT partition already holds (the fleet was down longer than the days created ahead) is
    left to the default, which the pruner prunes in batches.
  */
  await sql`
    create function onceq_ensure_partitions(p_days_ahead integer) returns integer
    language plpgsql as $$
    declare
      t text;
      d date;
      today date := (now() at time zone 'UTC')::date;
      covered bigint;
      part text;
      made integer := 0;
    begin
      if p_days_ahead is null or p_days_ahead < 0 or p_days_ahead > 366 then
        raise exception 'days ahead must be 0 to 366, got %', p_days_ahead
          using errcode = '22023';
      end if;
      perform pg_advisory_xact_lock(hashtext(current_schema()), 3);
      perform set_config('lock_timeout', '1s', true);
      foreach t in array array['inbox', 'accepted_messages'] loop
        select max(substring(pg_get_expr(c.relpartbound, c.oid) from 'TO \\(''(-?[0-9]+)''\\)')::bigint)
          into covered
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = quote_ident(t)::regclass;
        for d in select g::date from generate_series(today, today + p_days_ahead, interval '1 day') g loop
          continue when covered is not null and onceq_day_first_id(d) < covered;
          part := t || '_p' || to_char(d, 'YYYYMMDD');
          begin
            execute format('create table %I (like %I including defaults)%s', part, t,
                           case when t = 'inbox' then ' with (fillfactor = 80)' else '' end);
            execute format('alter table %I add constraint %I primary key (message_id)',
                           part, part || '_pkey');
            if t = 'accepted_messages' then
              execute format('alter table %I add constraint %I unique (principal, token)',
                             part, part || '_principal_token_key');
            end if;
            execute format('alter table %I attach partition %I for values from (%s) to (%s)',
                           t, part, onceq_day_first_id(d), onceq_day_first_id(d + 1));
            made := made + 1;
            covered := onceq_day_first_id(d + 1);
          exception when check_violation then
            raise notice 'partition % not created: the default partition holds rows of that day', part;
          end;
        end loop;
      end loop;
      return made;
    end
    $$`.execute(db);
  await sql`select onceq_ensure_partitions(${sql.lit(DAYS_AHEAD)})`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop function onceq_ensure_partitions(integer)`.execute(db);
  await sql`drop trigger accepted_messages_token_unique on accepted_messages`.execute(db);
  await sql`drop function onceq_accepted_token_unique()`.execute(db);
  for (const table of TABLES) {
    const legacy = `${table}_legacy`;
    const kept = await sql<{ present: boolean }>`
      select to_regclass(${legacy}) is not null as present`.execute(db);
    if (kept.rows[0]!.present) {
      await sql`alter table ${sql.id(table)} detach partition ${sql.id(legacy)}`.execute(db);
      // Its bound goes with the partition; the rows of the other partitions come back into it.
      await sql`insert into ${sql.id(legacy)} select * from ${sql.id(table)}`.execute(db);
      await sql`drop table ${sql.id(table)}`.execute(db);
    } else {
      await createFlat(db, legacy, table);
      await sql`insert into ${sql.id(legacy)} select * from ${sql.id(table)}`.execute(db);
      await sql`drop table ${sql.id(table)}`.execute(db);
    }
    await sql`alter table ${sql.id(legacy)} rename to ${sql.id(table)}`.execute(db);
    await sql`alter index ${sql.id(`${legacy}_pkey`)} rename to ${sql.id(`${table}_pkey`)}`.execute(
      db,
    );
  }
  await sql`
    alter table accepted_messages
    rename constraint accepted_messages_legacy_principal_token_key
    to accepted_messages_principal_token_key`.execute(db);
  await sql`drop function onceq_day_first_id(date)`.execute(db);
}

/** The old shape of `table` (2026_11_28_000000_core), under the legacy name. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function createFlat(db: Kysely<any>, name: string, table: string): Promise<void> {
  if (table === 'inbox') {
    await sql`
      create table ${sql.id(name)} (
        message_id bigint constraint inbox_legacy_pkey primary key,
        queue text not null,
        job_name text not null,
        result jsonb,
        applied_at timestamptz not null default now()
      ) with (fillfactor = 80)`.execute(db);
    return;
  }
  await sql`
    create table ${sql.id(name)} (
      message_id bigint constraint accepted_messages_legacy_pkey primary key,
      principal text not null,
      token text not null,
      fingerprint text not null,
      queue text not null,
      job_name text not null,
      data jsonb not null,
      job_id text not null,
      options jsonb not null default '{}'::jsonb,
      accepted_at timestamptz not null default now(),
      constraint accepted_messages_legacy_principal_token_key unique (principal, token)
    )`.execute(db);
}
