/**
 * Schemas of the ledger jobs. Ids are decimal strings (64-bit, never JSON numbers); amounts are
 * safe integers in minor units.
 */
import { Type } from '@sinclair/typebox';

/** A 64-bit id as a decimal string. */
export const Id = Type.String({
  pattern: '^[1-9][0-9]{0,18}$',
  description: 'a 64-bit id as a decimal string',
});
/** An amount in minor units. */
export const Amount = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });

export const OpenAccount = Type.Object(
  {
    owner: Type.String({ minLength: 1, maxLength: 200 }),
    openingBalance: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    accountId: Type.Optional(Id),
  },
  { additionalProperties: false },
);

export const RenameAccount = Type.Object(
  {
    accountId: Id,
    owner: Type.String({ minLength: 1, maxLength: 200 }),
    expectedVersion: Type.Integer({ minimum: 0, maximum: 2_147_483_647 }),
  },
  { additionalProperties: false },
);

export const Transfer = Type.Object(
  { fromId: Id, toId: Id, amount: Amount },
  { additionalProperties: false },
);

export const CloseAccount = Type.Object({ accountId: Id }, { additionalProperties: false });
