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

/** planFaults' first four faults for seed 606 before redis-failover existed: [kind, at, target, hold]. */
const SEED_606_START = [
  ['api-kill', 3407, undefined, 1349],
  ['redis-restart', 8450, undefined, 513],
  ['redis-flush', 12595, undefined, 0],
  ['pause', 16535, 0, 6299],
];

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
      } else if (f.kind === 'redis-failover') {
        // A master's index; without clusterMasters, among three.
        expect(f.target).to.be.within(0, 2);
      } else {
        expect(f.target).to.equal(undefined);
      }
      if (f.kind === 'pause') expect(f.holdMs).to.be.above(2 * base.lockDurationMs);
    }
  });

  it('on a cluster, targets one of its masters for redis-restart and redis-failover', () => {
    const plan = planFaults({ ...base, durationMs: 600_000, clusterMasters: 4 });
    const targets = new Set<number>();
    for (const f of plan) {
      if (f.kind === 'redis-restart' || f.kind === 'redis-failover') {
        expect(f.target).to.be.within(0, 3);
        targets.add(f.target!);
      }
      if (f.kind === 'redis-failover') expect(f.holdMs).to.be.within(300, 1_500);
      if (f.kind === 'redis-flush') expect(f.target).to.equal(undefined);
    }
    expect([...targets].sort()).to.deep.equal([0, 1, 2, 3]);
  });

  it("keeps a single Redis's schedule as it was: no target drawn for redis-restart", () => {
    const single = FAULT_KINDS.filter((k) => k !== 'redis-failover');
    const plan = planFaults({ ...base, faults: single });
    for (const f of plan.filter((x) => x.kind === 'redis-restart')) {
      expect(f.target).to.equal(undefined);
    }
    // Seed 606's first faults, as the README's 10-minute run had them.
    expect(
      planFaults({ ...base, seed: 606, faults: single })
        .slice(0, 4)
        .map((f) => [f.kind, f.atMs, f.target, f.holdMs]),
    ).to.deep.equal(SEED_606_START);
  });

  it('plans only the kinds asked for, and nothing for none', () => {
    const plan = planFaults({ ...base, faults: ['kill', 'api-kill'] });
    expect(new Set(plan.map((f) => f.kind))).to.deep.equal(new Set(['kill', 'api-kill']));
    expect(planFaults({ ...base, faults: [] })).to.deep.equal([]);
  });

  it('parses --faults', () => {
    expect(parseFaultList('kill, pause,kill')).to.deep.equal(['kill', 'pause']);
    expect(parseFaultList('all')).to.deep.equal(FAULT_KINDS.filter((k) => k !== 'redis-failover'));
    expect(parseFaultList('all', 'redis', true)).to.deep.equal([...FAULT_KINDS]);
    expect(parseFaultList('none')).to.deep.equal([]);
    expect(() => parseFaultList('kill,nuke')).to.throw(/unknown fault kind nuke/);
  });

  it('parses --faults for PostgreSQL-only mode: all means the faults without Redis', () => {
    expect(faultKindsFor('postgres')).to.deep.equal(['kill', 'pause', 'pgkill', 'api-kill']);
    expect(faultKindsFor('redis', true)).to.deep.equal([...FAULT_KINDS]);
    expect(parseFaultList('all', 'postgres')).to.deep.equal(faultKindsFor('postgres'));
    expect(parseFaultList('kill,pgkill', 'postgres')).to.deep.equal(['kill', 'pgkill']);
    expect(() => parseFaultList('kill,redis-flush', 'postgres')).to.throw(
      /redis-flush needs Redis, and the postgres backend has none/,
    );
    expect(() => checkFaultsFor('postgres', ['redis-restart'])).to.throw(/needs Redis/);
    expect(() => checkFaultsFor('redis', FAULT_KINDS, true)).not.to.throw();
  });

  it('refuses redis-failover on a single Redis: it needs a replica to promote', () => {
    expect(faultKindsFor('redis')).not.to.include('redis-failover');
    expect(() => parseFaultList('kill,redis-failover')).to.throw(
      /redis-failover needs a Redis Cluster \(--redis-cluster\), and this campaign runs a single redis-server/,
    );
    expect(() => checkFaultsFor('redis', FAULT_KINDS)).to.throw(
      /redis-failover needs a Redis Cluster/,
    );
    expect(() => parseFaultList('redis-failover', 'postgres', false)).to.throw(/needs Redis/);
    expect(parseFaultList('redis-failover,kill', 'redis', true)).to.deep.equal([
      'redis-failover',
      'kill',
    ]);
  });

  it('draws the same numbers from the same seed', () => {
    const a = createRandom(5);
    const b = createRandom(5);
    const xs = Array.from({ length: 20 }, () => a.next());
    expect(xs).to.deep.equal(Array.from({ length: 20 }, () => b.next()));
    for (const x of xs) expect(x).to.be.within(0, 1);
  });
});
