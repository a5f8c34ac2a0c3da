/**
 * The HTTP contract of DESIGN.md section 3 as an oracle, for the property tests in
 * test/http/property.test.ts: given the bytes of a request, which answers the contract allows.
 * The oracle reads the request itself (its own JSON scan, its own number arithmetic); it shares
 * nothing with src/http but the job schemas (the contract's "data failing its schema") and the
 * problem catalogue (the contract's "stable code").
 *
 * It follows the order of Fastify's request lifecycle, which the contract's rows imply: the API
 * key (401 before anything else), then the body as JSON (413, 400 `bad_request`), then the
 * `Idempotency-Key` header (400), then the request itself (422) and the token (422, 202). Within
 * one layer the contract orders nothing, so any code that applies in it is allowed.
 */

/** Largest JSON nesting the API accepts (the request object is depth 1). */
export const MAX_DEPTH = 32;
/** The dedupe window (`ONCEQ_DEDUPE_WINDOW`, default 7 days): `delay` must stay below it. */
export const DEDUPE_WINDOW_MS = 7 * 86_400_000;
/** BullMQ's largest priority. */
export const MAX_PRIORITY = 2_097_151;

const TWO_53 = 2n ** 53n;

/** What a number literal is, exactly (the text, not what JSON.parse rounds it to). */
export function numberLiteralIsRefused(literal: string): boolean {
  if (!Number.isFinite(Number(literal))) return true;
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (!m) return false;
  const digits = (m[2]! + (m[3] ?? '')).replace(/^0+/, '');
  if (digits === '') return false; // zero in any notation
  const exponent = Number(m[4] ?? 0) - (m[3]?.length ?? 0);
  // value = digits × 10^exponent. An integer iff the exponent is >= 0 once trailing zeros of
  // the digits are moved into it.
  const trimmed = digits.replace(/0+$/, '');
  const scale = exponent + (digits.length - trimmed.length);
  // Not an integer: beyond ±(2^53−1) doubles hold no fractions, so such a number is rounded
  // like an integer would be, and refused by the value JSON.parse gives it (README: "a number
  // beyond ±(2^53−1) in any notation"). Found by seed -1688248364: 93002621606.022547263980e10.
  if (scale < 0) return Math.abs(Number(literal)) > Number.MAX_SAFE_INTEGER;
  if (trimmed.length + scale > 400) return true; // far beyond 2^53 (and not finite anyway)
  return BigInt(trimmed) * 10n ** BigInt(scale) >= TWO_53;
}

/** Facts about a JSON text that the body layer refuses, read from the text as sent. */
export interface BodyFacts {
  /** JSON.parse accepts it. */
  json: boolean;
  value?: unknown;
  /** Why the body layer must refuse it (empty when it need not). */
  refusals: string[];
  /**
   * What the text holds in members that a repeated key hides from the parsed value: refusing
   * them is allowed (the bytes hold them), accepting them too (JSON.parse keeps the last).
   */
  hidden: string[];
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Why a string (a name or a value) cannot be stored, if it cannot. */
function badString(s: string): string | undefined {
  if (s.includes('\u0000')) return 'U+0000 in a string';
  if (LONE_SURROGATE.test(s)) return 'lone surrogate in a string';
  return undefined;
}

/** Reads a body the way the contract sees it: parse, nesting, numbers, prototype keys, text. */
export function bodyFacts(text: string): BodyFacts {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { json: false, refusals: ['not JSON'], hidden: [] };
  }
  const fromText: string[] = [];
  // Nesting, number literals and strings, from the text; and whether any key repeats.
  const frames: { keys: Set<string> | undefined; expectKey: boolean }[] = [];
  let deepest = 0;
  let repeated = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    const top = frames[frames.length - 1];
    if (c === '"') {
      const start = i++;
      while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      const s = JSON.parse(text.slice(start, i + 1)) as string;
      const bad = badString(s);
      if (bad) fromText.push(bad);
      if (top?.keys && top.expectKey) {
        if (top.keys.has(s)) repeated = true;
        top.keys.add(s);
      }
    } else if (c === '{' || c === '[') {
      frames.push({ keys: c === '{' ? new Set() : undefined, expectKey: c === '{' });
      deepest = Math.max(deepest, frames.length);
    } else if (c === '}' || c === ']') frames.pop();
    else if (c === ':' && top) top.expectKey = false;
    else if (c === ',' && top) top.expectKey = top.keys !== undefined;
    else if (c === '-' || (c >= '0' && c <= '9')) {
      const literal = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i))![0];
      if (numberLiteralIsRefused(literal)) fromText.push(`number ${literal}`);
      i += literal.length - 1;
    }
  }
  if (deepest > MAX_DEPTH) fromText.push('too deep');
  const fromValue: string[] = [];
  walk(value, (key, v) => {
    if (key === '__proto__') fromValue.push('__proto__ key');
    if (key === 'constructor' && v !== null && typeof v === 'object' && hasOwn(v, 'prototype')) {
      fromValue.push('constructor.prototype key');
    }
    for (const s of key === undefined ? [v] : [key, v]) {
      const bad = typeof s === 'string' ? badString(s) : undefined;
      if (bad) fromValue.push(bad);
    }
  });
  if (!repeated) return { json: true, value, refusals: [...fromText, ...fromValue], hidden: [] };
  // With a repeated key, what the text holds may be gone from the value: the text's findings
  // may be refused, the value's must be (nesting is seen in the value too, but the text's is
  // at least as deep).
  return { json: true, value, refusals: fromValue, hidden: [...fromText, 'repeated key'] };
}

