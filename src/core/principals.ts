/**
 * Principals: the names API keys map to, which tokens and accepted messages are bound to, and
 * the names onceq itself records messages under. A key whose principal is one of onceq's own
 * would read every message recorded under it (`GET /v1/jobs/:id` answers a principal its own
 * jobs): every follow-up of the outbox, every message enqueued through the library without an
 * API key. So those names are reserved: no key may be created for them.
 */

/** Principal of messages enqueued through the library without an API key (CLI, services). */
export const LOCAL_PRINCIPAL = 'local';

/** Principal of accepted messages that came from the transactional outbox (follow-ups). */
export const OUTBOX_PRINCIPAL = 'outbox';

/** Why each reserved name is onceq's, for the refusal message. */
const RESERVED: ReadonlyMap<string, string> = new Map([
  [
    LOCAL_PRINCIPAL,
    'onceq records messages enqueued through the library or `onceq enqueue` under it',
  ],
  [
    OUTBOX_PRINCIPAL,
    "onceq records handlers' follow-up messages (the transactional outbox) under it",
  ],
]);

/** Principal names onceq uses itself; no API key may be created for them. */
export const RESERVED_PRINCIPALS: readonly string[] = Object.freeze([...RESERVED.keys()]);

/** Principal names: 1 to 64 letters, digits, `_ . @ -`. */
export const PRINCIPAL_NAME = /^[A-Za-z0-9_.@-]{1,64}$/;

/** True when `name` is one of onceq's own principals. */
export function isReservedPrincipal(name: string): boolean {
  return RESERVED.has(name);
}

/**
 * Why `name` cannot be given to an API key, or `undefined` when it can. Names are compared
 * exactly, as principals are everywhere: `Outbox` is another principal than `outbox`, and reads
 * nothing of it.
 */
export function principalNameProblem(name: string): string | undefined {
  if (typeof name !== 'string' || !PRINCIPAL_NAME.test(name)) {
    return 'a principal must be 1 to 64 letters, digits, _ . @ or -';
  }
  const why = RESERVED.get(name);
  if (why !== undefined) {
    return (
      `principal "${name}" is reserved: ${why}, and a key for it would read those messages; ` +
      `choose another name (reserved: ${RESERVED_PRINCIPALS.join(', ')})`
    );
  }
  return undefined;
}
