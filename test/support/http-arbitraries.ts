/**
 * fast-check arbitraries for the HTTP property tests: JSON texts written out by hand (so that
 * numbers come in every notation, keys repeat, strings carry lone surrogates raw or escaped),
 * request bodies near the enqueue contract and far from it, and the header forms of keys and
 * tokens. What a request means is decided by the oracle (http-model.ts) from the bytes, never
 * here, so a generator can be as wild as it likes.
 */
import fc from 'fast-check';
import { DEDUPE_WINDOW_MS, MAX_DEPTH, MAX_PRIORITY } from './http-model.js';

/** A JSON text, built as a tree so that generators can place odd pieces anywhere. */
export type J =
  | { k: 'raw'; text: string }
  | { k: 'str'; v: string; mode: 'json' | 'ascii' | 'raw' }
  | { k: 'arr'; items: J[] }
  | { k: 'obj'; entries: [string, J][] };

const raw = (text: string): J => ({ k: 'raw', text });
const str = (v: string, mode: 'json' | 'ascii' | 'raw' = 'json'): J => ({ k: 'str', v, mode });
const obj = (entries: [string, J][]): J => ({ k: 'obj', entries });

/** Writes a string literal: JSON.stringify's escapes, every non-ASCII unit escaped, or raw. */
function quote(v: string, mode: 'json' | 'ascii' | 'raw'): string {
  if (mode === 'json') return JSON.stringify(v);
  let out = '"';
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c < 0x20 || (mode === 'ascii' && c > 0x7e)) {
      out += `\\u${c.toString(16).padStart(4, '0')}`;
    } else out += v[i];
  }
  return `${out}"`;
}

/** The text of a tree; `ws` goes between tokens. */
export function emit(j: J, ws = ''): string {
  switch (j.k) {
    case 'raw':
      return j.text;
    case 'str':
      return quote(j.v, j.mode);
    case 'arr':
      return `[${ws}${j.items.map((i) => emit(i, ws)).join(`,${ws}`)}${ws}]`;
    case 'obj':
      return `{${ws}${j.entries.map(([k, v]) => `${quote(k, 'json')}${ws}:${ws}${emit(v, ws)}`).join(`,${ws}`)}${ws}}`;
  }
}

/** An integer written in one of many notations of the same value: 5, 5.00, 0.5e1, 500E-2. */
export function notation(n: bigint): fc.Arbitrary<string> {
  return fc
    .record({
      sci: fc.boolean(),
      shift: fc.integer({ min: -4, max: 24 }),
      zeros: fc.integer({ min: 0, max: 3 }),
      e: fc.constantFrom('e', 'E'),
      plus: fc.boolean(),
    })
    .map(({ sci, shift, zeros, e, plus }) => {
      const sign = n < 0n ? '-' : '';
      const s = (n < 0n ? -n : n).toString();
      if (!sci) return `${sign}${s}${zeros ? `.${'0'.repeat(zeros)}` : ''}`;
      if (shift < 0) return `${sign}${s}${'0'.repeat(-shift)}${e}-${-shift}`;
      const padded = s.padStart(shift + 1, '0');
      const int = padded.slice(0, padded.length - shift);
      const frac = padded.slice(padded.length - shift) + '0'.repeat(zeros);
      return `${sign}${int}${frac ? `.${frac}` : ''}${e}${plus ? '+' : ''}${shift}`;
    });
}

const TWO_53 = 2n ** 53n;

/** Integers the contract accepts, near the bounds it names. */
export const safeInteger: fc.Arbitrary<bigint> = fc.oneof(
  fc.bigInt({ min: 0n, max: 100n }),
  fc.bigInt({ min: -(TWO_53 - 1n), max: TWO_53 - 1n }),
  fc.constantFrom(
    ...[0, 1, 2 ** 31 - 1, 2 ** 31, DEDUPE_WINDOW_MS - 1, DEDUPE_WINDOW_MS, MAX_PRIORITY].map(
      BigInt,
    ),
    BigInt(MAX_PRIORITY + 1),
    TWO_53 - 1n,
    -(TWO_53 - 1n),
  ),
);

