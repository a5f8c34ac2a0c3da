/**
 * The app's two jobs. Each handler runs inside its message's transaction, with the inbox row
 * that marks the message done: a redelivery of a committed message replays the stored result
 * and runs nothing. The helpers keep a retried attempt (one rolled back, then run again) safe:
 * `insertOnce` inserts under a key chosen before the first attempt, `updateVersioned` refuses
 * to overwrite a row another transaction changed since it was read.
 *
 * Also the module `onceq api` loads (`ONCEQ_JOBS=dist/jobs.js`), so the API validates the data
 * of these jobs against the same schemas.
 */
import { Type } from '@sinclair/typebox';
import { defineJob } from 'onceq';
import type { AppDatabase } from './database.js';

const defineAppJob = defineJob<AppDatabase>();

/** 64-bit ids travel as strings. */
const Id = Type.String({ pattern: '^[1-9][0-9]{0,18}$' });

/** Opens a ticket whose id is the message id: the same on every delivery of the message. */
export const openTicket = defineAppJob({
  name: 'ticket.open',
  queue: 'tickets',
  schema: Type.Object(
    { title: Type.String({ minLength: 1, maxLength: 200 }) },
    { additionalProperties: false },
  ),
  async handle(ctx) {
    await ctx.insertOnce('tickets', { id: ctx.messageId, title: ctx.data.title });
    return { ticketId: ctx.messageId };
  },
});

/** Counts one vote: a read, then an update that holds only if nobody changed the row between. */
export const upvoteTicket = defineAppJob({
  name: 'ticket.upvote',
  queue: 'tickets',
  schema: Type.Object({ ticketId: Id }, { additionalProperties: false }),
  async handle(ctx) {
    const ticket = await ctx.trx
      .selectFrom('tickets')
      .select(['votes', 'version'])
      .where('id', '=', ctx.data.ticketId)
      .executeTakeFirst();
    // A refusal is a result, committed like any other: retrying would not make the ticket exist.
    if (!ticket) return { status: 'rejected' as const, reason: 'unknown ticket' };
    // On a version conflict this throws, and onceq runs the whole transaction again.
    const version = await ctx.updateVersioned('tickets', ctx.data.ticketId, ticket.version, {
      votes: ticket.votes + 1,
    });
    return { status: 'counted' as const, votes: ticket.votes + 1, version };
  },
});

/** Exactly the jobs of the app, for `createWorker` and `createProducer`. */
export const jobs = [openTicket, upvoteTicket];
