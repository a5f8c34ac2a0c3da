/**
 * The error catalogue: every class has a stable code, `name` from the class, and keeps `cause`.
 * These three were plain `Error`s before they joined it.
 */
import { expect } from 'chai';
import { ErrorCode, InvalidArgumentError, OnceqError } from '../../src/core/errors.js';
import { TimeoutError, withTimeout } from '../../src/core/with-timeout.js';
import { CommitFailedError } from '../../src/db/message-transaction.js';

describe('core: error catalogue', () => {
  it('TimeoutError from withTimeout carries the timeout code and its class name', async () => {
    const err = await withTimeout(new Promise(() => undefined), 5).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(TimeoutError).and.instanceOf(OnceqError);
    expect(err).to.include({ code: ErrorCode.Timeout, name: 'TimeoutError' });
    expect((err as Error).message).to.equal('no answer in 5 ms');
  });

  it('CommitFailedError and InvalidArgumentError carry their codes and class names', () => {
    expect(new CommitFailedError('COMMIT answered ROLLBACK')).to.include({
      code: 'commit_failed',
      name: 'CommitFailedError',
      message: 'COMMIT answered ROLLBACK',
    });
    expect(new InvalidArgumentError('bad')).to.include({
      code: 'invalid_argument',
      name: 'InvalidArgumentError',
    });
  });

  it('keeps the cause it is given', () => {
    const cause = new Error('underneath');
    expect(new OnceqError(ErrorCode.Timeout, 'late', { cause }).cause).to.equal(cause);
  });
});