/** Integers beyond ±(2^53 − 1), which the contract refuses in every notation. */
export const unsafeInteger: fc.Arbitrary<bigint> = fc
  .tuple(
    fc.oneof(
      fc.bigInt({ min: TWO_53, max: TWO_53 + 4n }),
      fc.bigInt({ min: TWO_53, max: 2n ** 70n }),
      fc.constantFrom(2n ** 63n - 1n, 2n ** 64n - 1n, 2n ** 64n, 10n ** 20n, 10n ** 300n),
    ),
    fc.boolean(),
  )
  .map(([n, negative]) => (negative ? -n : n));

/** Number literals of every kind. */
export const numberLiteral: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: safeInteger.chain(notation) },
  { weight: 2, arbitrary: unsafeInteger.chain(notation) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      // Not finite, and an integer far beyond 2^53.
      '1e400',
      '-1e400',
      '1e309',
      '2e308',
      '1.7976931348623157e308',
      '1e-400',
      '5e-324',
      '-0',
      '0.0',
      '0e10',
      '-0E-0',
      '0.5',
      '1.5',
      '2.5e0',
      '-1',
      '1E2',
      '123456789.123456789',
    ),
  },
  // Any double, whose text may be an integer beyond 2^53 (1e+21).
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }).map(String) },
);

/** Strings: grapheme clusters, any code unit, lone surrogates, NUL, odd separators. */
export const text: fc.Arbitrary<string> = fc.oneof(
  { weight: 8, arbitrary: fc.string({ unit: 'grapheme', maxLength: 16 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 16 }) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        fc.string({ maxLength: 4 }),
        fc.integer({ min: 0xd800, max: 0xdfff }),
        fc.string({ maxLength: 4 }),
      )
      .map(([a, c, b]) => `${a}${String.fromCharCode(c)}${b}`),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '',
      'a',
      '\u0000',
      'a\u0000b',
      '\u2028\u2029',
      '\ufeff',
      '🙂',
      'e\u0301',
      '\\u0000',
    ),
  },
);

const stringNode = (s: fc.Arbitrary<string>): fc.Arbitrary<J> =>
  fc
    .tuple(s, fc.constantFrom('json', 'ascii', 'raw') as fc.Arbitrary<'json' | 'ascii' | 'raw'>)
    .map(([v, mode]) => str(v, mode));

/** Property names, the prototype's among them. */
export const keyName: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '__proto__',
      'constructor',
      'prototype',
      'toString',
      'hasOwnProperty',
      'valueOf',
      'name',
      'data',
      'queue',
      'delay',
      'priority',
      'owner',
      'openingBalance',
      'accountId',
      '',
    ),
  },
  { weight: 3, arbitrary: text },
);

/** Any JSON value, with every kind of number, string and key. */
export const anyNode: fc.Arbitrary<J> = fc.letrec<{ node: J }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { weight: 3, arbitrary: numberLiteral.map(raw) },
    { weight: 3, arbitrary: stringNode(text) },
    { weight: 2, arbitrary: fc.constantFrom('true', 'false', 'null').map(raw) },
    {
      weight: 2,
      arbitrary: fc.array(tie('node'), { maxLength: 4 }).map((items): J => ({ k: 'arr', items })),
    },
    { weight: 2, arbitrary: fc.array(fc.tuple(keyName, tie('node')), { maxLength: 4 }).map(obj) },
  ),
})).node;

/** Nesting around the contract's depth limit. */
export const deepNode: fc.Arbitrary<J> = fc
  .tuple(fc.integer({ min: MAX_DEPTH - 3, max: MAX_DEPTH + 4 }), fc.boolean())
  .map(([depth, arrays]) => {
    let node: J = raw('1');
    for (let i = 0; i < depth; i++)
      node = arrays ? { k: 'arr', items: [node] } : obj([['a', node]]);
    return node;
  });

const id = fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }).map((n) => str(n.toString()));
const owner = stringNode(
  fc.oneof(
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
    fc.constant('x'.repeat(200)),
  ),
);
const int = (min: bigint, max: bigint) => fc.bigInt({ min, max }).chain(notation).map(raw);

