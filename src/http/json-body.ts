/**
 * The API's JSON body parser: Fastify's own (which refuses `__proto__` and `constructor.prototype`
 * keys), behind a scan of the raw text for what JSON.parse would silently get wrong or would
 * spend a stack on:
 *
 * - numbers beyond ±(2^53 − 1), in any notation (`9007199254740993`, `9007199254740993.0`,
 *   `9.007199254740993e15`): JSON.parse rounds them to the nearest double, so a 64-bit id sent
 *   as a number would name another row. Every double that large is an integer, so this is the
 *   rule "no integer beyond 2^53" whatever the notation. Refused, with the field's path, never
 *   rounded. Ids are decimal strings (DESIGN.md section 2).
 * - numbers that overflow a double (`1e400`): JSON.parse makes them Infinity, which a schema
 *   without a maximum accepts and which jsonb cannot store.
 * - nesting deeper than the limit.
 * - the escape `\u0000` in a string, and an escaped UTF-16 surrogate without its partner
 *   (`"\ud800"`): PostgreSQL's jsonb stores neither, so the request would fail only at the
 *   database; they are refused up front, with the field's path.
 *
 * Node 20 has no `JSON.parse` reviver with source text, so the scan reads the text itself. It
 * is skipped when the text cannot hold any of them (no run of 16 digits, no exponent, fewer
 * `{`/`[` than the depth limit, no suspect escape), which is every ordinary request.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ErrorCode } from '../core/errors.js';
import { ProblemError, problem } from './problem.js';

/** Default of the nesting limit: the request object counts as depth 1. */
export const DEFAULT_MAX_JSON_DEPTH = 32;

/** A JSON number literal (RFC 8259 section 6); anything else is left to JSON.parse. */
const JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

/** Longest piece of a refused literal quoted back in the answer. */
const QUOTED_LITERAL_MAX = 40;

/** What the scan found wrong. */
export interface JsonScanProblem {
  kind: 'depth' | 'unsafe_integer' | 'non_finite_number' | 'nul_character' | 'lone_surrogate';
  /** JSON pointer of the value. */
  path: string;
  message: string;
}

/**
 * Scans JSON text for integer literals outside the safe range, for nesting beyond `maxDepth`,
 * and for the `\u0000` escape. Malformed text is not this function's business: it stops
 * quietly and leaves the syntax error to JSON.parse.
 */
export function scanJson(text: string, maxDepth: number): JsonScanProblem | undefined {
  const mayBeDeep = countOpeners(text) > maxDepth;
  // Only 16 digits in a row or an exponent can reach 2^53: JSON puts a digit before every `e`.
  const mayHaveBigNumber = /\d{16}|\d[eE]/.test(text);
  const mayHaveBadEscape = text.includes('\\u0000') || SURROGATE_ESCAPE.test(text);
  if (!mayBeDeep && !mayHaveBigNumber && !mayHaveBadEscape) return undefined;

  // One frame per open container: its key (object) or index (array), for the path.
  const stack: { array: boolean; key: string; index: number; expectKey: boolean }[] = [];
  const pointer = (): string =>
    stack
      .map((f) => `/${f.array ? f.index : f.key.replace(/~/g, '~0').replace(/\//g, '~1')}`)
      .join('');
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length >= maxDepth) {
        return {
          kind: 'depth',
          path: pointer(),
          message: `the JSON body is nested deeper than ${maxDepth} levels`,
        };
      }
      stack.push({ array: c === 0x5b, key: '', index: 0, expectKey: c === 0x7b });
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top?.array) top.index++;
      else if (top) top.expectKey = true;
      i++;
    } else if (c === 0x3a /* : */) {
      const top = stack[stack.length - 1];
      if (top) top.expectKey = false;
      i++;
    } else if (c === 0x22 /* " */) {
      let j = i + 1;
      let bad: 'nul_character' | 'lone_surrogate' | undefined;
      while (j < n && text.charCodeAt(j) !== 0x22) {
        if (text.charCodeAt(j) !== 0x5c) {
          j++;
          continue;
        }
        if (mayHaveBadEscape && text.charCodeAt(j + 1) === 0x75 /* u */) {
          const unit = hexUnit(text, j + 2);
          if (unit === 0) bad ??= 'nul_character';
          else if (unit >= 0xd800 && unit <= 0xdbff) {
            // A high surrogate is stored only as the first half of a pair.
            const next = text.charCodeAt(j + 6) === 0x5c && text.charCodeAt(j + 7) === 0x75;
            const low = next ? hexUnit(text, j + 8) : -1;
            if (low >= 0xdc00 && low <= 0xdfff) {
              j += 12;
              continue;
            }
            bad ??= 'lone_surrogate';
          } else if (unit >= 0xdc00 && unit <= 0xdfff) bad ??= 'lone_surrogate';
          // Not four hex digits: malformed, which JSON.parse reports; step over `\u` only.
          j += unit < 0 ? 2 : 6;
          continue;
        }
        j += 2;
      }
      const top = stack[stack.length - 1];
      // A property name: its own path is the one to report (it becomes the pointer's last token).
      if (top && !top.array && top.expectKey) {
        try {
          top.key = JSON.parse(text.slice(i, j + 1)) as string;
        } catch {
          return undefined;
        }
      }
      if (bad === 'nul_character') {
        return {
          kind: bad,
          path: pointer(),
          message:
            'a string contains the character U+0000 (\\u0000), which PostgreSQL cannot store',
        };
      }
      if (bad === 'lone_surrogate') {
        return {
          kind: bad,
          path: pointer(),
          message:
            'a string contains an escaped UTF-16 surrogate without its pair (\\ud800-\\udfff), ' +
            'which is not Unicode text and which PostgreSQL cannot store',
        };
      }
      i = j + 1;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      let exponent = false;
      while (j < n) {
        const d = text.charCodeAt(j);
        if ((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x2b || d === 0x2d) j++;
        else if (d === 0x65 || d === 0x45) {
          exponent = true;
          j++;
        } else break;
      }
      // Shorter literals without an exponent are below 10^16 and cannot be unsafe.
      if (mayHaveBigNumber && (exponent || j - i > 15)) {
        const found = numberProblem(text.slice(i, j));
        if (found) return { ...found, path: pointer() };
      }
      i = j;
    } else {
      i++;
    }
  }
  return undefined;
}

