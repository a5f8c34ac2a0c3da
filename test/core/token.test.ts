import { expect } from 'chai';
import {
  TOKEN_LENGTH,
  TOKEN_PREFIX,
  generateToken,
  isTokenState,
  isWellFormedToken,
  parseIdempotencyKey,
} from '../../src/core/token.js';

describe('core/token', () => {
  describe('generateToken', () => {
    it('is the prefix and 32 base64url characters (192 random bits)', () => {
      const token = generateToken();
      expect(TOKEN_PREFIX).to.equal('oqt_');
      expect(TOKEN_LENGTH).to.equal(36);
      expect(token).to.have.length(TOKEN_LENGTH);
      expect(token.startsWith(TOKEN_PREFIX)).to.equal(true);
      expect(token).to.match(/^oqt_[A-Za-z0-9_-]{32}$/);
      expect(Buffer.from(token.slice(4), 'base64url')).to.have.length(24);
      expect(isWellFormedToken(token)).to.equal(true);
    });

    it('gives 10 000 distinct well-formed tokens', () => {
      const tokens = new Set<string>();
      for (let i = 0; i < 10_000; i++) {
        const token = generateToken();
        expect(isWellFormedToken(token), token).to.equal(true);
        tokens.add(token);
      }
      expect(tokens.size).to.equal(10_000);
    });

    it('uses the whole base64url alphabet, `-` and `_` included', () => {
      const seen = new Set<string>();
      for (let i = 0; i < 2_000; i++) for (const c of generateToken().slice(4)) seen.add(c);
      expect(seen.size).to.equal(64);
    });
  });

  describe('isWellFormedToken', () => {
    const good = `oqt_${'A'.repeat(30)}-_`;

    it('accepts the exact form', () => {
      expect(isWellFormedToken(good)).to.equal(true);
    });

    const bad: [string, unknown][] = [
      ['wrong prefix', `oqx_${'A'.repeat(32)}`],
      ['upper-case prefix', `OQT_${'A'.repeat(32)}`],
      ['no prefix', 'A'.repeat(36)],
      ['too short', `oqt_${'A'.repeat(31)}`],
      ['too long', `oqt_${'A'.repeat(33)}`],
      ['padding', `oqt_${'A'.repeat(31)}=`],
      ['standard base64 +', `oqt_${'A'.repeat(31)}+`],
      ['standard base64 /', `oqt_${'A'.repeat(31)}/`],
      ['a space', `oqt_${'A'.repeat(31)} `],
      ['a colon (key injection)', `oqt_${'A'.repeat(31)}:`],
      ['non-ASCII', `oqt_${'A'.repeat(31)}é`],
      ['empty', ''],
      ['not a string', 42],
      ['undefined', undefined],
    ];
    for (const [why, value] of bad) {
      it(`rejects ${why}`, () => {
        expect(isWellFormedToken(value)).to.equal(false);
      });
    }
  });

  describe('parseIdempotencyKey', () => {
    const token = generateToken();

    it('accepts the bare token', () => {
      expect(parseIdempotencyKey(token)).to.equal(token);
    });

    it('accepts the RFC 8941 sf-string form', () => {
      expect(parseIdempotencyKey(`"${token}"`)).to.equal(token);
    });

    it('ignores optional whitespace around the value, as HTTP does', () => {
      expect(parseIdempotencyKey(` \t${token} `)).to.equal(token);
      expect(parseIdempotencyKey(` "${token}"\t`)).to.equal(token);
    });

    it('accepts a header array with exactly one value', () => {
      expect(parseIdempotencyKey([`"${token}"`])).to.equal(token);
    });

    const malformed: [string, string | string[] | undefined][] = [
      ['absent', undefined],
      ['empty', ''],
      ['empty quotes', '""'],
      ['wrong prefix', `"oqx_${token.slice(4)}"`],
      ['bad characters', `oqt_${'A'.repeat(31)}!`],
      ['too short', token.slice(0, -1)],
      ['too long', `${token}A`],
      ['too short, quoted', `"${token.slice(0, -1)}"`],
      ['too long, quoted', `"${token}A"`],
      ['an opening quote only', `"${token}`],
      ['a closing quote only', `${token}"`],
      ['single quotes', `'${token}'`],
      ['doubled quotes', `""${token}""`],
      ['an escape inside the string', `"\\${token.slice(1)}"`],
      ['sf parameters', `"${token}";v=1`],
      ['a byte sequence (:…:)', `:${token}:`],
      ['a list of two (repeated header joined)', `${token}, ${token}`],
      ['whitespace inside', `"${token.slice(0, 10)} ${token.slice(11)}"`],
      ['a line break', `${token}\n`],
    ];
    for (const [why, value] of malformed) {
      it(`rejects ${why}`, () => {
        expect(parseIdempotencyKey(value)).to.equal(undefined);
      });
    }

    it('rejects a repeated header (array of two)', () => {
      expect(parseIdempotencyKey([token, token])).to.equal(undefined);
      expect(parseIdempotencyKey([])).to.equal(undefined);
    });
  });

  describe('isTokenState', () => {
    it('knows the four states and nothing else', () => {
      for (const s of ['issued', 'accepted', 'claimed', 'done'])
        expect(isTokenState(s)).to.equal(true);
      for (const s of ['missing', 'Issued', '', undefined, 1])
        expect(isTokenState(s)).to.equal(false);
    });
  });
});
