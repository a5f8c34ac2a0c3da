import { expect } from 'chai';
import {
  compareSnowflakes,
  decodeSnowflake,
  encodeSnowflake,
  firstSnowflakeAt,
  isSnowflake,
  MAX_SEQUENCE,
  MAX_SNOWFLAKE,
  MAX_SNOWFLAKE_TIME_MS,
  MAX_WORKER_ID,
  ONCEQ_EPOCH_MS,
  snowflakeTimeMs,
} from '../../src/core/snowflake.js';

describe('core/snowflake', () => {
  it('places the fields at 22/12/0 bits after a 2025 epoch', () => {
    expect(ONCEQ_EPOCH_MS).to.equal(Date.parse('2025-01-01T00:00:00.000Z'));
    const id = encodeSnowflake({ timestampMs: ONCEQ_EPOCH_MS + 1, workerId: 1, sequence: 1 });
    expect(id).to.equal(((1n << 22n) | (1n << 12n) | 1n).toString());
  });

  it('round-trips every field, including their extremes', () => {
    const cases = [
      { timestampMs: ONCEQ_EPOCH_MS, workerId: 0, sequence: 0 },
      { timestampMs: ONCEQ_EPOCH_MS + 123_456_789, workerId: 517, sequence: 42 },
      { timestampMs: Date.UTC(2031, 4, 6, 7, 8, 9, 10), workerId: 1, sequence: MAX_SEQUENCE },
      { timestampMs: MAX_SNOWFLAKE_TIME_MS, workerId: MAX_WORKER_ID, sequence: MAX_SEQUENCE },
    ];
    for (const parts of cases) {
      const id = encodeSnowflake(parts);
      expect(isSnowflake(id), id).to.equal(true);
      expect(decodeSnowflake(id)).to.deep.equal(parts);
      expect(snowflakeTimeMs(id)).to.equal(parts.timestampMs);
    }
    // The last representable id is exactly PostgreSQL's bigint maximum.
    expect(
      encodeSnowflake({
        timestampMs: MAX_SNOWFLAKE_TIME_MS,
        workerId: MAX_WORKER_ID,
        sequence: MAX_SEQUENCE,
      }),
    ).to.equal('9223372036854775807');
  });

  it('keeps ids above 2^53 exact (strings and BigInt, never number)', () => {
    // 2030: far above Number.MAX_SAFE_INTEGER once shifted by 22 bits.
    const parts = { timestampMs: Date.UTC(2030, 0, 1), workerId: 1022, sequence: 4095 };
    const id = encodeSnowflake(parts);
    expect(BigInt(id) > BigInt(Number.MAX_SAFE_INTEGER)).to.equal(true);
    // A number cannot hold it: the round trip through Number changes the value.
    expect(BigInt(Number(id)).toString()).to.not.equal(id);
    const next = (BigInt(id) + 1n).toString();
    expect(Number(next)).to.equal(Number(id)); // indistinguishable as numbers …
    expect(decodeSnowflake(next).sequence).to.equal(0); // … but decoded exactly as strings
    expect(decodeSnowflake(next).workerId).to.equal(1023);
    expect(decodeSnowflake(id)).to.deep.equal(parts);
    expect(compareSnowflakes(id, next)).to.equal(-1);
    expect(compareSnowflakes(next, id)).to.equal(1);
    expect(compareSnowflakes(id, id)).to.equal(0);
  });

  it('orders ids by time: firstSnowflakeAt bounds every id minted earlier', () => {
    const t = Date.UTC(2026, 5, 1);
    const lastBefore = encodeSnowflake({
      timestampMs: t - 1,
      workerId: MAX_WORKER_ID,
      sequence: MAX_SEQUENCE,
    });
    const first = firstSnowflakeAt(t);
    expect(BigInt(lastBefore) < BigInt(first)).to.equal(true);
    expect(decodeSnowflake(first)).to.deep.equal({ timestampMs: t, workerId: 0, sequence: 0 });
  });

  it('isSnowflake rejects junk, signs, leading zeros, fractions and values past 2^63 - 1', () => {
    const rejected = [
      '',
      ' 1',
      '1 ',
      'abc',
      '12a',
      '-1',
      '+1',
      '-9223372036854775807',
      '01',
      '00',
      '1.5',
      '1e10',
      '0x10',
      '9223372036854775808', // 2^63
      '18446744073709551615', // 2^64 - 1
      '99999999999999999999',
      '١٢٣', // non-ASCII digits
    ];
    for (const value of rejected) expect(isSnowflake(value), JSON.stringify(value)).to.equal(false);
    expect(isSnowflake(123 as unknown as string)).to.equal(false);
    for (const value of ['0', '1', '9223372036854775807', MAX_SNOWFLAKE.toString()]) {
      expect(isSnowflake(value), value).to.equal(true);
    }
  });

  it('decode refuses what isSnowflake rejects; encode refuses fields out of range', () => {
    expect(() => decodeSnowflake('9223372036854775808')).to.throw(RangeError, /not a snowflake/);
    expect(() => decodeSnowflake('-5')).to.throw(RangeError);
    const ok = { timestampMs: ONCEQ_EPOCH_MS, workerId: 1, sequence: 0 };
    expect(() => encodeSnowflake({ ...ok, timestampMs: ONCEQ_EPOCH_MS - 1 })).to.throw(
      RangeError,
      /timestamp/,
    );
    expect(() => encodeSnowflake({ ...ok, timestampMs: MAX_SNOWFLAKE_TIME_MS + 1 })).to.throw(
      RangeError,
    );
    expect(() => encodeSnowflake({ ...ok, workerId: 1024 })).to.throw(RangeError, /worker id/);
    expect(() => encodeSnowflake({ ...ok, workerId: -1 })).to.throw(RangeError);
    expect(() => encodeSnowflake({ ...ok, sequence: 4096 })).to.throw(RangeError, /sequence/);
    expect(() => encodeSnowflake({ ...ok, sequence: 0.5 })).to.throw(RangeError);
  });

  it('lasts until 2094 with the 2025 epoch', () => {
    expect(new Date(MAX_SNOWFLAKE_TIME_MS).toISOString()).to.match(/^2094-09-07T/);
  });
});