/**
 * What is wrong with a number literal: it overflows a double, or its value is beyond
 * ±(2^53 − 1), where doubles are integers spaced 2 or more apart and JSON.parse rounds. The
 * value JSON.parse gives decides: for an integer literal that is exactly "beyond 2^53 − 1",
 * and `9007199254740993.0` or `9.007199254740993e15` are refused like `9007199254740993`.
 * Malformed literals are JSON.parse's to report.
 */
function numberProblem(literal: string): Omit<JsonScanProblem, 'path'> | undefined {
  if (!JSON_NUMBER.test(literal)) return undefined;
  const value = Number(literal);
  const quoted =
    literal.length > QUOTED_LITERAL_MAX ? `${literal.slice(0, QUOTED_LITERAL_MAX)}…` : literal;
  if (!Number.isFinite(value)) {
    return {
      kind: 'non_finite_number',
      message: `the number ${quoted} is too large for a double (it would become Infinity)`,
    };
  }
  if (Math.abs(value) > Number.MAX_SAFE_INTEGER) {
    return {
      kind: 'unsafe_integer',
      message:
        `the number ${quoted} is beyond ±(2^53-1) and would lose precision; ` +
        'send 64-bit ids as decimal strings',
    };
  }
  return undefined;
}

/** An escaped UTF-16 surrogate, `\\ud800` to `\\udfff` (either case). */
const SURROGATE_ESCAPE = /\\u[dD][89abcdefABCDEF]/;

/** The code unit of the four hex digits at `at`, or -1 when they are not four hex digits. */
function hexUnit(text: string, at: number): number {
  const hex = text.slice(at, at + 4);
  return /^[0-9a-fA-F]{4}$/.test(hex) ? parseInt(hex, 16) : -1;
}

function countOpeners(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) count++;
  }
  return count;
}

/** Options of {@link installJsonParser}. */
export interface JsonParserOptions {
  /** Largest body in bytes. */
  bodyLimit: number;
  /** @defaultValue {@link DEFAULT_MAX_JSON_DEPTH} */
  maxDepth?: number;
}

/** Makes the scanning `application/json` parser the app's only body parser. */
export function installJsonParser(app: FastifyInstance, options: JsonParserOptions): void {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH;
  const parse = app.getDefaultJsonParser('error', 'error');
  // JSON only: Fastify's text/plain parser would hand a string to the routes' schemas.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer', bodyLimit: options.bodyLimit },
    (request: FastifyRequest, body: string | Buffer, done) => {
      const text = decodeUtf8(request.headers['content-type'], body);
      if (typeof text !== 'string') {
        done(new ProblemError(problem(ErrorCode.BadRequest, text.problem)), undefined);
        return;
      }
      const found = scanJson(text, maxDepth);
      if (found) {
        done(
          new ProblemError(
            problem(ErrorCode.BadRequest, found.message, [
              { path: found.path, message: found.message },
            ]),
          ),
          undefined,
        );
        return;
      }
      parse(request, text, done);
    },
  );
}

/**
 * The body as text. JSON exchanged between systems is UTF-8 (RFC 8259 section 8.1): a body in
 * another declared charset, or with bytes that are not UTF-8, is refused rather than decoded
 * with U+FFFD in place of what was sent, which would store data the client never sent.
 */
function decodeUtf8(
  contentType: string | undefined,
  body: string | Buffer,
): string | { problem: string } {
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)"?/i.exec(contentType ?? '')?.[1];
  if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
    return { problem: `the body must be UTF-8 JSON; charset=${charset.slice(0, 40)} is not` };
  }
  if (typeof body === 'string') return body;
  try {
    return UTF8.decode(body);
  } catch {
    return { problem: 'the body is not valid UTF-8' };
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });
