/** The message envelope check and the job-id mapping. */
import { expect } from 'chai';
import { envelopeProblem, jobIdFor, messageIdOf, messageTraceOf } from '../../src/core/message.js';
import { generateToken } from '../../src/core/token.js';

describe('message envelope', () => {
  const token = generateToken();

  it('accepts a snowflake up to 2^63-1, a well-formed token and data', () => {
    expect(envelopeProblem({ messageId: '9223372036854775807', token, data: null })).to.equal(
      undefined,
    );
    expect(envelopeProblem({ messageId: '252308235105689600', token, data: { a: 1 } })).to.equal(
      undefined,
    );
  });

  it('names what is wrong: an id beyond bigint, a non-canonical id, a bad token, no data', () => {
    // 19 digits, but above PostgreSQL's bigint: every insert of it would fail.
    expect(envelopeProblem({ messageId: '9223372036854775808', token, data: 1 })).to.match(
      /envelope\.messageId.*2\^63-1/,
    );
    expect(envelopeProblem({ messageId: '0123', token, data: 1 })).to.match(/envelope\.messageId/);
    expect(envelopeProblem({ messageId: 123, token, data: 1 })).to.match(/envelope\.messageId/);
    expect(envelopeProblem({ messageId: '1', token: 'nope', data: 1 })).to.match(/envelope\.token/);
    expect(envelopeProblem({ messageId: '1', token })).to.match(/envelope\.data/);
    expect(envelopeProblem('x')).to.match(/not an onceq envelope/);
  });

  it('maps message ids to job ids and back, refusing ids that are not snowflakes', () => {
    expect(messageIdOf(jobIdFor('252308235105689600'))).to.equal('252308235105689600');
    expect(messageIdOf('m-9223372036854775808')).to.equal(undefined);
    expect(messageIdOf('m-12x')).to.equal(undefined);
    expect(messageIdOf('252308235105689600')).to.equal(undefined);
  });
});

describe('message envelope: trace context', () => {
  const token = generateToken();
  const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

  it('is optional, and a malformed one never makes the envelope invalid', () => {
    for (const trace of [undefined, { context: { traceparent } }, 'junk', 42, { context: [] }]) {
      expect(envelopeProblem({ messageId: '252308235105689600', token, data: 1, trace })).to.equal(
        undefined,
      );
    }
  });

  it('reads a propagator carrier and the follow-up link flag', () => {
    expect(messageTraceOf({ context: { traceparent, tracestate: 'k=v' } })).to.deep.equal({
      context: { traceparent, tracestate: 'k=v' },
    });
    expect(messageTraceOf({ context: { traceparent }, link: true })).to.deep.equal({
      context: { traceparent },
      link: true,
    });
    // Only `true` sets the flag.
    expect(messageTraceOf({ context: { traceparent }, link: 'yes' })).to.deep.equal({
      context: { traceparent },
    });
  });

  it('ignores a malformed or oversized one (undefined), whatever its shape', () => {
    const bad: unknown[] = [
      undefined,
      null,
      'traceparent',
      { context: null },
      { context: [traceparent] },
      { context: {} },
      { context: { traceparent: 42 } },
      { context: { 'bad name': traceparent } },
      { context: { ['x'.repeat(65)]: traceparent } },
      { context: { baggage: 'x'.repeat(8193) } },
      { context: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, 'v'])) },
    ];
    for (const value of bad)
      expect(messageTraceOf(value), JSON.stringify(value)).to.equal(undefined);
    // At the bounds: accepted.
    expect(messageTraceOf({ context: { baggage: 'x'.repeat(8192) } })).to.not.equal(undefined);
  });
});
