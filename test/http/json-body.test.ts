/**
 * The number rule of the body scan (src/http/json-body.ts), stated without floating point: an
 * integer beyond ±(2^53 − 1) is refused in every notation JSON allows (`…93`, `…93.0`,
 * `9.…93e15`, `…930e-1`, `0.…93e16`), as is a number that overflows a double; a safe integer is
 * accepted in every notation and parses to itself exactly; the refusal names the field. The
 * integers and their spellings are exact (BigInt and strings), so the properties do not lean on
 * the `Number()` the scan itself uses. fast-check, with the examples that motivated the rule.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { scanJson } from '../../src/http/json-body.js';

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const DEPTH = 32;

/** Every way this test writes the integer `value` as a JSON number; all denote it exactly. */
function notations(value: bigint): fc.Arbitrary<string> {
  const sign = value < 0n ? '-' : '';
  const digits = (value < 0n ? -value : value).toString();
  const e = fc.constantFrom('e', 'E', 'e+', 'E+');
  const zeros = fc.integer({ min: 1, max: 5 }).map((n) => '0'.repeat(n));
  return fc.oneof(
    fc.constant(`${sign}${digits}`),
    zeros.map((z) => `${sign}${digits}.${z}`),
    // The point moved left by `shift` places, the exponent moving it back.
    fc.tuple(fc.integer({ min: 0, max: digits.length - 1 }), e).map(([shift, exp]) => {
      const p = digits.length - shift;
      const fraction = digits.slice(p);
      return `${sign}${digits.slice(0, p)}${fraction ? `.${fraction}` : ''}${exp}${shift}`;
    }),
    // Trailing zeros and a negative exponent taking them off again (0 has no such spelling:
    // JSON forbids a leading zero).
    zeros.map((z) =>
      digits === '0' ? `${sign}0e-${z.length}` : `${sign}${digits}${z}e-${z.length}`,
    ),
    // All digits after the point.
    e.map((exp) => `${sign}0.${digits}${exp}${digits.length}`),
  );
}

/** The literal at a random path in a document; returns the text and the JSON pointer. */
function placed(literal: string, keys: string[], asArray: boolean): [string, string] {
  let text = literal;
  let pointer = '';
  for (const key of [...keys].reverse()) {
    text = `{${JSON.stringify(key)}:${text}}`;
    pointer = `/${key.replace(/~/g, '~0').replace(/\//g, '~1')}${pointer}`;
  }
  if (asArray) {
    text = `[true,"x",${text}]`;
    pointer = `/2${pointer}`;
  }
  return [text, pointer];
}

const keys = fc.array(fc.string({ maxLength: 6 }), { maxLength: 4 });
const RUNS = { numRuns: 2_000 };

describe('http: the body scan’s number rule', () => {
  it('refuses an integer beyond ±(2^53-1) in every notation, naming its field', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: MAX_SAFE + 1n, max: 2n ** 1000n }),
        fc.boolean(),
        keys,
        fc.boolean(),
        (magnitude, negative, path, asArray) => {
          const value = negative ? -magnitude : magnitude;
          fc.assert(
            fc.property(notations(value), (literal) => {
              const [text, pointer] = placed(literal, path, asArray);
              const found = scanJson(text, DEPTH);
              expect(found?.kind, text).to.equal('unsafe_integer');
              expect(found?.path, text).to.equal(pointer);
            }),
            { numRuns: 5 },
          );
        },
      ),
      { numRuns: 400 },
    );
  });

  it('accepts a safe integer in every notation, and JSON.parse gives it exactly', () => {
    fc.assert(
      fc.property(
        fc
          .bigInt({ min: -MAX_SAFE, max: MAX_SAFE })
          .chain((v) => notations(v).map((l) => [v, l] as const)),
        ([value, literal]) => {
          const text = `{"n":${literal}}`;
          expect(scanJson(text, DEPTH), literal).to.equal(undefined);
          const parsed = (JSON.parse(text) as { n: number }).n;
          expect(Number.isSafeInteger(parsed) && BigInt(parsed) === value, literal).to.equal(true);
        },
      ),
      RUNS,
    );
  });

  it('refuses a number that overflows a double (JSON.parse would make it Infinity)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.stringMatching(/^[0-9]{0,10}$/),
        fc.integer({ min: 309, max: 100_000 }),
        fc.boolean(),
        keys,
        (lead, rest, exponent, negative, path) => {
          const literal = `${negative ? '-' : ''}${lead}${rest ? `.${rest}` : ''}e${exponent}`;
          const [text, pointer] = placed(literal, path, false);
          const found = scanJson(text, DEPTH);
          expect(found?.kind, literal).to.equal('non_finite_number');
          expect(found?.path).to.equal(pointer);
        },
      ),
      RUNS,
    );
  });

  it('every double as JSON.stringify writes it: refused exactly when it is beyond ±(2^53-1)', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (x) => {
        const found = scanJson(`[${JSON.stringify(x)}]`, DEPTH);
        if (Math.abs(x) > Number.MAX_SAFE_INTEGER)
          expect(found?.kind, String(x)).to.equal('unsafe_integer');
        else expect(found, String(x)).to.equal(undefined);
      }),
      RUNS,
    );
  });

  it('examples: the notations of the issue, digits in strings, and malformed numbers left to JSON.parse', () => {
    for (const literal of [
      '9007199254740993.0',
      '9.007199254740993e15',
      '9007199254740992',
      '1.5e300',
    ]) {
      expect(scanJson(`{"a":${literal}}`, DEPTH)?.kind, literal).to.equal('unsafe_integer');
    }
    for (const literal of ['1e400', '-1E400', '1e+309']) {
      expect(scanJson(`{"a":${literal}}`, DEPTH)?.kind, literal).to.equal('non_finite_number');
    }
    for (const text of [
      '{"a":9007199254740991,"b":-9007199254740991,"c":1.5e-300,"d":"12345678901234567890"}',
      '{"id":"9.007199254740993e15","e":"1e400"}',
      '{"a":1e-400,"b":0.1e1,"c":12345678901234.5678}',
      // Malformed: JSON.parse reports these, the scan does not guess.
      '{"a":1e}',
      '{"a":1.e400}',
      '{"a":01e400}',
    ]) {
      expect(scanJson(text, DEPTH), text).to.equal(undefined);
    }
    // A refused literal is quoted back in part only: the answer stays small.
    const long = `{"a":${'9'.repeat(100_000)}}`;
    expect(scanJson(long, DEPTH)?.message.length).to.be.below(200);
  });
});
