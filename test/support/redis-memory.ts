/**
 * What a message costs Redis: tokens taken through the path the API and the worker take them
 * (issue, accept with a real request fingerprint and an in-flight window, settle, claim by an
 * owner shaped like the worker's, complete with a ledger-sized result), and the bytes Redis
 * reports for them. `MEMORY USAGE … SAMPLES 0` is exact and deterministic for a given encoding:
 * tests bound it. `used_memory` deltas move with anything else the shared Redis does: only the
 * measurement run prints them (`npx tsx test/support/redis-memory.ts [N]`, on a private prefix
 * that it deletes).
 */
import { pathToFileURL } from 'node:url';
import type { Redis } from 'ioredis';
import { requestFingerprint } from '../../src/core/fingerprint.js';
import { closeRedis } from '../../src/redis/connection.js';
import { tokenKey } from '../../src/redis/keys.js';
import { createTokenStore, type TokenStore } from '../../src/redis/token-store.js';
import { deletePrefix, testRedis, uniqueName } from './env.js';

/** A worker's claim owner (`host:pid:random:delivery`), on a pod-named host. */
export const TYPICAL_OWNER = (i: number) => `onceq-worker-7d9f8c6b5d-x2k4p:1:9f8e7d:${i}`;
/** One on a host with a long name: over 64 bytes, it turns a claimed token into a hashtable. */
export const LONG_OWNER = (i: number) =>
  `onceq-worker-production-eu-west-1-7d9f8c6b5d-x2k4p.internal:123456:a1b2c3:${i}`;

/** Bytes Redis holds for one key, its name and its value (`MEMORY USAGE`, every field). */
export async function keyBytes(redis: Redis, key: string): Promise<number> {
  const bytes = await redis.memory('USAGE', key, 'SAMPLES', 0);
  if (typeof bytes !== 'number') throw new Error(`no key ${key}`);
  return bytes;
}

/** `OBJECT ENCODING` of a key: `listpack` or `hashtable` for a hash. */
export async function encodingOf(redis: Redis, key: string): Promise<string> {
  return String(await redis.object('ENCODING', key));
}

/** `used_memory` of the whole server. */
export async function usedMemory(redis: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
}

/** Options of {@link completeMessages}. */
export interface CompleteMessagesOptions {
  principal?: string;
  ttlMs?: number;
  owner?: (i: number) => string;
  /** The claim's lease: a done key lives at least its end too. @defaultValue 30 s */
  leaseMs?: number;
  /** The handler's result of message `messageId`. */
  result?: (messageId: string) => unknown;
}

/**
 * Takes `count` tokens through a message's life, as the API and the worker do, 100 at a time;
 * returns their tokens and message ids.
 */
export async function completeMessages(
  store: TokenStore,
  count: number,
  options: CompleteMessagesOptions = {},
): Promise<{ token: string; messageId: string }[]> {
  const principal = options.principal ?? 'key_8f3a2c';
  const ttlMs = options.ttlMs ?? 86_400_000;
  const owner = options.owner ?? TYPICAL_OWNER;
  const leaseMs = options.leaseMs ?? 30_000;
  const result = options.result ?? ((id: string) => ({ status: 'applied', transferId: id }));
  const done: { token: string; messageId: string }[] = [];
  for (let from = 0; from < count; from += 100) {
    const issued = await store.issue(principal, { ttlMs, count: Math.min(100, count - from) });
    await Promise.all(
      issued.map(async ({ token }, j) => {
        const i = from + j;
        // Snowflake-sized ids: 19 digits.
        const messageId = String(7_203_691_551_471_493_121n + BigInt(i) * 4_194_304n);
        const data = { fromId: messageId, toId: '7203691551471493120', amount: 100 + i };
        const fingerprint = requestFingerprint({ name: 'ledger.transfer', data, queue: 'ledger' });
        await store.accept(token, { principal, fingerprint, messageId, ttlMs, inFlightMs: 10_000 });
        await store.settle(token, { messageId });
        await store.claim(token, { owner: owner(i), leaseMs, messageId, ttlMs });
        await store.complete(token, { messageId, result: result(messageId), ttlMs });
        done.push({ token, messageId });
      }),
    );
  }
  return done;
}

/** The measurement run: prints what N done tokens cost on a private prefix. */
async function main(count: number): Promise<void> {
  const redis = testRedis();
  const prefix = uniqueName('memory');
  try {
    const store = createTokenStore(redis, { prefix });
    const before = await usedMemory(redis);
    const done = await completeMessages(store, count);
    const after = await usedMemory(redis);
    const key = tokenKey(prefix, done[0]!.token);
    const fields = await redis.hgetall(key);
    console.log(`${count} done tokens on prefix ${prefix}`);
    console.log(
      `one done token: ${await keyBytes(redis, key)} bytes (MEMORY USAGE), ${await encodingOf(redis, key)}, key ${key.length} bytes`,
    );
    for (const [field, value] of Object.entries(fields)) {
      console.log(`  ${field} (${field.length}) = ${value} (${Buffer.byteLength(value)})`);
    }
    console.log(`used_memory per done token: ${((after - before) / count).toFixed(0)} bytes`);
  } finally {
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(Number(process.argv[2] ?? 10_000));
}
