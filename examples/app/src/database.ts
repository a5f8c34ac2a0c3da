/** The app's tables, as Kysely types them: what `defineJob<AppDatabase>()` checks handlers against. */
import type { Generated, Selectable } from 'kysely';

export interface TicketTable {
  /** The id of the message that opened the ticket: a snowflake, as text (it is 64-bit). */
  id: string;
  title: string;
  votes: Generated<number>;
  /** Bumped by every `ctx.updateVersioned`: a concurrent update of the same row conflicts. */
  version: Generated<number>;
  created_at: Generated<Date>;
}

export interface AppDatabase {
  tickets: TicketTable;
}

export type TicketRow = Selectable<TicketTable>;
