/**
 * The database's shape, in one place (Kysely's `example/` layout): the `Database` interface that
 * types every query, and the `*Row` / `New*` aliases repositories use. int8 columns are `string`
 * in TypeScript: a 64-bit id never passes through a JS `number`.
 */
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

/** Every table onceq owns. */
export interface Database {
  inbox: InboxTable;
  accepted_messages: AcceptedMessageTable;
  accounts: AccountTable;
  transfers: TransferTable;
  api_keys: ApiKeyTable;
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
