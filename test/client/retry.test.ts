/**
 * The client's retry arithmetic: `Retry-After` in both of its forms, the full-jitter backoff's
 * bounds, and the validation of the retry options.
 */
import { expect } from 'chai';
import {
  backoffDelayMs,
  DEFAULT_RETRY,
  isRetryableStatus,
  parseRetryAfter,
  retryPolicy,
} from '../../src/client/retry.js';

describe('client: retry policy', () => {
  const now = Date.parse('2026-12-01T10:00:00Z');

  it('reads Retry-After as delay-seconds', () => {
    expect(parseRetryAfter('0', now)).to.equal(0);
    expect(parseRetryAfter('3', now)).to.equal(3_000);
    expect(parseRetryAfter(' 120 ', now)).to.equal(120_000);
  });

  it('reads Retry-After as an HTTP-date, a past one as no wait', () => {
    expect(parseRetryAfter('Tue, 01 Dec 2026 10:00:05 GMT', now)).to.equal(5_000);
    expect(parseRetryAfter('Tuesday, 01-Dec-26 10:00:02 GMT', now)).to.equal(2_000);
    expect(parseRetryAfter('Tue, 01 Dec 2026 09:59:00 GMT', now)).to.equal(0);
  });

  it('ignores an absent or unreadable Retry-After', () => {
    for (const value of [null, undefined, '', 'soon', '1.5', '-1', '2026-12-01']) {
      expect(parseRetryAfter(value, now), String(value)).to.equal(undefined);
    }
  });

  it('backs off with full jitter: within [0, min(cap, base × 2^(n−1))]', () => {
    const policy = { baseDelayMs: 100, maxDelayMs: 1_000 };
    expect(backoffDelayMs(1, policy, () => 0)).to.equal(0);
    expect(backoffDelayMs(1, policy, () => 0.9999)).to.equal(100);
    expect(backoffDelayMs(3, policy, () => 0.9999)).to.equal(400);
    expect(backoffDelayMs(10, policy, () => 0.9999)).to.equal(1_000);
    for (let n = 1; n < 20; n++) {
      expect(backoffDelayMs(n, policy)).to.be.within(0, 1_000);
    }
  });

  it('retries no answer, 5xx, 409 and 429; nothing else', () => {
    for (const s of [409, 429, 500, 502, 503, 504])
      expect(isRetryableStatus(s), `${s}`).to.equal(true);
    for (const s of [200, 400, 401, 404, 413, 422])
      expect(isRetryableStatus(s), `${s}`).to.equal(false);
  });

  it('fills in defaults and refuses options out of range', () => {
    expect(retryPolicy()).to.deep.equal(DEFAULT_RETRY);
    expect(retryPolicy({ maxAttempts: 1 })).to.include({ maxAttempts: 1, baseDelayMs: 250 });
    expect(() => retryPolicy({ maxAttempts: 0 })).to.throw(RangeError, /maxAttempts/);
    expect(() => retryPolicy({ baseDelayMs: -1 })).to.throw(RangeError, /baseDelayMs/);
    expect(() => retryPolicy({ maxDelayMs: 1.5 })).to.throw(RangeError, /maxDelayMs/);
    expect(() => retryPolicy({ maxAttemps: 3 } as never)).to.throw(RangeError, /unknown/);
  });
});
