/**
 * Request fingerprints: a SHA-256 of the canonical JSON of what was asked, so key order and
 * whitespace never make the same request look different.
 */
import { createHash } from 'node:crypto';

/**
 * JSON with object keys sorted at every depth and no whitespace. `undefined` members are dropped
 * as JSON.stringify drops them; non-finite numbers are refused rather than turned into `null`.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new TypeError(`cannot fingerprint the number ${value}`);
    }
    if (typeof value === 'bigint') throw new TypeError('cannot fingerprint a bigint; use a string');
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) {
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  }
  const entries = Object.keys(value)
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(',')}}`;
}

/** What a request asked for; its fingerprint decides replay versus reuse of a token. */
export interface RequestShape {
  name: string;
  data: unknown;
  queue: string;
  delay?: number | undefined;
  priority?: number | undefined;
}

/** `sha256:<hex>` of the canonical JSON of `{name, data, queue, delay, priority}`. */
export function requestFingerprint(request: RequestShape): string {
  const shape = {
    name: request.name,
    data: request.data,
    queue: request.queue,
    delay: request.delay ?? 0,
    priority: request.priority ?? 0,
  };
  return `sha256:${createHash('sha256').update(canonicalJson(shape)).digest('hex')}`;
}
