/**
 * The shapes of the producer HTTP API's requests and answers, as the client sends and returns
 * them. Written out here rather than derived from the server's schemas: `onceq/client` ships
 * to browsers and must not pull in the server.
 */

/** Options of one `enqueue`. */
export interface EnqueueOptions {
  /**
   * The queue, one the job is declared on. @defaultValue the job's queue
   */
  queue?: string;
  /** Milliseconds before the job may run, below the API's dedupe window. @defaultValue 0 */
  delay?: number;
  /** BullMQ priority: 1 is highest, 2,097,151 lowest, 0 none. @defaultValue 0 */
  priority?: number;
  /**
   * The `Idempotency-Key`: a token from {@link OnceqClient.issueTokens}. Pass one you kept to
   * make the enqueue safe across your own retries (a restart, a queue of your own): the API
   * then makes one message however often it is sent.
   * @defaultValue a fresh token, issued by this call
   */
  token?: string;
  /** Aborts the call, its retries and waits; the call then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** The answer to an accepted `enqueue` (HTTP 202). */
export interface EnqueueResult {
  /** The BullMQ job id, for {@link OnceqClient.getJob}. */
  jobId: string;
  /** The message's snowflake id, a decimal string. */
  messageId: string;
  /** The BullMQ queue the message went to. */
  queue: string;
  /** The job's name. */
  name: string;
  /** Always `queued` at acceptance; see {@link OnceqClient.getJob} for what follows. */
  state: 'queued';
  /**
   * True when the API answered with its stored answer to an earlier request with this token
   * (`Idempotent-Replayed: true`): the request was accepted before, by this call when an
   * earlier attempt's answer was lost, or by an earlier call with the same `token`.
   */
  replayed: boolean;
  /** The `Idempotency-Key` the message was accepted with. */
  token: string;
}

/** An idempotency token issued by the API, bound to the API key's principal. */
export interface IssuedToken {
  /** The token, `oqt_` and 32 base64url characters. */
  token: string;
  /** When the API forgets it unless used, an ISO 8601 timestamp. */
  expiresAt: string;
}

/** A job's state. `completed`, `failed` and `dead` are final. */
export type JobState = 'queued' | 'active' | 'completed' | 'failed' | 'dead';

/** The states {@link OnceqClient.waitForJob} stops at. */
export const FINAL_JOB_STATES: readonly JobState[] = Object.freeze(['completed', 'failed', 'dead']);

/**
 * A job's status (`GET /v1/jobs/:jobId`). `TResult` types `result` as the job's handler
 * returns it; the client does not check it.
 */
export interface JobStatus<TResult = unknown> {
  /** The BullMQ job id. */
  jobId: string;
  /** The message's snowflake id, a decimal string. */
  messageId: string;
  /** The BullMQ queue of the job. */
  queue: string;
  /** The job's name. */
  name: string;
  /** Where the job is now (see {@link JobState}). */
  state: JobState;
  /** Attempts made; `null` once the API no longer keeps the BullMQ job. */
  attempts: number | null;
  /** The handler's result, when `completed`. */
  result?: TResult;
  /** The last failure: why it failed, went dead, or is being retried. */
  error?: string;
  /** When the API accepted the message: ISO 8601, `null` when unknown. */
  acceptedAt: string | null;
  /** When a worker last took it up: ISO 8601, `null` when unknown or not yet. */
  startedAt: string | null;
  /** When it reached a final state: ISO 8601, `null` when unknown or not yet. */
  finishedAt: string | null;
}

/** Options of {@link OnceqClient.waitForJob}. */
export interface WaitForJobOptions {
  /** How long to wait for a final state before throwing {@link JobWaitTimeoutError}. */
  timeoutMs: number;
  /** Pause between two status look-ups. @defaultValue 500 */
  intervalMs?: number;
  /** Aborts the wait; it then rejects with the signal's reason. */
  signal?: AbortSignal;
}
