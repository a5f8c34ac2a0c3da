/**
 * Bull Board at `/admin/queues`: the work queues and their dead-letter queues, for admin keys
 * only (401 without a valid key, 403 for a key created without `--admin`).
 *
 * A browser cannot send a bearer token when it opens a page, so these routes also accept HTTP
 * Basic credentials with the API key as the password (any user name): the 401 asks for them,
 * the browser prompts once and then sends them with every request of the board, its API calls
 * included. The key is checked exactly as a bearer key is.
 *
 * A partitioned queue is shown as its partitions, `ledger#0` … `ledger#3`, each described as
 * such: the board's views and actions work on one BullMQ queue, and a partition is one (a view
 * summing them could not retry, clean or pause anything). Its one dead-letter queue is shown once.
 *
 * Dead-letter queues are shown read-only: their BullMQ jobs are copies for the eye, the dead
 * letters themselves live in PostgreSQL, and `onceq dlq replay` is the way back.
 *
 * The work queues keep the board's actions that only move a job between states or remove it
 * (retry, promote, clean, pause, delay, priority): a retried job that had committed is a counted
 * duplicate, and a job removed by hand is brought back by the reconciler. The actions that write
 * a job's data or give one a new identity are refused (403) on every queue: editing a job's data
 * (its `messageId` or `token` is in there: the edited job runs as another message, and the
 * reconciler re-enqueues the original beside it) and adding a job (the board's "add" and
 * "duplicate": a job no producer accepted, or a second job of one message under a new id). Bull
 * Board has no per-action switch (only `readOnlyMode`, which would also take retry and clean), so
 * its routes are refused here, by method and path: anything that is not a read and not on
 * {@link BOARD_ACTIONS_ALLOWED} is refused, so an action a new Bull Board version adds is off
 * until someone has decided it is safe.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { deadLetterQueueName } from '../../core/dead-letter.js';
import { createQueueCache } from '../../queues/queue-cache.js';
import type { QueuePartitions } from '../../core/queue-partitions.js';
import { problem, sendProblem, toProblem } from '../problem.js';
import { ErrorCode } from '../../core/errors.js';
import { requireAdmin, type Identity } from '../auth.js';
import { authorizationHeader } from '../authorization-header.js';
import type { Backend } from '../../queues/backend.js';

/** Where the board is mounted. */
export const ADMIN_QUEUES_PATH = '/admin/queues';

/** Route config marking routes that authenticate themselves (see build-app.ts). */
export const SELF_AUTHENTICATED = 'selfAuthenticated';

/** Options of {@link adminQueueRoutes}. */
export interface AdminQueuesOptions {
  /** Where the queues live (not closed here). */
  backend: Backend;
  /** Work queues to show (logical names); each one's dead-letter queue is shown too. */
  queues: readonly string[];
  /** Partition counts of those queues (the registry's `partitions()`). @defaultValue none */
  partitions?: QueuePartitions;
  /** The API's key check. */
  authenticate: (
    header: string | string[] | undefined,
    clientAddress?: string,
  ) => Promise<Identity>;
}

const CHALLENGE = 'Basic realm="onceq admin", Bearer realm="onceq"';

/**
 * Bull Board's writing routes (method and path below {@link ADMIN_QUEUES_PATH}) that stay on: each
 * moves a job between states, removes it, or changes how a queue runs, and none writes a job's
 * data or mints a job. Refused among the board's current routes: `POST /api/queues/:queueName/add`
 * (add, duplicate), `PATCH /api/queues/:queueName/:jobId/update-data` (edit data) and
 * `PUT /api/queues/:queueName/job-schedulers/:schedulerId/run` (adds a job from a template).
 */
export const BOARD_ACTIONS_ALLOWED: ReadonlySet<string> = new Set([
  'PUT /api/queues/pause',
  'PUT /api/queues/resume',
  'PUT /api/queues/:queueName/pause',
  'PUT /api/queues/:queueName/resume',
  'PUT /api/queues/:queueName/retry/:queueStatus',
  'PUT /api/queues/:queueName/promote',
  'PUT /api/queues/:queueName/clean/:queueStatus',
  'PUT /api/queues/:queueName/empty',
  'PUT /api/queues/:queueName/obliterate',
  'PUT /api/queues/:queueName/concurrency',
  'PUT /api/queues/:queueName/rate-limit',
  'PUT /api/queues/:queueName/rate-limit/release',
  'PUT /api/queues/:queueName/:jobId/retry',
  'PUT /api/queues/:queueName/:jobId/clean',
  'PUT /api/queues/:queueName/:jobId/promote',
  'PATCH /api/queues/:queueName/:jobId/delay',
  'PATCH /api/queues/:queueName/:jobId/priority',
  'PUT /api/queues/:queueName/:jobId/remove-unprocessed-children',
  'PUT /api/queues/:queueName/job-schedulers/:schedulerId/remove',
  'PATCH /api/queues/:queueName/job-schedulers/:schedulerId',
]);

