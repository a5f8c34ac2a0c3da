/** The test-only fault hook refuses what it cannot parse with a configuration error, not a crash. */
import { expect } from 'chai';
import { createFaultHook, NO_FAULTS } from '../../src/worker/fault-hook.js';
import { ConfigError } from '../../src/core/errors.js';

describe('worker: fault hook', () => {
  it('is off when ONCEQ_FAULT is unset or empty', () => {
    expect(createFaultHook(undefined)).to.equal(NO_FAULTS);
    expect(createFaultHook('')).to.equal(NO_FAULTS);
  });

  for (const spec of ['bogus', 'after-claim:explode', 'after-claim:kill:extra', ':kill']) {
    it(`refuses ONCEQ_FAULT=${spec} naming the variable and the valid points`, () => {
      expect(() => createFaultHook(spec))
        .to.throw(ConfigError)
        .with.property('message')
        .that.matches(
          /ONCEQ_FAULT: .* is not <point>\[:kill\|stop\] with point one of after-claim/,
        );
    });
  }

  it('does not fire at other points', () => {
    const hook = createFaultHook('after-done:kill');
    // Reaching the other points must be a no-op (a misfire would kill this test process).
    hook.at('after-claim');
    hook.at('before-commit');
    hook.at('after-commit');
  });
});
