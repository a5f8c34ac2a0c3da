/** What PostgreSQL's jsonb refuses, found with its JSON pointer before anything is written. */
import { expect } from 'chai';
import { findJsonbProblem, jsonbStringProblem } from '../../src/core/jsonb.js';

describe('core: jsonb-storable text', () => {
  it('flags U+0000 and unpaired surrogates, not pairs or ordinary text', () => {
    expect(jsonbStringProblem('plain')).to.equal(undefined);
    expect(jsonbStringProblem('\ud83d\ude00 and é')).to.equal(undefined);
    expect(jsonbStringProblem('\\u0000 is six characters')).to.equal(undefined);
    expect(jsonbStringProblem('a\u0000b')).to.match(/U\+0000/);
    for (const text of ['\ud800', 'x\udbff', '\udc00x', '\ude00\ud83d', '\ud83d\ud83d\ude00']) {
      expect(jsonbStringProblem(text), JSON.stringify(text)).to.match(/surrogate/);
    }
  });

  it('finds the first bad string in values and property names, with its pointer', () => {
    expect(findJsonbProblem({ a: [1, 'ok', { b: 'fine' }] })).to.equal(undefined);
    expect(findJsonbProblem({ a: [1, 'ok', { 'b/c': 'x\u0000' }] })?.path).to.equal('/a/2/b~1c');
    expect(findJsonbProblem(['\ud800'])?.path).to.equal('/0');
    expect(findJsonbProblem('\udfff')?.path).to.equal('');
    const key = findJsonbProblem({ nested: { 'k\ud800': 1 } });
    expect(key?.path).to.equal('/nested/k\ud800');
    expect(key?.message).to.match(/^its name/);
  });

  it('visits shared and cyclic values once', () => {
    const cycle: Record<string, unknown> = { name: 'ok' };
    cycle.self = cycle;
    expect(findJsonbProblem(cycle)).to.equal(undefined);
    const shared = { s: 'x' };
    expect(findJsonbProblem({ a: shared, b: shared, c: 'bad\u0000' })?.path).to.equal('/c');
  });
});
