/**
 * The BullMQ job of a message recorded in PostgreSQL: the one mapping from a row of
 * `accepted_messages`, `outbox` or `dead_letters` to what is added to its queue, shared by the
 * reconciler, the outbox relay and dead-letter replay.
 */
import type { JobsOptions } from 'bullmq';
import type { MessageEnvelope } from '../core/message.js';
import { messageJobOptions, type MessageJobOptions } from './message-job-options.js';

/** A message's job, as it is added to BullMQ. */
export interface MessageJob {
  queue: string;
  name: string;
  data: MessageEnvelope;
  opts: JobsOptions;
}

/** The columns of a recorded message that its job is made of (every message table has them). */
export interface RecordedMessage {
  queue: string;
  job_name: string;
  message_id: string;
  token: string;
  data: unknown;
}

/**
 * The job of a recorded message: its envelope and {@link messageJobOptions}. What is left of a
 * delay, and which stored priority applies, is the caller's to say in `options`.
 */
export function jobOf(row: RecordedMessage, options: MessageJobOptions = {}): MessageJob {
  return {
    queue: row.queue,
    name: row.job_name,
    data: { messageId: row.message_id, token: row.token, data: row.data },
    opts: messageJobOptions(row.message_id, options),
  };
}
