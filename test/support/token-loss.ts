/**
 * A token store that no longer knows a token, in either mode, for the suites that run in both:
 * the case where PostgreSQL (the inbox, the accepted messages) must answer for it.
 *
 * - Redis: the token's key is deleted, as a Redis that lost its data would.
 * - PostgreSQL-only: a row cannot go missing on its own, but it does go when it expires: the row
 *   is made to expire now, and the worker's sweep (the backend's `deleteExpired`) deletes it.
 *
 * Either way `inspect` answers `undefined` afterwards, which the helper checks, so a test built
 * on it cannot pass while the token is in fact still there.
 */
import { expect } from 'chai';
import { tokenKey } from '../../src/redis/keys.js';
import type { TestStack } from './stack.js';

/** Makes the stack's token store forget `token` (see the module header). */
export async function forgetToken(stack: TestStack, token: string): Promise<void> {
  if (stack.backend.kind === 'redis') {
    await stack.redis.del(tokenKey(stack.prefix, token));
  } else {
    await stack.db
      .updateTable('message_tokens')
      .set({ expires_at_ms: '0' })
      .where('token', '=', token)
      .execute();
    const store = stack.backend.openTokenStore({ db: stack.db });
    try {
      expect(await store.deleteExpired!(), 'the sweep deleted the expired row').to.be.at.least(1);
    } finally {
      await store.close();
    }
  }
  expect(await stack.producer.tokens.inspect(token), 'the token is forgotten').to.equal(undefined);
}
