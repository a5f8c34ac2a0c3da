/**
 * Bull Board at `/admin/queues`: the work queues and their dead-letter queues, for admin keys
 * only (401 without a valid key, 403 for a key created without `--admin`).
 *
 * A browser cannot send a bearer token when it opens a page, so these routes also accept HTTP
 * Basic credentials with the API key as the password (any user name): the 401 asks for them,
 * the browser prompts once and then sends them with every request of the board, its API calls
 * included. The key is checked exactly as a bearer key is.
 *
 * Dead-letter queues are shown read-only: their BullMQ jobs are copies for the eye, the dead
 * letters themselves live in PostgreSQL, and `onceq dlq replay` is the way back. The work queues
 * keep Bull Board's actions (retry, promote, clean, pause); none of them can apply a message
 * twice, and a job removed by hand is brought back by the reconciler.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { deadLetterQueueName } from '../../core/dead-letter.js';
import { createQueueCache } from '../../worker/queues.js';
import { sendProblem, toProblem } from '../problem.js';
import { requireAdmin, type Identity } from '../auth.js';

/** Where the board is mounted. */
export const ADMIN_QUEUES_PATH = '/admin/queues';

/** Route config marking routes that authenticate themselves (see build-app.ts). */
export const SELF_AUTHENTICATED = 'selfAuthenticated';

/** Options of {@link adminQueueRoutes}. */
export interface AdminQueuesOptions {
  /** Connection for the board's BullMQ queues (not closed here). */
  redis: Redis;
  prefix: string;
  /** Work queues to show; each one's dead-letter queue is shown too. */
  queues: readonly string[];
  /** The API's key check. */
  authenticate: (
    header: string | string[] | undefined,
    clientAddress?: string,
  ) => Promise<Identity>;
}

const CHALLENGE = 'Basic realm="onceq admin", Bearer realm="onceq"';

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
  const queueCache = createQueueCache(options.redis, options.prefix);
  const serverAdapter = new FastifyAdapter().setBasePath(ADMIN_QUEUES_PATH);
  const work = [...new Set(options.queues)].sort();
  createBullBoard({
    queues: [
      ...work.map((q) => new BullMQAdapter(queueCache.get(q))),
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
      const config = { ...(route.config as object | undefined), [SELF_AUTHENTICATED]: true };
      route.config = config as typeof route.config;
    });
    // Answers here rather than throwing: Bull Board installs its own error handler for its
    // routes, which would turn a 401 into its own JSON shape.
    board.addHook('onRequest', async (request: FastifyRequest, reply) => {
      const header = request.headers.authorization;
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
    });
    await board.register(serverAdapter.registerPlugin(), { prefix: ADMIN_QUEUES_PATH });
  });
  app.addHook('onClose', () => queueCache.close());
}
