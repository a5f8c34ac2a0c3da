/**
 * The database's shape, in one place (Kysely's `example/` layout): the `Database` interface that
 * types every query, and the `*Row` / `New*` aliases repositories use. int8 columns are `string`
 * in TypeScript: a 64-bit id never passes through a JS `number`.
 */
import type { DeadLetterReason } from '../core/dead-letter.js';
import type { TokenState } from '../core/token.js';
import type { Generated, Insertable, Selectable, ColumnType, Updateable } from 'kysely';

/** A `jsonb` column: written as a JSON string or value, read back parsed. */
export type Json = ColumnType<unknown, string, string>;
/** A `timestamptz` column with a database default. */
export type CreatedAt = ColumnType<Date, Date | string | undefined, never>;

/** `inbox`: one row per applied message; the fence that makes a second commit impossible. */
export interface InboxTable {
  message_id: string;
  queue: string;
  job_name: string;
  /** The handler's result, replayed to every duplicate delivery. */
  result: Json;
  applied_at: CreatedAt;
}

/** `accepted_messages`: durable record of every accepted message, written before the 2xx. */
export interface AcceptedMessageTable {
  message_id: string;
  principal: string;
  token: string;
  fingerprint: string;
  queue: string;
  job_name: string;
  data: Json;
  job_id: string;
  /** Job options the producer asked for (delay, priority), replayed by the reconciler. */
  options: Json;
  accepted_at: CreatedAt;
}

/** `accounts` of the built-in ledger example (DESIGN.md section 7). */
export interface AccountTable {
  id: string;
  owner: string;
  opening_balance: string;
  balance: string;
  version: Generated<number>;
  /** Set by `account.close`; closed accounts stay so the ledger still adds up. */
  closed_at: Date | null;
  created_at: CreatedAt;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

/** `transfers`: one row per applied transfer; its id is the message's `messageId`. */
export interface TransferTable {
  id: string;
  from_id: string;
  to_id: string;
  amount: string;
  message_id: string;
  created_at: CreatedAt;
}

/**
 * `worker_id_leases`: one row per snowflake worker id (1 to 1022); held while `owner` is set and
 * `expires_at` is ahead of PostgreSQL's clock. `reserved_until_ms` (Unix ms) is above the
 * timestamp of every id ever minted under the worker id.
 */
export interface WorkerIdLeaseTable {
  worker_id: number;
  owner: string | null;
  expires_at: Date | null;
  reserved_until_ms: string;
  acquired_at: Date | null;
  renewed_at: Date | null;
}

/** `api_keys`: keys of the producer HTTP API; only a hash of each secret is stored. */
export interface ApiKeyTable {
  /** The public lookup id inside the key (`oqk_<id>_<secret>`); text, not a snowflake. */
  key_id: string;
  principal: string;
  /** `sha256:<hex>` of the key's secret. */
  key_hash: string;
  admin: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: CreatedAt;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

/** `dead_letters`: the durable dead-letter queue, one row per message. */
export interface DeadLetterTable {
  message_id: string;
  queue: string;
  job_name: string;
  job_id: string;
  /** The message's own data (the envelope's `data`). */
  data: Json;
  /** The message token; `null` when the envelope carried none that was well formed. */
  token: string | null;
  reason: DeadLetterReason;
  error: string | null;
  stack: string | null;
  /** Attempts the last delivery had made, this one included. */
  attempts: ColumnType<number, number | undefined, number>;
  /** Job options replay keeps (priority). */
  options: ColumnType<unknown, string | undefined, string>;
  /** When BullMQ first got the job. */
  enqueued_at: Date | null;
  dead_at: ColumnType<Date, Date | string | undefined, Date | string>;
  /** Times the message went dead (again after a replay that failed again). */
  dead_count: ColumnType<number, number | undefined, number>;
  /** Set by a replay; a pending dead letter has none. */
  replayed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  replay_count: ColumnType<number, number | undefined, number>;
  /** Set by `dlq purge`: the operator gave the message up; kept as a tombstone. */
  purged_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

/** `outbox`: follow-up messages written by handlers, moved to BullMQ by the relay. */
export interface OutboxTable {
  message_id: string;
  parent_message_id: string;
  queue: string;
  job_name: string;
  data: Json;
  token: string;
  /** `{delay?, priority?}` of the follow-up. */
  options: ColumnType<unknown, string | undefined, string>;
  created_at: CreatedAt;
  /** Set when the row can never be sent (its id clashes with another message's); kept for the operator. */
  quarantined_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** Why the row is quarantined. */
  error: ColumnType<string | null, string | null | undefined, string | null>;
}

/**
 * `prune_cutoff`: one row, the largest message id whose inbox row the pruner may have deleted.
 * Only ever raised; messages at or below it are refused (see db/pruning.repository.ts).
 */
export interface PruneCutoffTable {
  singleton: ColumnType<boolean, true | undefined, never>;
  pruned_through: ColumnType<string, never, string>;
  advanced_at: ColumnType<Date | null, never, Date | string>;
}

/**
 * `message_tokens`: the PostgreSQL token store's state of each token (db/token-store.ts), one row
 * per token, changed only by the `onceq_token_*` functions. Times are ms since the epoch on
 * PostgreSQL's clock (int8, so strings here); a row past `expires_at_ms` counts as missing. A
 * null column is a field the Redis store's hash does not hold.
 */
export interface MessageTokenTable {
  token: string;
  state: TokenState;
  principal: string | null;
  fingerprint: string | null;
  /** The message id the token is bound to, decimal text as the caller gave it. */
  bound_message_id: string | null;
  owner: string | null;
  lease_until_ms: string | null;
  /** The result's JSON text; null when none is kept (not done, or too large). */
  result: string | null;
  issued_at_ms: string | null;
  accepted_at_ms: string | null;
  claimed_at_ms: string | null;
  done_at_ms: string | null;
  claims: ColumnType<number, number | undefined, number>;
  pending_until_ms: string | null;
  expires_at_ms: string;
}

/** Every table onceq owns. */
export interface Database {
  inbox: InboxTable;
  accepted_messages: AcceptedMessageTable;
  accounts: AccountTable;
  transfers: TransferTable;
  api_keys: ApiKeyTable;
  worker_id_leases: WorkerIdLeaseTable;
  dead_letters: DeadLetterTable;
  outbox: OutboxTable;
  prune_cutoff: PruneCutoffTable;
  message_tokens: MessageTokenTable;
}

export type InboxRow = Selectable<InboxTable>;
export type NewInbox = Insertable<InboxTable>;
export type AcceptedMessageRow = Selectable<AcceptedMessageTable>;
export type NewAcceptedMessage = Insertable<AcceptedMessageTable>;
export type AccountRow = Selectable<AccountTable>;
export type NewAccount = Insertable<AccountTable>;
export type AccountUpdate = Updateable<AccountTable>;
export type TransferRow = Selectable<TransferTable>;
export type NewTransfer = Insertable<TransferTable>;
export type ApiKeyRow = Selectable<ApiKeyTable>;
export type NewApiKey = Insertable<ApiKeyTable>;
export type DeadLetterRow = Selectable<DeadLetterTable>;
export type NewDeadLetter = Insertable<DeadLetterTable>;
export type OutboxRow = Selectable<OutboxTable>;
export type NewOutbox = Insertable<OutboxTable>;
export type MessageTokenRow = Selectable<MessageTokenTable>;
