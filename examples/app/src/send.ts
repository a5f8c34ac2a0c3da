/**
 * `npm run send`: sends messages both ways onceq takes them, and sends each one twice with its
 * token, as a caller retrying after a timeout would. Each pair is one message, one effect.
 *
 * - in process, with `createProducer` (the app's own service enqueueing);
 * - over HTTP, with `onceq/client` against a running `onceq api` (another service, or a browser).
 *
 * Prints, as one JSON line, every answer it got and the ticket's final state.
 */
import { createProducer, type EnqueueResult } from 'onceq';
import { createClient } from 'onceq/client';
import { jobs } from './jobs.js';
import { settings } from './settings.js';

const VOTES_IN_PROCESS = 3;
const VOTES_OVER_HTTP = 2;

const client = createClient({ url: settings.apiUrl, apiKey: settings.apiKey });
const producer = await createProducer({
  redis: settings.redis,
  database: settings.database,
  schema: settings.schema,
  prefix: settings.prefix,
  principal: settings.principal,
  jobs,
});

interface Sent {
  via: 'producer' | 'client';
  name: string;
  jobId: string;
  messageId: string;
  replayed: boolean;
}
const sent: Sent[] = [];
/** Both enqueues answer the same shape; `onceq/client` has its own copy of the type. */
type Answer = Pick<EnqueueResult, 'name' | 'jobId' | 'messageId' | 'replayed'>;
const record = (via: Sent['via'], r: Answer) =>
  sent.push({ via, name: r.name, jobId: r.jobId, messageId: r.messageId, replayed: r.replayed });
/** A token of the API: bound to the API key's principal, good for one request. */
const httpToken = async () => (await client.issueTokens(1))[0]!.token;

try {
  // Open the ticket over HTTP. The token is the request's identity: the second send, with the
  // same token and data, is answered with the first one's message, not a new one.
  const openToken = await httpToken();
  for (let i = 0; i < 2; i++) {
    record(
      'client',
      await client.enqueue('ticket.open', { title: 'Dark mode' }, { token: openToken }),
    );
  }
  const opened = await client.waitForJob<{ ticketId: string }>(sent[0]!.jobId, {
    timeoutMs: 20_000,
  });
  const ticketId = opened.result!.ticketId;

  // Votes in process: the producer's enqueue is typed by `jobs` (names and data).
  for (let i = 0; i < VOTES_IN_PROCESS; i++) {
    const token = await producer.issueToken();
    for (let j = 0; j < 2; j++) {
      record('producer', await producer.enqueue('ticket.upvote', { ticketId }, { token }));
    }
  }
  // Votes over HTTP.
  for (let i = 0; i < VOTES_OVER_HTTP; i++) {
    const token = await httpToken();
    for (let j = 0; j < 2; j++) {
      record('client', await client.enqueue('ticket.upvote', { ticketId }, { token }));
    }
  }

  // The producer sent under the API key's principal, so the API answers for all of them.
  const results: unknown[] = [];
  for (const jobId of new Set(sent.map((s) => s.jobId))) {
    results.push((await client.waitForJob(jobId, { timeoutMs: 20_000 })).result);
  }
  console.log(JSON.stringify({ ticketId, sent, results }));
} finally {
  await producer.close();
}
