/**
 * Test-only fault injection at the crash points of DESIGN.md's crash table. Off unless
 * `ONCEQ_FAULT` names a point: `ONCEQ_FAULT=before-commit:kill` makes the process SIGKILL itself
 * the first time a delivery reaches that point; `:stop` makes it SIGSTOP itself (a zombie, until
 * someone sends SIGCONT). Real signals, so the process dies or freezes exactly there.
 */

import { ConfigError } from '../core/errors.js';

/** The crash points, in pipeline order. */
export const FAULT_POINTS = [
  /** The claim is held in Redis; no transaction yet. */
  'after-claim',
  /** Inside the transaction, after the inbox insert and the handler, before COMMIT. */
  'before-commit',
  /** Committed in PostgreSQL; the token is not yet `done` in Redis. */
  'after-commit',
  /** The token is `done`; BullMQ has not yet completed the job. */
  'after-done',
] as const;

/** Crash points off the happy path, hit only by messages that go dead. */
export const DEAD_LETTER_FAULT_POINTS = [
  /** The dead letter is in PostgreSQL and the dead-letter queue; the original is not yet gone. */
  'dead-letter-copied',
] as const;

/** Crash points of a group commit (worker/commit-groups.ts), hit only by groups of two or more. */
export const GROUP_FAULT_POINTS = [
  /** Every member of the group has run inside its transaction; COMMIT is not yet sent. */
  'group-before-commit',
  /** The group committed; no member's token is `done` yet, no job completed. */
  'group-after-commit',
] as const;

/** Every point `ONCEQ_FAULT` may name. */
export const ALL_FAULT_POINTS = [
  ...FAULT_POINTS,
  ...DEAD_LETTER_FAULT_POINTS,
  ...GROUP_FAULT_POINTS,
] as const;
export type FaultPoint = (typeof ALL_FAULT_POINTS)[number];

const ACTIONS = { kill: 'SIGKILL', stop: 'SIGSTOP' } as const;

/** Fires at most once per process. */
export interface FaultHook {
  at(point: FaultPoint): void;
}

/** A hook that never fires. */
export const NO_FAULTS: FaultHook = { at: () => undefined };

/** Parses `point[:kill|stop]` (kill by default); throws on anything else. */
export function createFaultHook(spec: string | undefined): FaultHook {
  if (!spec) return NO_FAULTS;
  const [point, action = 'kill', ...rest] = spec.split(':');
  if (
    rest.length > 0 ||
    !(ALL_FAULT_POINTS as readonly string[]).includes(point ?? '') ||
    !Object.hasOwn(ACTIONS, action)
  ) {
    throw new ConfigError([
      `ONCEQ_FAULT: "${spec}" is not <point>[:kill|stop] with point one of ${ALL_FAULT_POINTS.join(', ')}`,
    ]);
  }
  const signal = ACTIONS[action as keyof typeof ACTIONS];
  let fired = false;
  return {
    at(reached) {
      if (fired || reached !== point) return;
      fired = true;
      // A line the test harness waits for, written synchronously before the signal lands.
      process.stderr.write(`onceq-fault: ${point} ${signal}\n`);
      process.kill(process.pid, signal);
    },
  };
}
