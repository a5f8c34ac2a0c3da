/** `Retry-After` as our API clients read it: delay-seconds or an HTTP-date, clamped. */
import { expect } from 'chai';
import { DEFAULT_RETRY_AFTER_BOUNDS, retryAfterMs } from '../../src/core/retry.js';

describe('core: retryAfterMs', () => {
  const now = Date.parse('2026-12-01T10:00:00Z');

  it('reads delay-seconds and HTTP-dates', () => {
    expect(retryAfterMs('5', now)).to.equal(5_000);
    expect(retryAfterMs(' 2 ', now)).to.equal(2_000);
    expect(retryAfterMs('Tue, 01 Dec 2026 10:00:03 GMT', now)).to.equal(3_000);
  });

  it('clamps: never a busy loop, never an unbounded wait', () => {
    expect(retryAfterMs('0', now)).to.equal(DEFAULT_RETRY_AFTER_BOUNDS.minMs);
    expect(retryAfterMs('Tue, 01 Dec 2026 09:00:00 GMT', now)).to.equal(100);
    expect(retryAfterMs('86400', now)).to.equal(DEFAULT_RETRY_AFTER_BOUNDS.maxMs);
    expect(retryAfterMs('40', now, { defaultMs: 1, minMs: 1, maxMs: 60_000 })).to.equal(40_000);
  });

  it('falls back to the default when absent or unreadable', () => {
    for (const header of [undefined, null, '', '-1', '1.5', 'soon']) {
      expect(retryAfterMs(header, now), String(header)).to.equal(
        DEFAULT_RETRY_AFTER_BOUNDS.defaultMs,
      );
    }
  });
});