/** `data` that a ledger job's schema accepts (by name), written in odd ways. */
const validData: Record<string, fc.Arbitrary<[string, J][]>> = {
  'account.open': fc
    .tuple(owner, int(0n, TWO_53 - 1n), fc.option(id, { nil: undefined }))
    .map(([o, b, a]) => [
      ['owner', o],
      ['openingBalance', b],
      ...(a ? [['accountId', a] as [string, J]] : []),
    ]),
  'account.rename': fc.tuple(id, owner, int(0n, 2n ** 31n - 1n)).map(([a, o, v]) => [
    ['accountId', a],
    ['owner', o],
    ['expectedVersion', v],
  ]),
  'ledger.transfer': fc.tuple(id, id, int(1n, TWO_53 - 1n)).map(([f, t, a]) => [
    ['fromId', f],
    ['toId', t],
    ['amount', a],
  ]),
  'account.close': id.map((a) => [['accountId', a]]),
  'prop.any': fc.array(fc.tuple(keyName, anyNode), { maxLength: 3 }),
};

/** Job names: the registered ones, near misses, prototype names. */
const jobName: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...Object.keys(validData)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      'ACCOUNT.OPEN',
      'account.open ',
      'account',
      'toString',
      '__proto__',
      'x'.repeat(201),
      '',
    ),
  },
  { weight: 1, arbitrary: text },
);

/** Mutations of a job's data: as valid, one member replaced, one added, one dropped, anything. */
function dataFor(name: string): fc.Arbitrary<J> {
  const entries = Object.hasOwn(validData, name) ? validData[name]! : validData['prop.any']!;
  return fc.oneof(
    { weight: 5, arbitrary: entries.map(obj) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(entries, fc.nat(), anyNode)
        .map(([e, i, v]) => obj(e.map(([k, old], n) => [k, n === i % e.length ? v : old]))),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(entries, keyName, anyNode).map(([e, k, v]) => obj([...e, [k, v]])),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(entries, fc.nat())
        .map(([e, i]) => obj(e.filter((_, n) => n !== i % e.length))),
    },
    { weight: 1, arbitrary: anyNode },
  );
}

/** The queue of each registered job (the only one it is declared on). */
const QUEUE_OF: Record<string, string> = { 'prop.any': 'prop' };

/** An enqueue body near the contract: each member valid, odd, or missing; keys repeated. */
export const enqueueBody: fc.Arbitrary<J> = jobName.chain((name) =>
  fc
    .record({
      nameNode: fc.oneof(
        { weight: 8, arbitrary: stringNode(fc.constant(name)) },
        { weight: 1, arbitrary: anyNode },
      ),
      data: fc.oneof(
        { weight: 12, arbitrary: dataFor(name) },
        { weight: 1, arbitrary: fc.constant(undefined) },
      ),
      queue: fc.oneof(
        { weight: 6, arbitrary: fc.constant(undefined) },
        {
          weight: 2,
          arbitrary: fc.constant(str(Object.hasOwn(QUEUE_OF, name) ? QUEUE_OF[name]! : 'ledger')),
        },
        {
          weight: 1,
          arbitrary: fc
            .constantFrom(
              '',
              'x'.repeat(65),
              'a:b',
              '~x',
              'ledger ',
              // Dead-letter queues, a queue another job is on, undeclared ones.
              'ledger.dlq',
              'prop.dlq',
              'prop',
              'ledger',
              'other',
              'default',
            )
            .map((q) => str(q)),
        },
        { weight: 1, arbitrary: anyNode },
      ),
      delay: fc.oneof(
        { weight: 6, arbitrary: fc.constant(undefined) },
        { weight: 2, arbitrary: int(0n, BigInt(DEDUPE_WINDOW_MS + 2)) },
        {
          weight: 1,
          arbitrary: fc
            .constantFrom(0n, BigInt(DEDUPE_WINDOW_MS - 1), BigInt(DEDUPE_WINDOW_MS))
            .chain(notation)
            .map(raw),
        },
        { weight: 1, arbitrary: anyNode },
      ),
      priority: fc.oneof(
        { weight: 6, arbitrary: fc.constant(undefined) },
        { weight: 2, arbitrary: int(0n, BigInt(MAX_PRIORITY)) },
        {
          weight: 1,
          arbitrary: fc
            // One above the bound too.
            .constantFrom(0n, 1n, BigInt(MAX_PRIORITY), BigInt(MAX_PRIORITY + 1))
            .chain(notation)
            .map(raw),
        },
        { weight: 1, arbitrary: anyNode },
      ),
      extra: fc.oneof(
        { weight: 8, arbitrary: fc.constant([] as [string, J][]) },
        {
          weight: 2,
          arbitrary: fc.array(fc.tuple(keyName, anyNode), { minLength: 1, maxLength: 3 }),
        },
        // Up to 300 unknown members: the refusal lists a bounded number of them.
        {
          weight: 1,
          arbitrary: fc
            .integer({ min: 1, max: 300 })
            .map((n) => Array.from({ length: n }, (_, i): [string, J] => [`k${i}`, raw('0')])),
        },
      ),
      // A member sent twice: JSON.parse keeps the last.
      duplicate: fc.option(
        fc.tuple(
          fc.constantFrom('name', 'data', 'queue', 'delay', 'priority'),
          anyNode,
          fc.boolean(),
        ),
        {
          nil: undefined,
        },
      ),
      order: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
    })
    .map(({ nameNode, data, queue, delay, priority, extra, duplicate, order }) => {
      const members: [string, J][] = [['name', nameNode]];
      if (data) members.push(['data', data]);
      if (queue) members.push(['queue', queue]);
      if (delay) members.push(['delay', delay]);
      if (priority) members.push(['priority', priority]);
      // A stable shuffle by the generated weights.
      const shuffled = members
        .map((m, i) => [m, order[i % order.length]! + i / 100] as const)
        .sort((a, b) => a[1] - b[1])
        .map(([m]) => m);
      shuffled.push(...extra);
      if (duplicate) {
        const [key, value, first] = duplicate;
        if (first) shuffled.unshift([key, value]);
        else shuffled.push([key, value]);
      }
      return obj(shuffled);
    }),
);

