/**
 * The client's list of problem codes is the server's: every code the API's problem catalogue
 * answers with, and nothing else. The client cannot import the list (it stays free of the
 * server), so this test keeps the two in step.
 */
import { expect } from 'chai';
import { PROBLEM_CODES } from '../../src/client/index.js';
import { PROBLEM_CATALOGUE } from '../../src/http/problem.js';
import { ErrorCode } from '../../src/core/errors.js';

describe('client: ProblemCode matches the server', () => {
  it('lists exactly the codes of the API problem catalogue', () => {
    expect([...PROBLEM_CODES].sort()).to.deep.equal(Object.keys(PROBLEM_CATALOGUE).sort());
  });

  it('every one of them is an ErrorCode of src/core/errors.ts', () => {
    const codes: readonly string[] = Object.values(ErrorCode);
    expect(PROBLEM_CODES.filter((c) => !codes.includes(c))).to.deep.equal([]);
  });

  it('lists no code twice', () => {
    expect(new Set(PROBLEM_CODES).size).to.equal(PROBLEM_CODES.length);
  });
});
