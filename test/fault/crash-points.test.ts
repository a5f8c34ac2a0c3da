/**
 * Fault tests: a worker process SIGKILLed at each crash point of DESIGN.md's crash table, and
 * zombies (SIGSTOPped past their lease, then SIGCONTed). Real processes, real signals, real
 * services, in both modes (queues and tokens in Redis, or on PostgreSQL alone: the children then
 * run without REDIS_URL). After recovery every message has exactly one effect and none is lost.
 */
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { createTestStack, type TestStack } from '../support/stack.js';
import { assertLedgerInvariants, inboxCount, waitFor } from '../support/ledger.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { BACKENDS } from '../support/env.js';
import { FAULT_POINTS } from '../../src/worker/fault-hook.js';
import type { BackendKind } from '../../src/queues/backend.js';

for (const mode of BACKENDS) {
  describe(`fault: crash points and zombies (${mode})`, function () {
    this.timeout(90_000);
    crashPointCases(mode);
  });
}

/** The cases, declared once per mode; `mode` is where the stacks and children keep queues. */
function crashPointCases(mode: BackendKind): void {
  const children: WorkerChild[] = [];
  const spawn = (stack: TestStack, env: Record<string, string> = {}) => {
    const child = spawnWorker({
      schema: stack.schema,
      prefix: stack.prefix,
      backend: stack.backend.kind,
      env,
    });
    children.push(child);
    return child;
  };
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.destroy()));
  });

  /** Opens two accounts in-process, then enqueues transfers for the child workers. */
  async function prepare(stack: TestStack, transfers: number) {
    const worker = await stack.startWorker();
    const a = await stack.producer.enqueue('account.open', { owner: 'a', openingBalance: 1_000 });
    const b = await stack.producer.enqueue('account.open', { owner: 'b', openingBalance: 1_000 });
    await waitFor('accounts opened', async () => (await inboxCount(stack.db)) === 2);
    await worker.close();
    const sent = [];
    for (let i = 0; i < transfers; i++) {
      const [from, to] = i % 2 ? [a, b] : [b, a];
      sent.push(
        await stack.producer.enqueue('ledger.transfer', {
          fromId: from.messageId,
          toId: to.messageId,
          amount: 10 + i,
        }),
      );
    }
    return sent;
  }

  async function assertExactlyOnce(stack: TestStack, transfers: number) {
    await waitFor(
      `all ${transfers + 2} messages applied`,
      async () => (await inboxCount(stack.db)) === transfers + 2,
      40_000,
    );
    const state = await assertLedgerInvariants(stack.db);
    expect(state.transfers).to.equal(transfers);
    expect(state.sumBalances).to.equal(2_000n);
  }

  for (const point of FAULT_POINTS) {
    describe(`SIGKILL at ${point}`, () => {
      let stack: TestStack;
      before(async () => {
        stack = await createTestStack(`kill-${point}`, { backend: mode });
      });
      after(async () => stack.close());

      it('recovers with exactly one effect per message after a restart', async () => {
        const sent = await prepare(stack, 4);
        const doomed = spawn(stack, { ONCEQ_FAULT: `${point}:kill`, ONCEQ_CONCURRENCY: '1' });
        const { signal } = await doomed.exited;
        expect(signal, doomed.output()).to.equal('SIGKILL');
        expect(doomed.output()).to.contain(`onceq-fault: ${point} SIGKILL`);
        const committedBeforeRestart = await inboxCount(stack.db);
        // after-commit and after-done die with the first transfer committed; the others before it.
        expect(committedBeforeRestart).to.equal(
          point === 'after-commit' || point === 'after-done' ? 3 : 2,
        );

        const survivor = spawn(stack);
        await survivor.waitForOutput('worker started');
        await assertExactlyOnce(stack, sent.length);
        survivor.child.kill('SIGTERM');
        expect((await survivor.exited).code, survivor.output()).to.equal(0);
      });
    });
  }

  for (const point of ['after-claim', 'before-commit'] as const) {
    describe(`zombie paused at ${point}`, () => {
      let stack: TestStack;
      before(async () => {
        stack = await createTestStack(`zombie-${point}`, { backend: mode });
      });
      after(async () => stack.close());

      it('lets another worker finish the message and, resumed, changes nothing', async () => {
        const sent = await prepare(stack, 1);
        const zombie = spawn(stack, { ONCEQ_FAULT: `${point}:stop`, ONCEQ_CONCURRENCY: '1' });
        await zombie.waitForOutput(`onceq-fault: ${point} SIGSTOP`);
        await waitFor('zombie stopped', async () => readState(zombie.child.pid!) === 'T');

        const rescuer = spawn(stack);
        await waitFor(
          'rescuer applied the message',
          async () => (await inboxCount(stack.db)) === 3,
          30_000,
        );
        await assertLedgerInvariants(stack.db);

        zombie.child.kill('SIGCONT');
        // The zombie finishes (or abandons) its stale delivery before its graceful exit.
        zombie.child.kill('SIGTERM');
        const exit = await zombie.exited;
        expect(exit, zombie.output()).to.deep.equal({ code: 0, signal: null });
        rescuer.child.kill('SIGTERM');
        expect((await rescuer.exited).code, rescuer.output()).to.equal(0);
        await assertExactlyOnce(stack, sent.length);
      });
    });
  }
}

/** The process state letter from /proc (T = stopped). */
function readState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}
