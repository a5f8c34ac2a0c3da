/**
 * The decoder both token stores share (src/core/token-codes.ts): a reply that no transition
 * gives is `ScriptFailed`, never a result; well-formed replies map to their results.
 */
import { expect } from 'chai';
import { ErrorCode, OnceqError, TokenMismatchError } from '../../src/core/errors.js';
import { toTokenResult, type TokenOp } from '../../src/core/token-codes.js';

const MID = '7203691551471493121';
const OTHER_MID = '7203691551471493122';

describe('core/token-codes: toTokenResult', () => {
  const garbled: [TokenOp, unknown][] = [
    ['claim', null],
    ['claim', 'OK'],
    ['claim', []],
    ['claim', ['4', 1]],
    ['claim', [99]],
    ['claim', [6, 1]], // a renew code from the claim script
    ['claim', [4]],
    ['claim', [4, 1.5]],
    ['claim', [4, '1700000000000']],
    ['claim', [5, '{not json']],
    ['claim', [-4, 1]],
    ['accept', [2, '12a']],
    ['accept', [2, 123]],
    ['accept', [3, MID, 'limbo']],
    ['renew', [-6, 'limbo', '']],
    ['issue', [1]],
    ['complete', [9]],
  ];
  for (const [op, reply] of garbled) {
    it(`${op}: ${JSON.stringify(reply)} → ScriptFailed`, () => {
      let thrown: unknown;
      try {
        toTokenResult(op, reply);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).to.be.instanceOf(OnceqError);
      expect((thrown as OnceqError).code).to.equal(ErrorCode.ScriptFailed);
    });
  }

  it('maps well-formed replies', () => {
    expect(toTokenResult('claim', [4, 1_700_000_000_000])).to.deep.equal({
      status: 'claimed',
      leaseUntil: 1_700_000_000_000,
    });
    expect(toTokenResult('renew', [-6, 'missing', ''])).to.deep.equal({
      status: 'lost',
      state: 'missing',
      owner: undefined,
    });
    expect(() => toTokenResult('complete', [-5, MID], OTHER_MID)).to.throw(TokenMismatchError);
  });
});