function hasOwn(o: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, key);
}

/** Calls `visit(key, value)` for every member (key undefined for array items and the root). */
function walk(value: unknown, visit: (key: string | undefined, v: unknown) => void): void {
  const stack: [string | undefined, unknown][] = [[undefined, value]];
  while (stack.length) {
    const [key, v] = stack.pop()!;
    visit(key, v);
    if (Array.isArray(v)) for (const item of v) stack.push([undefined, item]);
    else if (v !== null && typeof v === 'object') {
      for (const k of Object.keys(v)) stack.push([k, (v as Record<string, unknown>)[k]]);
    }
  }
}

/** JSON with sorted keys: what "the same request" compares. */
export function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The jobs the contract knows of: each one's queue and a check of its data. */
export type JobCatalogue = ReadonlyMap<string, { queue: string; valid(data: unknown): boolean }>;

/** Why an enqueue body fails the contract (empty: it passes), and the request it asks for. */
export function enqueueProblems(
  body: unknown,
  jobs: JobCatalogue,
): { problems: string[]; request?: string } {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { problems: ['not an object'] };
  }
  const b = body as Record<string, unknown>;
  const problems: string[] = [];
  for (const k of Object.keys(b)) {
    if (!['name', 'data', 'queue', 'delay', 'priority'].includes(k)) problems.push(`key ${k}`);
  }
  const job = typeof b.name === 'string' && jobs.has(b.name) ? jobs.get(b.name) : undefined;
  if (!job) problems.push('name');
  else if (!hasOwn(b, 'data') || !job.valid(b.data)) problems.push('data');
  if (hasOwn(b, 'queue') && (!job || b.queue !== job.queue)) problems.push('queue');
  const int = (v: unknown, max: number) =>
    typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
  if (hasOwn(b, 'delay') && !int(b.delay, DEDUPE_WINDOW_MS - 1)) problems.push('delay');
  if (hasOwn(b, 'priority') && !int(b.priority, MAX_PRIORITY)) problems.push('priority');
  if (problems.length || !job) return { problems };
  return {
    problems,
    request: canonical({
      name: b.name,
      data: b.data,
      queue: b.queue ?? job.queue,
      delay: b.delay ?? 0,
      priority: b.priority ?? 0,
    }),
  };
}

/** How a request's body arrives. */
export interface SentBody {
  /** The body text, after UTF-8 encoding (lone surrogates sent raw arrive as U+FFFD). */
  text: string | undefined;
  bytes: number;
  /** `json`: an application/json type; `other`: surely not; `unsure`: the contract does not say. */
  contentType: 'json' | 'other' | 'unsure' | 'none';
  /** False when the bytes are not UTF-8, which JSON text must be (RFC 8259 section 8.1). */
  utf8?: boolean;
}

/** The text of a body as sent, and whether its bytes are UTF-8 at all. */
export function decodeBody(bytes: Buffer): { text: string; utf8: boolean } {
  try {
    return { text: new TextDecoder('utf-8', { fatal: true }).decode(bytes), utf8: true };
  } catch {
    return { text: bytes.toString('utf8'), utf8: false };
  }
}

/**
 * The answers the body layer allows: `undefined` when the body passes it (parsed value in
 * `value`), else the codes it may answer with.
 */
export function bodyLayer(
  body: SentBody,
  bodyLimit: number,
): { codes?: string[]; value?: unknown; maybeRefused: boolean } {
  if (body.text === undefined || body.text === '') {
    // No body at all. With a Content-Type, it may be refused as an empty body of that type;
    // without one there is nothing to parse.
    return { value: undefined, maybeRefused: body.contentType !== 'none' };
  }
  const codes = new Set<string>();
  if (body.contentType === 'other') codes.add('bad_request');
  if (body.bytes > bodyLimit) {
    codes.add('payload_too_large');
    // A type no parser takes may be refused before the size is known, and the reverse.
    if (body.contentType !== 'json') codes.add('bad_request');
    return { codes: [...codes], maybeRefused: true };
  }
  if (codes.size) return { codes: [...codes], maybeRefused: true };
  const facts = bodyFacts(body.text);
  if (facts.refusals.length || body.utf8 === false) {
    return { codes: ['bad_request'], maybeRefused: true };
  }
  // A body the contract does not say is JSON may still be refused as not JSON.
  return {
    value: facts.value,
    maybeRefused: body.contentType !== 'json' || facts.hidden.length > 0,
  };
}
