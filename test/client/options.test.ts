/**
 * The client's options are checked when the client is made (and `waitForJob`'s when it is
 * called), before any request: a value of the wrong type is a `TypeError`, a number out of range
 * a `RangeError` (NaN and Infinity included), and each message names the call, the option and
 * the value received. Random bad values come from fast-check; no request is ever sent (the
 * `fetch` given fails the test if called).
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { createClient, type ClientOptions } from '../../src/client/index.js';
import { retryPolicy } from '../../src/client/retry.js';

const MAX_TIMER_MS = 2 ** 31 - 1;

/** A fetch that no test here may reach. */
const noFetch: typeof fetch = () => {
  throw new Error('a request was sent');
};
const GOOD: ClientOptions = { url: 'http://127.0.0.1:1', apiKey: 'oqk_x', fetch: noFetch };

/** How a number shows in a message: as written, -0 too. */
const shown = (n: number) => (Object.is(n, -0) ? '-0' : String(n));

/** The error `f` throws, which must be an instance of `type` naming `where: option`. */
function thrown(f: () => unknown, type: typeof TypeError | typeof RangeError, option: string) {
  let error: unknown;
  try {
    f();
  } catch (err) {
    error = err;
  }
  expect(error, `${option}: no error`).to.be.instanceOf(Error);
  const e = error as Error;
  expect(e.constructor, `${option}: ${e.message}`).to.equal(type);
  expect(e.message).to.contain(`: ${option} `);
  return e;
}

/** Numbers no wait option takes. */
const notAWait = (positive: boolean) =>
  fc.oneof(
    positive ? fc.double({ max: 0 }) : fc.double({ max: -Number.MIN_VALUE }),
    fc.double({ min: MAX_TIMER_MS + 1, noNaN: true }),
    fc.constantFrom(NaN, Infinity, -Infinity),
  );
/** Values of no number type (undefined is the default, so it is left out). */
const notANumber = fc.oneof(
  fc.string(),
  fc.boolean(),
  fc.constant(null),
  fc.bigInt(),
  fc.array(fc.integer(), { maxLength: 2 }),
  fc.object({ maxDepth: 1 }),
);

