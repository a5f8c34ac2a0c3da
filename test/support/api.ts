/**
 * An API under test: a {@link TestStack} (own schema, own Redis prefix) with the Fastify app
 * built over it, and API keys minted into its schema. Driven with `app.inject()`; `close()`
 * closes the app, then the stack.
 */
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { Logger } from 'pino';
import { buildApp, type BuildAppOptions } from '../../src/http/build-app.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import { createTestStack, type TestStack, type TestStackOptions } from './stack.js';

export interface ApiTest {
  stack: TestStack;
  app: FastifyInstance;
  /** Mints a key for `principal` and returns it (the full `oqk_…` key). */
  key(principal: string, admin?: boolean): Promise<string>;
  /** `POST /v1/tokens` as the key's principal; returns the token. */
  token(key: string): Promise<string>;
  /** `POST /v1/jobs` with a key and an Idempotency-Key. */
  enqueue(key: string, token: string | undefined, body: unknown): Promise<LightMyRequestResponse>;
  inject(options: InjectOptions): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

export async function createApiTest(
  label: string,
  options: Partial<Omit<BuildAppOptions, 'db' | 'redis' | 'producer'>> & {
    stack?: TestStackOptions;
    logger?: Logger;
  } = {},
): Promise<ApiTest> {
  const stack = await createTestStack(label, options.stack);
  let app: FastifyInstance;
  try {
    app = await buildApp({
      db: stack.db,
      backend: stack.backend,
      producer: stack.producer,
      ids: stack.ids,
      keyCacheMs: 0,
      ...options,
    });
    await app.ready();
  } catch (err) {
    await stack.close();
    throw err;
  }
  const inject = (o: InjectOptions) => app.inject(o);
  return {
    stack,
    app,
    inject,
    async key(principal, admin = false) {
      const minted = mintApiKey();
      await insertApiKey(stack.db, { id: minted.id, principal, hash: minted.hash, admin });
      return minted.key;
    },
    async token(key) {
      const res = await inject({
        method: 'POST',
        url: '/v1/tokens',
        headers: { authorization: `Bearer ${key}` },
      });
      if (res.statusCode !== 201) throw new Error(`token: ${res.statusCode} ${res.body}`);
      return (res.json() as { token: string }).token;
    },
    enqueue(key, token, body) {
      return inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: {
          authorization: `Bearer ${key}`,
          ...(token === undefined ? {} : { 'idempotency-key': token }),
        },
        payload: body as object,
      });
    },
    async close() {
      await app.close();
      await stack.close();
    },
  };
}
