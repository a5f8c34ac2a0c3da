/**
 * The JSON schemas of the API, in TypeBox: the same objects validate requests (Fastify's Ajv)
 * and describe them in the OpenAPI document at /docs (@fastify/swagger).
 */
import { Type, type Static } from '@sinclair/typebox';
import { MAX_ISSUE_COUNT } from '../redis/token-store.js';
import { MAX_PRIORITY, MAX_REPORTED_ERRORS } from '../core/limits.js';

/** A problem+json body (RFC 9457) with onceq's stable `code`. */
export const ProblemSchema = Type.Object(
  {
    type: Type.String({ description: 'urn:onceq:problem:<code>' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'stable machine-readable code' }),
    errors: Type.Optional(
      Type.Array(
        Type.Object({
          path: Type.String({ description: 'JSON pointer into the request body' }),
          message: Type.String(),
        }),
        { maxItems: MAX_REPORTED_ERRORS, description: `at most ${MAX_REPORTED_ERRORS}` },
      ),
    ),
    errorsOmitted: Type.Optional(
      Type.Integer({ minimum: 1, description: 'failing fields beyond those listed in errors' }),
    ),
  },
  { $id: 'Problem', title: 'Problem' },
);

/** `POST /v1/tokens` body; optional. */
export const IssueTokensBody = Type.Object(
  {
    count: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_ISSUE_COUNT,
        description: `how many tokens (1 to ${MAX_ISSUE_COUNT}); when given, the answer is {tokens: [...]}`,
      }),
    ),
  },
  { additionalProperties: false },
);
export type IssueTokensBody = Static<typeof IssueTokensBody>;

/** One issued token. */
export const IssuedTokenSchema = Type.Object({
  token: Type.String({ description: 'oqt_ followed by 32 base64url characters' }),
  expiresAt: Type.String({ format: 'date-time' }),
});

/** Several issued tokens (the answer when `count` was sent). */
export const IssuedTokensSchema = Type.Object({ tokens: Type.Array(IssuedTokenSchema) });

/** `POST /v1/jobs` body. */
export const EnqueueBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200, description: 'a registered job name' }),
    data: Type.Unknown({ description: "the job's data; validated against the job's schema" }),
    queue: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9_.-]{1,64}$',
        description:
          "defaults to the job's; only a queue the job is declared on, never a dead-letter queue",
      }),
    ),
    delay: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: Number.MAX_SAFE_INTEGER,
        description: 'ms; below the dedupe window (ONCEQ_DEDUPE_WINDOW)',
      }),
    ),
    priority: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MAX_PRIORITY,
        description: `1 is highest, ${MAX_PRIORITY} (BullMQ's limit) lowest; 0 is none`,
      }),
    ),
  },
  { additionalProperties: false },
);
export type EnqueueBody = Static<typeof EnqueueBody>;

/** `POST /v1/jobs` 202 body. */
export const AcceptedSchema = Type.Object({
  jobId: Type.String(),
  messageId: Type.String({ description: 'snowflake, decimal string' }),
  queue: Type.String(),
  name: Type.String(),
  state: Type.Literal('queued'),
});
export type AcceptedBody = Static<typeof AcceptedSchema>;

/** `GET /v1/jobs/:jobId` params. */
export const JobParams = Type.Object({ jobId: Type.String({ maxLength: 64 }) });
export type JobParams = Static<typeof JobParams>;

const Timestamp = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);

/** `GET /v1/jobs/:jobId` 200 body. */
export const JobStatusSchema = Type.Object({
  jobId: Type.String(),
  messageId: Type.String(),
  queue: Type.String(),
  name: Type.String(),
  state: Type.Union(
    ['queued', 'active', 'completed', 'failed', 'dead'].map((s) => Type.Literal(s)),
  ),
  attempts: Type.Union([Type.Integer(), Type.Null()], {
    description: 'attempts made; null when the BullMQ job is gone',
  }),
  result: Type.Optional(Type.Unknown({ description: "the handler's result (completed)" })),
  error: Type.Optional(Type.String({ description: 'last failure (failed, dead, retrying)' })),
  acceptedAt: Timestamp,
  startedAt: Timestamp,
  finishedAt: Timestamp,
});

/** Health answers. */
export const HealthSchema = Type.Object({
  status: Type.String(),
  checks: Type.Optional(Type.Record(Type.String(), Type.String())),
});

/** Response entry for a problem status, keyed by media type for the OpenAPI document. */
export function problemResponse(description: string) {
  return { description, content: { 'application/problem+json': { schema: Type.Ref('Problem') } } };
}

/** Documents the Authorization header of protected routes. */
export const BEARER = [{ bearerAuth: [] as string[] }];
