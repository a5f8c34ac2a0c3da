/**
 * `POST /v1/jobs` (enqueue with an `Idempotency-Key`) and `GET /v1/jobs/:jobId` (status).
 *
 * The Idempotency-Key table of DESIGN.md section 3, row by row:
 * - header missing / malformed (bad form, repeated): 400 before anything is looked up
 *   (`preValidation`, after authentication, body parsing and the rate limit);
 * - the request body failing its schema, the job unknown, the data failing the job's schema:
 *   422 `validation_failed`, before the token is touched (the producer validates first);
 * - first use: 202; the same request again: the same 202 and body, `Idempotent-Replayed: true`;
 * - another request with the token: 422 `idempotency_key_reused`;
 * - the token never issued, expired, or another principal's: 422 `idempotency_key_unknown`;
 * - the same request while the first is in flight: 409 `idempotency_key_in_use`, `Retry-After`.
 * The producer library does the token work (producer/producer.ts); this file maps it to HTTP.
 */
import type { FastifyInstance } from 'fastify';
import { EnqueueOptionsError, type Producer } from '../../producer/producer.js';
import { findJobStatus, type DeadLetterLookup } from '../../producer/job-status.js';
import type { Db } from '../../db/create-db.js';
import { parseIdempotencyKey } from '../../core/token.js';
import { describeFieldErrors, ErrorCode, ValidationError } from '../../core/errors.js';
import { ProblemError, problem } from '../problem.js';
import {
  AcceptedSchema,
  BEARER,
  EnqueueBody,
  JobParams,
  JobStatusSchema,
  problemResponse,
  type AcceptedBody,
} from '../schemas.js';

/** Header that marks an answer as the replay of an earlier one (IETF httpapi draft). */
export const REPLAYED_HEADER = 'idempotent-replayed';

/** What the job routes need. */
export interface JobRoutesOptions {
  db: Db;
  producer: Producer;
  deadLetters?: DeadLetterLookup;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The token of `Idempotency-Key`, once the header passed its checks. */
    idempotencyToken: string;
  }
}

/** Registers the routes. */
export function jobRoutes(app: FastifyInstance, options: JobRoutesOptions): void {
  const { producer } = options;
  app.decorateRequest('idempotencyToken', '');

  app.post<{ Body: EnqueueBody }>(
    '/v1/jobs',
    {
      schema: {
        summary: 'Enqueue a job, exactly once per Idempotency-Key',
        tags: ['jobs'],
        security: BEARER,
        headers: {
          type: 'object',
          properties: {
            'idempotency-key': {
              type: 'string',
              description: 'a token from POST /v1/tokens, bare or as an RFC 8941 string',
            },
          },
        },
        body: EnqueueBody,
        response: {
          202: AcceptedSchema,
          400: problemResponse('idempotency_key_missing, idempotency_key_malformed, bad_request'),
          401: problemResponse('no or bad API key'),
          409: problemResponse('idempotency_key_in_use (see Retry-After)'),
          413: problemResponse('payload_too_large'),
          422: problemResponse(
            'validation_failed, idempotency_key_unknown, idempotency_key_reused',
          ),
          429: problemResponse('rate limited (see Retry-After)'),
        },
      },
      preValidation: async (request) => {
        const raw = request.headers['idempotency-key'];
        if (raw === undefined) {
          throw new ProblemError(
            problem(ErrorCode.TokenMissing, 'send the header Idempotency-Key: <token>'),
          );
        }
        const token = parseIdempotencyKey(raw);
        if (token === undefined) {
          // The value stays out of the answer and the logs: it may be a real token with a typo.
          throw new ProblemError(
            problem(
              ErrorCode.TokenMalformed,
              'Idempotency-Key must be one token from POST /v1/tokens (oqt_ and 32 base64url ' +
                'characters), bare or in double quotes',
            ),
          );
        }
        request.idempotencyToken = token;
      },
    },
    async (request, reply) => {
      const { name, data, queue, delay, priority } = request.body;
      let result;
      try {
        result = await producer.enqueue(name, data, {
          token: request.idempotencyToken,
          principal: request.principal,
          queue,
          delay,
          priority,
        });
      } catch (err) {
        // The job's schema sees `data`; the client sent the whole body: point into it.
        if (err instanceof EnqueueOptionsError) {
          throw new ProblemError(
            problem(ErrorCode.ValidationFailed, err.message, err.details, err.omitted),
          );
        }
        if (err instanceof ValidationError) {
          const errors = err.details.map((f) => ({ path: `/data${f.path}`, message: f.message }));
          const detail = `invalid data for job ${name}: ${describeFieldErrors(errors, err.omitted)}`;
          throw new ProblemError(problem(ErrorCode.ValidationFailed, detail, errors, err.omitted));
        }
        throw err;
      }
      const body: AcceptedBody = {
        jobId: result.jobId,
        messageId: result.messageId,
        queue: result.queue,
        name: result.name,
        state: result.state,
      };
      if (result.replayed) reply.header(REPLAYED_HEADER, 'true');
      return reply.code(202).header('location', `/v1/jobs/${result.jobId}`).send(body);
    },
  );

  app.get<{ Params: JobParams }>(
    '/v1/jobs/:jobId',
    {
      schema: {
        summary: 'Status of a job',
        description:
          'queued, active, completed (with the result), failed or dead (with the error), ' +
          'attempts and timestamps. Only the principal that enqueued a job sees it.',
        tags: ['jobs'],
        security: BEARER,
        params: JobParams,
        response: {
          200: JobStatusSchema,
          401: problemResponse('no or bad API key'),
          404: problemResponse('no such job (or not yours)'),
        },
      },
    },
    async (request) => {
      const status = await findJobStatus(
        {
          db: options.db,
          queue: (q, id) => producer.queueFor(q, id),
          deadLetters: options.deadLetters,
        },
        request.params.jobId,
        request.admin ? undefined : request.principal,
      );
      if (!status) throw new ProblemError(problem(ErrorCode.NotFound, 'no such job'));
      return status;
    },
  );
}
