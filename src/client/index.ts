/**
 * `onceq/client`: the typed client of onceq's producer HTTP API, for Node 20 and browsers,
 * with no dependencies. Imports nothing outside this folder (a test checks it), so it never
 * pulls the server, its drivers or `node:` modules into a bundle.
 *
 * ```ts
 * import { createClient } from 'onceq/client';
 * const onceq = createClient({ url: 'http://localhost:3000', apiKey: process.env.ONCEQ_API_KEY! });
 * const { jobId } = await onceq.enqueue('account.open', { owner: 'ada', openingBalance: 100 });
 * const status = await onceq.waitForJob(jobId, { timeoutMs: 10_000 });
 * ```
 */
export {
  createClient,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_WAIT_INTERVAL_MS,
  type CallOptions,
  type ClientOptions,
  type OnceqClient,
  type RetryEvent,
} from './client.js';
export {
  JobWaitTimeoutError,
  OnceqClientError,
  PROBLEM_CODES,
  type FieldError,
  type LocalErrorCode,
  type OnceqClientErrorInit,
  type OnceqErrorCode,
  type Problem,
  type ProblemCode,
} from './errors.js';
export { DEFAULT_RETRY, type RetryOptions, type RetryPolicy } from './retry.js';
export {
  FINAL_JOB_STATES,
  type EnqueueOptions,
  type EnqueueResult,
  type IssuedToken,
  type JobState,
  type JobStatus,
  type WaitForJobOptions,
} from './types.js';
