/**
 * The chaos campaign's poison message: a job the API accepts (its data is valid) whose handler
 * always fails, after writing a row it must never keep. The campaign loads this module into the
 * API and the workers through `ONCEQ_JOBS`. Every accepted poison message must end dead-lettered
 * (or failed), never applied; the row it writes before failing checks that a failed attempt
 * rolls back (a leaked row is an unexpected account and breaks the ledger sums).
 */
import { Type } from '@sinclair/typebox';
import { defineJob } from '../../src/jobs/define-job.js';

/** Name of the poison job. */
export const POISON_JOB_NAME = 'chaos.poison';

/** Always fails, retryably, so it spends every attempt and goes to the dead letters. */
export const poisonJob = defineJob({
  name: POISON_JOB_NAME,
  queue: 'ledger',
  schema: Type.Object({ note: Type.String({ maxLength: 200 }) }, { additionalProperties: false }),
  async handle(ctx): Promise<never> {
    await ctx.insertOnce('accounts', {
      id: ctx.messageId,
      owner: 'poison',
      opening_balance: '1000000',
      balance: '1000000',
    });
    throw new Error(`poison message ${ctx.messageId} (attempt ${ctx.attempt}): always fails`);
  },
});
