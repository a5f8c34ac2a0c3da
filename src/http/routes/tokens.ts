/**
 * `POST /v1/tokens`: issues idempotency tokens bound to the caller's principal.
 *
 * Without a body (or without `count`) the answer is one token, `201 {token, expiresAt}`, as
 * DESIGN.md section 3 has it. With `count` (1 to 100) it is `201 {tokens: [{token, expiresAt}]}`
 * even for `count: 1`: the shape of the answer follows the shape of the request, never a value
 * in it, so a client asking for N tokens always parses a list.
 */
import type { FastifyInstance } from 'fastify';
import type { Producer } from '../../producer/producer.js';
import type { Metrics } from '../../metrics/metrics.js';
import {
  BEARER,
  IssueTokensBody,
  IssuedTokenSchema,
  IssuedTokensSchema,
  problemResponse,
} from '../schemas.js';

/** Registers the route; with `metrics`, counts the tokens it issues. */
export function tokenRoutes(app: FastifyInstance, producer: Producer, metrics?: Metrics): void {
  app.post<{ Body: IssueTokensBody | undefined }>(
    '/v1/tokens',
    {
      schema: {
        summary: 'Issue idempotency tokens',
        description:
          'Issues tokens bound to the caller. Send `{count: N}` for up to 100 at once; the answer ' +
          'is then `{tokens: [...]}`, otherwise `{token, expiresAt}`. A principal holds a bounded ' +
          'number of outstanding tokens (issued, neither used nor expired): past it the answer ' +
          'is 429 `token_limit_reached` with `Retry-After`; using tokens makes room at once.',
        tags: ['tokens'],
        security: BEARER,
        body: IssueTokensBody,
        response: {
          201: {
            description: 'one token, or `{tokens}` when `count` was sent',
            content: {
              'application/json': {
                schema: { anyOf: [IssuedTokenSchema, IssuedTokensSchema] },
              },
            },
          },
          401: problemResponse('no or bad API key'),
          422: problemResponse('bad count'),
          429: problemResponse(
            'rate limited, or the outstanding-token bound reached (`token_limit_reached`)',
          ),
        },
      },
      // A POST without a body asks for one token: validate it as the empty object.
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request, reply) => {
      const count = request.body?.count;
      const issued = await producer.issueTokens({
        principal: request.principal,
        count: count ?? 1,
      });
      const render = (t: { token: string; expiresAt: Date }) => ({
        token: t.token,
        expiresAt: t.expiresAt.toISOString(),
      });
      metrics?.tokensIssued.inc(issued.length);
      // Tokens are credentials for one message each: no cache may keep them.
      reply.code(201).header('cache-control', 'no-store');
      return count === undefined ? render(issued[0]!) : { tokens: issued.map(render) };
    },
  );
}
