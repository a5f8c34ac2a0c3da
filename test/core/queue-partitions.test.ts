/**
 * The partition rules without I/O: names that cannot meet a user's queue, the way back to the
 * logical queue, and the routing of messageIds: in range, the same in every process and version
 * (pinned values), and even over the ids onceq actually mints (a low rate, where every sequence
 * is 0; a burst within one millisecond; many workers).
 */
import { expect } from 'chai';
import fc from 'fast-check';
import {
  logicalQueueName,
  MAX_PARTITIONS,
  partitionOf,
  partitionQueueName,
  partitionQueueNames,
  routeMessage,
} from '../../src/core/queue-partitions.js';
import { QUEUE_NAME } from '../../src/core/queue-name.js';
import { encodeSnowflake, MAX_SEQUENCE, ONCEQ_EPOCH_MS } from '../../src/core/snowflake.js';

/** Counts per partition of `ids` over `count` partitions. */
function spread(ids: readonly string[], count: number): number[] {
  const counts = new Array<number>(count).fill(0);
  for (const id of ids) counts[partitionOf(id, count)]!++;
  return counts;
}

/** True when every count is within `tolerance` (a fraction) of an even share. */
function even(counts: readonly number[], total: number, tolerance: number): boolean {
  const share = total / counts.length;
  return counts.every((c) => Math.abs(c - share) <= share * tolerance);
}

const snowflake = (timestampMs: number, workerId: number, sequence: number) =>
  encodeSnowflake({ timestampMs, workerId, sequence });

describe('core: queue partitions', () => {
  it('names partitions with a character no queue name may hold, and finds the queue back', () => {
    expect(partitionQueueNames('ledger', 4)).to.deep.equal([
      'ledger#0',
      'ledger#1',
      'ledger#2',
      'ledger#3',
    ]);
    expect(partitionQueueNames('ledger', 1)).to.deep.equal(['ledger']);
    expect(partitionQueueName('ledger', 0, 1)).to.equal('ledger');
    for (const name of partitionQueueNames('a.b-c_d', 3)) {
      expect(QUEUE_NAME.test(name), name).to.equal(false);
      expect(logicalQueueName(name)).to.equal('a.b-c_d');
    }
    expect(logicalQueueName('ledger')).to.equal('ledger');
    expect(logicalQueueName('ledger.dlq')).to.equal('ledger.dlq');
  });

  it('routes to the same partitions in every version (pinned values)', () => {
    const pinned: [string, number, number, number][] = [
      ['0', 1, 3, 97],
      ['1', 3, 2, 143],
      ['123456789', 3, 2, 107],
      ['7263728383838384', 3, 4, 227],
      ['9223372036854775807', 1, 0, 221],
    ];
    for (const [id, of4, of7, of256] of pinned) {
      expect([partitionOf(id, 4), partitionOf(id, 7), partitionOf(id, 256)], id).to.deep.equal([
        of4,
        of7,
        of256,
      ]);
    }
    expect(routeMessage('ledger', '1', 4)).to.equal('ledger#3');
    expect(routeMessage('ledger', '1', 1)).to.equal('ledger');
  });

  it('routes any id to an integer partition in range, the same each time', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }).map(String),
          fc.string({ maxLength: 40 }),
        ),
        fc.integer({ min: 1, max: MAX_PARTITIONS }),
        (id, count) => {
          const p = partitionOf(id, count);
          return Number.isInteger(p) && p >= 0 && p < count && partitionOf(id, count) === p;
        },
      ),
      { numRuns: 500 },
    );
  });

  it('spreads the ids of a low rate evenly (every sequence 0, one worker)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: ONCEQ_EPOCH_MS, max: ONCEQ_EPOCH_MS + 10 * 365 * 86_400_000 }),
        fc.integer({ min: 0, max: 1_023 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 2, max: 16 }),
        (start, workerId, stepMs, count) => {
          const ids = Array.from({ length: 8_000 }, (_, i) =>
            snowflake(start + i * stepMs, workerId, 0),
          );
          return even(spread(ids, count), ids.length, 0.25);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('spreads a burst within one millisecond, and ids of many workers, evenly', () => {
    const burst = Array.from({ length: MAX_SEQUENCE + 1 }, (_, s) =>
      snowflake(ONCEQ_EPOCH_MS + 5, 7, s),
    );
    const workers = Array.from({ length: 8_192 }, (_, i) =>
      snowflake(ONCEQ_EPOCH_MS + 1_000 + (i >> 10), i % 1_024, 0),
    );
    for (const count of [2, 3, 4, 8, 16]) {
      expect(even(spread(burst, count), burst.length, 0.25), `burst over ${count}`).to.equal(true);
      expect(even(spread(workers, count), workers.length, 0.25), `workers over ${count}`).to.equal(
        true,
      );
    }
    // 256 partitions: 65,536 consecutive low-rate ids leave no partition far from its 256.
    const many = Array.from({ length: 65_536 }, (_, i) => snowflake(ONCEQ_EPOCH_MS + i, 1, 0));
    expect(even(spread(many, 256), many.length, 0.35)).to.equal(true);
  });
});
