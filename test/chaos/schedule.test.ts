/** The fault schedule is a pure function of its seed and options. */
import { expect } from 'chai';
import {
  checkFaultsFor,
  createRandom,
  FAULT_KINDS,
  faultKindsFor,
  parseFaultList,
  planFaults,
  type FaultPlanOptions,
} from '../../tools/chaos/schedule.js';

const base: FaultPlanOptions = {
  seed: 42,
  durationMs: 60_000,
  faults: FAULT_KINDS,
  workers: 3,
  lockDurationMs: 2_000,
};

describe('chaos schedule', () => {
  it('gives the same schedule for the same seed', () => {
    expect(planFaults(base)).to.deep.equal(planFaults({ ...base }));
    expect(planFaults({ ...base, seed: 7 })).to.deep.equal(planFaults({ ...base, seed: 7 }));
  });

  it('gives another schedule for another seed', () => {
    expect(planFaults({ ...base, seed: 43 })).not.to.deep.equal(planFaults(base));
  });

  it('plans every kind at least twice, inside the quiet margins, in order', () => {
    for (const seed of [1, 2, 3, 99, 123_456]) {
      const plan = planFaults({ ...base, seed });
      for (const kind of FAULT_KINDS) {
        expect(
          plan.filter((f) => f.kind === kind),
          `${kind} with seed ${seed}`,
        ).to.have.length.of.at.least(2);
      }
      for (let i = 1; i < plan.length; i++) expect(plan[i]!.atMs).to.be.above(plan[i - 1]!.atMs);
      expect(plan[0]!.atMs).to.be.at.least(3_000);
      expect(plan.at(-1)!.atMs).to.be.at.most(60_000 - 4_000);
    }
  });

  it('targets existing workers and pauses past the lease', () => {
    const plan = planFaults({ ...base, durationMs: 600_000 });
    expect(plan.length).to.be.above(100);
    for (const f of plan) {
      if (f.kind === 'kill' || f.kind === 'pause' || f.kind === 'pgkill') {
        expect(f.target).to.be.within(0, 2);
      } else {
        expect(f.target).to.equal(undefined);
      }
      if (f.kind === 'pause') expect(f.holdMs).to.be.above(2 * base.lockDurationMs);
    }
  });

  it('plans only the kinds asked for, and nothing for none', () => {
    const plan = planFaults({ ...base, faults: ['kill', 'api-kill'] });
    expect(new Set(plan.map((f) => f.kind))).to.deep.equal(new Set(['kill', 'api-kill']));
    expect(planFaults({ ...base, faults: [] })).to.deep.equal([]);
  });

  it('parses --faults', () => {
    expect(parseFaultList('kill, pause,kill')).to.deep.equal(['kill', 'pause']);
    expect(parseFaultList('all')).to.deep.equal([...FAULT_KINDS]);
    expect(parseFaultList('none')).to.deep.equal([]);
    expect(() => parseFaultList('kill,nuke')).to.throw(/unknown fault kind nuke/);
  });

  it('parses --faults for PostgreSQL-only mode: all means the faults without Redis', () => {
    expect(faultKindsFor('postgres')).to.deep.equal(['kill', 'pause', 'pgkill', 'api-kill']);
    expect(faultKindsFor('redis')).to.deep.equal([...FAULT_KINDS]);
    expect(parseFaultList('all', 'postgres')).to.deep.equal(faultKindsFor('postgres'));
    expect(parseFaultList('kill,pgkill', 'postgres')).to.deep.equal(['kill', 'pgkill']);
    expect(() => parseFaultList('kill,redis-flush', 'postgres')).to.throw(
      /redis-flush needs Redis, and the postgres backend has none/,
    );
    expect(() => checkFaultsFor('postgres', ['redis-restart'])).to.throw(/needs Redis/);
    expect(() => checkFaultsFor('redis', FAULT_KINDS)).not.to.throw();
  });

  it('draws the same numbers from the same seed', () => {
    const a = createRandom(5);
    const b = createRandom(5);
    const xs = Array.from({ length: 20 }, () => a.next());
    expect(xs).to.deep.equal(Array.from({ length: 20 }, () => b.next()));
    for (const x of xs) expect(x).to.be.within(0, 1);
  });
});