describe('client: options refused at once, naming the option and the value', () => {
  it('timeoutMs: a RangeError for a number not above 0 or past a timer, a TypeError for a non-number', () => {
    fc.assert(
      fc.property(notAWait(true), (value) => {
        const e = thrown(
          () => createClient({ ...GOOD, timeoutMs: value }),
          RangeError,
          'timeoutMs',
        );
        expect(e.message).to.match(/^createClient: timeoutMs must be a positive number/);
        expect(e.message.endsWith(`, got ${shown(value)}`), e.message).to.equal(true);
      }),
    );
    fc.assert(
      fc.property(notANumber, (value) => {
        const e = thrown(
          () => createClient({ ...GOOD, timeoutMs: value as never }),
          TypeError,
          'timeoutMs',
        );
        expect(e.message).to.contain(', got ');
      }),
    );
    expect(
      thrown(() => createClient({ ...GOOD, timeoutMs: -1 }), RangeError, 'timeoutMs').message,
    ).to.equal(
      `createClient: timeoutMs must be a positive number of ms up to ${MAX_TIMER_MS}, got -1`,
    );
    expect(() => createClient({ ...GOOD, timeoutMs: MAX_TIMER_MS })).not.to.throw();
    expect(() => createClient({ ...GOOD, timeoutMs: 0.5 })).not.to.throw();
  });

  for (const key of ['maxAttempts', 'baseDelayMs', 'maxDelayMs', 'maxRetryAfterMs'] as const) {
    it(`retry.${key}: a RangeError out of range or fractional, a TypeError for a non-number`, () => {
      const min = key === 'maxAttempts' ? 1 : 0;
      const outOfRange = fc.oneof(
        fc.integer({ max: min - 1 }),
        fc.double({ min, noNaN: true }).filter((n) => !Number.isInteger(n)),
        fc.constantFrom(NaN, Infinity, -Infinity),
        ...(key === 'maxAttempts'
          ? []
          : [fc.integer({ min: MAX_TIMER_MS + 1, max: Number.MAX_SAFE_INTEGER })]),
      );
      fc.assert(
        fc.property(outOfRange, (value) => {
          const e = thrown(
            () => createClient({ ...GOOD, retry: { [key]: value } }),
            RangeError,
            `retry.${key}`,
          );
          expect(e.message).to.match(/^createClient: /);
          expect(e.message.endsWith(`, got ${shown(value)}`), e.message).to.equal(true);
        }),
      );
      fc.assert(
        fc.property(notANumber, (value) => {
          thrown(
            () => createClient({ ...GOOD, retry: { [key]: value as never } }),
            TypeError,
            `retry.${key}`,
          );
        }),
      );
      expect(retryPolicy({ [key]: min })).to.include({ [key]: min });
    });
  }

  it('retry: a TypeError when not an object, a RangeError naming an unknown option', () => {
    for (const value of [null, 5, 'fast', [1]]) {
      thrown(() => createClient({ ...GOOD, retry: value as never }), TypeError, 'retry');
    }
    const e = thrown(
      () => createClient({ ...GOOD, retry: { maxAttemps: 3 } as never }),
      RangeError,
      'retry.maxAttemps',
    );
    expect(e.message).to.equal(
      'createClient: retry.maxAttemps is an unknown retry option ' +
        '(known: maxAttempts, baseDelayMs, maxDelayMs, maxRetryAfterMs), got 3',
    );
  });

  it('url: a TypeError for a non-string, a relative or unparsable URL, or another scheme', () => {
    for (const [url, got] of [
      [undefined, 'undefined'],
      [42, '42'],
      ['/v1', '"/v1"'],
      ['not a url', '"not a url"'],
      ['ftp://onceq.example.com', '"ftp://onceq.example.com"'],
    ] as const) {
      const e = thrown(() => createClient({ ...GOOD, url: url as never }), TypeError, 'url');
      expect(e.message).to.match(/^createClient: url must be /);
      expect(e.message.endsWith(`, got ${got}`), e.message).to.equal(true);
    }
    expect(() =>
      createClient({ ...GOOD, url: new URL('https://x.example') as never }),
    ).not.to.throw();
  });

  it("apiKey: a TypeError naming the value's kind, never the value", () => {
    for (const [apiKey, got] of [
      [undefined, 'undefined'],
      ['', 'an empty string'],
      [12345, 'a number'],
      [{ key: 'oqk_secret' }, 'an object'],
    ] as const) {
      const e = thrown(
        () => createClient({ ...GOOD, apiKey: apiKey as never }),
        TypeError,
        'apiKey',
      );
      expect(e.message).to.equal(`createClient: apiKey must be a non-empty string, got ${got}`);
    }
  });

  it('fetch and onRetry: a TypeError when not a function', () => {
    fc.assert(
      fc.property(notANumber, fc.constantFrom('fetch', 'onRetry'), (value, option) => {
        const e = thrown(
          () => createClient({ ...GOOD, [option]: value as never }),
          TypeError,
          option,
        );
        expect(e.message).to.match(new RegExp(`^createClient: ${option} must be a function, got `));
      }),
    );
    thrown(() => createClient(null as never), TypeError, 'options');
  });

  it('waitForJob: rejects a bad timeoutMs or intervalMs before any request', async () => {
    const client = createClient(GOOD);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('timeoutMs', 'intervalMs'),
        fc.oneof(notAWait(false), notANumber),
        async (option, value) => {
          const options = { timeoutMs: 1_000, [option]: value } as never;
          let error: unknown;
          await client.waitForJob('1', options).catch((err: unknown) => (error = err));
          const type = typeof value === 'number' ? RangeError : TypeError;
          expect(error).to.be.instanceOf(Error);
          expect((error as Error).constructor).to.equal(type);
          expect((error as Error).message).to.match(new RegExp(`^waitForJob: ${option} must be `));
        },
      ),
      { numRuns: 50 },
    );
  });
});