/** Route config marking the board's routes that are refused (see the module header). */
const REFUSED_ACTION = 'refusedBoardAction';

/** True when the board's route may run: a read, or a writing route on the allowed list. */
function boardRouteAllowed(method: string, url: string): boolean {
  if (method === 'GET' || method === 'HEAD') return true;
  const path = url.startsWith(ADMIN_QUEUES_PATH) ? url.slice(ADMIN_QUEUES_PATH.length) : url;
  return BOARD_ACTIONS_ALLOWED.has(`${method} ${path}`);
}

/** The credential of a Basic header: the password, or the user name when there is none. */
function basicCredential(header: string): string | undefined {
  const match = /^Basic[ ]+([A-Za-z0-9+/=]+)[ ]*$/i.exec(header);
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return decoded || undefined;
  return decoded.slice(colon + 1) || decoded.slice(0, colon) || undefined;
}

/** Registers the board in an encapsulated context with its own authentication hook. */
export async function adminQueueRoutes(
  app: FastifyInstance,
  options: AdminQueuesOptions,
): Promise<void> {
  const queueCache = createQueueCache(options.backend, options.partitions);
  const serverAdapter = new FastifyAdapter().setBasePath(ADMIN_QUEUES_PATH);
  const work = [...new Set(options.queues)].sort();
  createBullBoard({
    queues: [
      ...work.flatMap((q) => {
        const partitions = queueCache.partitions(q);
        if (partitions.length === 1) return [new BullMQAdapter(partitions[0]!)];
        return partitions.map(
          (queue, i) =>
            new BullMQAdapter(queue, {
              description: `partition ${i} of ${partitions.length} of queue ${q}`,
            }),
        );
      }),
      ...work.map(
        (q) =>
          new BullMQAdapter(queueCache.get(deadLetterQueueName(q)), {
            readOnlyMode: true,
            description: `dead letters of ${q}: inspect and replay with \`onceq dlq\``,
          }),
      ),
    ],
    // @bull-board/fastify pins its own copy of @bull-board/api; the interface is the same.
    serverAdapter: serverAdapter as unknown as Parameters<
      typeof createBullBoard
    >[0]['serverAdapter'],
    options: { uiConfig: { boardTitle: 'onceq' } },
  });

  await app.register(async (board) => {
    board.addHook('onRoute', (route) => {
      const methods = [route.method].flat().map((m) => m.toUpperCase());
      const refused = methods.some((m) => !boardRouteAllowed(m, route.url));
      const config = {
        ...(route.config as object | undefined),
        [SELF_AUTHENTICATED]: true,
        [REFUSED_ACTION]: refused,
      };
      route.config = config as typeof route.config;
    });
    // Answers here rather than throwing: Bull Board installs its own error handler for its
    // routes, which would turn a 401 into its own JSON shape.
    board.addHook('onRequest', async (request: FastifyRequest, reply) => {
      const header = authorizationHeader(request);
      const basic = typeof header === 'string' ? basicCredential(header) : undefined;
      try {
        const identity = await options.authenticate(
          basic === undefined ? header : `Bearer ${basic}`,
          request.ip,
        );
        request.principal = identity.principal;
        request.admin = identity.admin;
        await requireAdmin(request, reply);
      } catch (err) {
        const mapped = toProblem(err);
        const headers =
          mapped.body.status === 401 ? { 'www-authenticate': CHALLENGE } : mapped.headers;
        if (mapped.fault) request.log.error({ err }, 'admin authentication failed');
        return sendProblem(reply, mapped.body, headers);
      }
      const config = request.routeOptions.config as unknown as Record<string, unknown> | undefined;
      if (config?.[REFUSED_ACTION] === true) {
        return sendProblem(
          reply,
          problem(
            ErrorCode.Forbidden,
            "this Bull Board action is off on onceq's queues: editing a job's data or adding a " +
              'job could apply a message twice; enqueue through POST /v1/jobs, replay dead ' +
              'letters with `onceq dlq replay`',
          ),
        );
      }
    });
    await board.register(serverAdapter.registerPlugin(), { prefix: ADMIN_QUEUES_PATH });
  });
  app.addHook('onClose', () => queueCache.close());
}
