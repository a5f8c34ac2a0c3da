/**
 * What PostgreSQL's `jsonb` refuses in text that JSON itself allows: the character U+0000, and
 * a UTF-16 surrogate without its pair (a string JavaScript holds but that is not Unicode text).
 * Data bound for a jsonb column is checked here first, so the caller gets an error naming the
 * field instead of a database error after a token was spent.
 */
import { ValidationError, type FieldError } from './errors.js';

const NUL_MESSAGE = 'contains the character U+0000, which PostgreSQL cannot store';
const SURROGATE_MESSAGE =
  'contains a UTF-16 surrogate without its pair, which PostgreSQL cannot store';

/** A surrogate code unit without its partner (the regex works on code units: no `u` flag). */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Why jsonb would refuse this string, or undefined. */
export function jsonbStringProblem(text: string): string | undefined {
  if (text.includes('\u0000')) return NUL_MESSAGE;
  if (LONE_SURROGATE.test(text)) return SURROGATE_MESSAGE;
  return undefined;
}

/**
 * The first string of a JSON-like value (a property name or a value) that jsonb would refuse,
 * with its JSON pointer; undefined when there is none. Values seen twice (shared or cyclic) are
 * visited once.
 */
export function findJsonbProblem(value: unknown): FieldError | undefined {
  const seen = new Set<object>();
  function visit(v: unknown, path: string): FieldError | undefined {
    if (typeof v === 'string') {
      const message = jsonbStringProblem(v);
      return message ? { path, message } : undefined;
    }
    if (typeof v !== 'object' || v === null || seen.has(v)) return undefined;
    seen.add(v);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const found = visit(v[i], `${path}/${i}`);
        if (found) return found;
      }
      return undefined;
    }
    for (const [key, item] of Object.entries(v)) {
      const token = key.replace(/~/g, '~0').replace(/\//g, '~1');
      const keyProblem = jsonbStringProblem(key);
      if (keyProblem) return { path: `${path}/${token}`, message: `its name ${keyProblem}` };
      const found = visit(item, `${path}/${token}`);
      if (found) return found;
    }
    return undefined;
  }
  return visit(value, '');
}

/** Throws a {@link ValidationError} naming the first string of `data` that jsonb would refuse. */
export function assertJsonbStorable(data: unknown, context: string): void {
  const found = findJsonbProblem(data);
  if (found) {
    throw new ValidationError(`${context}: ${found.path || '/'} ${found.message}`, [found]);
  }
}

/** `\u0000` written by JSON.stringify (an odd run of backslashes before it, not an escaped one). */
const NUL_ESCAPE = /(?:^|[^\\])(?:\\\\)*\\u0000/;

/**
 * A lone surrogate as JSON.stringify writes it: escaped, `\ud800` to `\udfff` (a paired one is
 * written as the character itself), after an odd run of backslashes.
 */
const LONE_SURROGATE_ESCAPE = /(?:^|[^\\])(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/;

/**
 * Why jsonb would refuse this output of JSON.stringify, or undefined: the same two problems,
 * read from the escapes JSON.stringify writes for them (what a value's toJSON produced counts).
 */
export function jsonTextProblem(json: string): string | undefined {
  if (NUL_ESCAPE.test(json)) return NUL_MESSAGE;
  if (LONE_SURROGATE_ESCAPE.test(json)) return SURROGATE_MESSAGE;
  return undefined;
}