/**
 * A body the contract accepts, in odd but valid forms: numbers in any notation, unicode, key
 * order shuffled, whitespace. (Its data for `prop.any` is any JSON, which may still be refused.)
 */
export const validEnqueueBody: fc.Arbitrary<string> = fc
  .constantFrom(...Object.keys(validData))
  .chain((name) =>
    fc.tuple(
      fc.constant(name),
      validData[name]!,
      fc.option(
        fc
          .constantFrom(
            Object.hasOwn(QUEUE_OF, name) ? QUEUE_OF[name]! : 'ledger',
            // A dead-letter queue, another job's queue, an undeclared one.
            'ledger.dlq',
            'prop.dlq',
            'prop',
            'other',
          )
          .map((q) => str(q)),
        { nil: undefined },
      ),
      fc.option(int(0n, BigInt(DEDUPE_WINDOW_MS - 1)), { nil: undefined }),
      fc.option(
        fc.oneof(
          int(0n, BigInt(MAX_PRIORITY)),
          // And one above it, which makes the body invalid.
          fc
            .constantFrom(BigInt(MAX_PRIORITY), BigInt(MAX_PRIORITY + 1))
            .chain(notation)
            .map(raw),
        ),
        { nil: undefined },
      ),
      fc.boolean(),
      fc.constantFrom('', ' ', '\n  '),
    ),
  )
  .map(([name, data, queue, delay, priority, reverse, ws]) => {
    const members: [string, J][] = [
      ['name', str(name)],
      ['data', obj(data)],
    ];
    if (queue) members.push(['queue', queue]);
    if (delay) members.push(['delay', delay]);
    if (priority) members.push(['priority', priority]);
    return emit(obj(reverse ? members.reverse() : members), ws);
  });

/** Texts that are nearly JSON, or JSON of the wrong kind. */
export const oddText: fc.Arbitrary<string> = fc.constantFrom(
  '',
  ' ',
  'null',
  '[]',
  '{}',
  '"x"',
  '0',
  '{"name":',
  'NaN',
  '{"name":"account.open","data":{"owner":"a","openingBalance":Infinity}}',
  '{"name":"account.open","data":{"owner":"a","openingBalance":1},}',
  '{"name":"account.open","data":{"owner":"a","openingBalance":01}}',
  '{"name":"account.open","data":{"owner":"a","openingBalance":0x10}}',
  '{"name":"account.open","data":{"owner":"a","openingBalance":.5}}',
  "{'name':'account.open'}",
  '/*c*/{}',
  '{"a":"\\ud800"}',
  '{"a":"\\uDFFF\\uD800"}',
  '{"a":"\\u0000"}',
  '{"a":"\\x41"}',
  '{"__proto__":{"admin":true}}',
  '{"name":"prop.any","data":{"constructor":{"prototype":{"x":1}}}}',
  '{"name":"prop.any","data":{"constructor":1,"toString":2,"hasOwnProperty":3}}',
  '{"name":"prop.any","data":[],"data":{}}',
);

/** One-character edits of a text: a valid body broken somewhere. */
export function mutated(base: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc
    .tuple(
      base,
      fc.nat(),
      fc.constantFrom('delete', 'insert', 'truncate'),
      fc.constantFrom(...'{}[],:"\\ 0-eE.'),
    )
    .map(([s, at, op, c]) => {
      const i = s.length ? at % s.length : 0;
      if (op === 'delete') return s.slice(0, i) + s.slice(i + 1);
      if (op === 'insert') return s.slice(0, i) + c + s.slice(i);
      return s.slice(0, i);
    });
}

/** A body the contract accepts but for bytes that are not UTF-8, put inside a string. */
export const notUtf8Body: fc.Arbitrary<Buffer> = fc
  .tuple(
    validEnqueueBody,
    fc.constantFrom(
      [0xff], // never in UTF-8
      [0xe9], // é in Latin-1
      [0xc3], // a lead byte without its continuation
      [0xc0, 0xaf], // an overlong '/'
      [0xed, 0xa0, 0x80], // a surrogate, UTF-8 style (CESU-8)
      [0xf4, 0x90, 0x80, 0x80], // beyond U+10FFFF
    ),
  )
  .map(([text, bytes]) => {
    // Inside the last string member, which is in `data` when there is one.
    const at = text.lastIndexOf(':"') + 2;
    const body = Buffer.from(text, 'utf8');
    const cut = Buffer.byteLength(text.slice(0, at), 'utf8');
    return Buffer.concat([body.subarray(0, cut), Buffer.from(bytes), body.subarray(cut)]);
  });

/** Request bodies as sent: a text, bytes, or none at all. */
export const bodyText: fc.Arbitrary<string | Buffer | undefined> = fc.oneof(
  // Bytes that are not UTF-8.
  { weight: 2, arbitrary: notUtf8Body as fc.Arbitrary<string | Buffer> },
  {
    weight: 12,
    arbitrary: fc
      .tuple(enqueueBody, fc.constantFrom('', ' ', '\n\t'))
      .map(([j, ws]) => emit(j, ws)),
  },
  { weight: 2, arbitrary: anyNode.map((j) => emit(j)) },
  { weight: 2, arbitrary: mutated(enqueueBody.map((j) => emit(j))) },
  // The prototype-poisoning shapes, at the top or inside `data`.
  {
    weight: 1,
    arbitrary: fc
      .tuple(enqueueBody, anyNode, fc.boolean(), fc.boolean())
      .map(([body, v, proto, inData]) => {
        const member: [string, J] = proto
          ? ['__proto__', v]
          : ['constructor', obj([['prototype', v]])];
        if (body.k !== 'obj') return emit(body);
        let placed = false;
        const entries = body.entries.map(([k, d]): [string, J] => {
          if (!inData || placed || k !== 'data' || d.k !== 'obj') return [k, d];
          placed = true;
          return [k, obj([...d.entries, member])];
        });
        return emit(obj(placed ? entries : [...entries, member]));
      }),
  },
  {
    weight: 1,
    arbitrary: deepNode.map((d) =>
      emit(
        obj([
          ['name', str('prop.any')],
          ['data', d],
        ]),
      ),
    ),
  },
  { weight: 2, arbitrary: oddText },
  // Over the test app's 16 KiB body limit (and just under it).
  {
    weight: 1,
    arbitrary: fc.integer({ min: 16_300, max: 16_500 }).map((n) =>
      emit(
        obj([
          ['name', str('prop.any')],
          ['data', str('é'.repeat(n / 2))],
        ]),
      ),
    ),
  },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

/** Content types: surely JSON, surely not, and ones the contract does not settle. */
export const contentType: fc.Arbitrary<{
  kind: 'json' | 'other' | 'unsure' | 'none';
  value?: string;
}> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .constantFrom(
        'application/json',
        'application/json; charset=utf-8',
        'application/json;charset=UTF-8',
      )
      .map((value) => ({ kind: 'json' as const, value })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(
        'text/plain',
        'application/x-www-form-urlencoded',
        'text/html; charset=utf-8',
        'application/octet-stream',
      )
      .map((value) => ({ kind: 'other' as const, value })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(
        'Application/JSON',
        'application/json; charset=latin1',
        'application/vnd.api+json',
        'application/problem+json',
        'application/jsonx',
        '',
      )
      .map((value) => ({ kind: 'unsure' as const, value })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'none' as const }) },
);

/** How the API key is presented. */
export type AuthCase =
  | { valid: true; who: 'alice' | 'bob'; form: 'Bearer' | 'bearer' | 'BEARER  ' }
  | { valid: false; form: string };

export const auth: fc.Arbitrary<AuthCase> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      valid: fc.constant(true as const),
      who: fc.constantFrom('alice', 'alice', 'alice', 'bob') as fc.Arbitrary<'alice' | 'bob'>,
      form: fc.constantFrom('Bearer', 'bearer', 'BEARER  ') as fc.Arbitrary<
        'Bearer' | 'bearer' | 'BEARER  '
      >,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      valid: fc.constant(false as const),
      form: fc.constantFrom(
        'none',
        'unknown',
        'revoked',
        'wrong-secret',
        'basic',
        'scheme-only',
        'no-scheme',
        'twice',
        'two-credentials',
        'trailing-comma',
        'random',
      ),
    }),
  },
);

/** How the Idempotency-Key header is sent. */
export type IdemCase =
  | { kind: 'missing' }
  | {
      kind: 'token';
      owner: 'alice' | 'bob';
      state: 'unused' | 'used' | 'unknown' | 'expired';
      form: 'bare' | 'quoted' | 'padded';
    }
  | { kind: 'malformed'; how: string; at: number };

export const idem: fc.Arbitrary<IdemCase> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'missing' as const }) },
  {
    weight: 10,
    arbitrary: fc.record({
      kind: fc.constant('token' as const),
      owner: fc.constantFrom('alice', 'alice', 'alice', 'bob') as fc.Arbitrary<'alice' | 'bob'>,
      state: fc.constantFrom(
        'unused',
        'unused',
        'unused',
        'used',
        'unknown',
        'expired',
      ) as fc.Arbitrary<'unused' | 'used' | 'unknown' | 'expired'>,
      form: fc.constantFrom('bare', 'bare', 'quoted', 'padded') as fc.Arbitrary<
        'bare' | 'quoted' | 'padded'
      >,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('malformed' as const),
      how: fc.constantFrom(
        'short',
        'long',
        'bad-char',
        'prefix',
        'upper-prefix',
        'params',
        'two-values',
        'twice',
        'unbalanced',
        'single-quotes',
        'escaped',
        'empty',
        'unicode',
      ),
      at: fc.nat(),
    }),
  },
);

/** Renders a malformed form of a real, unused token (so "nothing looked up" can be checked). */
export function malformedKey(token: string, how: string, at: number): string | string[] {
  const i = 4 + (at % (token.length - 4));
  switch (how) {
    case 'short':
      return token.slice(0, -1);
    case 'long':
      return `${token}A`;
    case 'bad-char':
      return `${token.slice(0, i)}!${token.slice(i + 1)}`;
    case 'prefix':
      return `oqx_${token.slice(4)}`;
    case 'upper-prefix':
      return `OQT_${token.slice(4)}`;
    case 'params':
      return `"${token}";a=1`;
    case 'two-values':
      return `${token}, ${token}`;
    case 'twice':
      return [token, token];
    case 'unbalanced':
      return `"${token}`;
    case 'single-quotes':
      return `'${token}'`;
    case 'escaped':
      return `"${token.slice(0, i)}\\${token.slice(i)}"`;
    case 'empty':
      return '';
    default:
      return `${token.slice(0, i)}é${token.slice(i + 1)}`;
  }
}
