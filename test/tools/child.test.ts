/**
 * The one child-process harness (tools/support/child.ts) and the chaos supervisor built on it:
 * waiting for text fails as soon as the child exits and leaves no timer, stop() escalates to
 * SIGKILL, a missing command is reported once, not retried forever.
 */
import { expect } from 'chai';
import { spawnChild } from '../../tools/support/child.js';
import { ManagedProcess } from '../../tools/chaos/processes.js';

/** `node -e script`, with this process's PATH only. */
function node(script: string) {
  return spawnChild({
    name: 'probe',
    command: process.execPath,
    args: ['-e', script],
    env: { PATH: process.env.PATH ?? '' },
  });
}

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe('tools: the child-process harness', () => {
  it('resolves with the line holding the text, on either stream, split across writes', async () => {
    const child = node(
      "process.stderr.write('first\\nsec'); setTimeout(() => { process.stderr.write('ond half\\n'); " +
        'console.log(\'{"ready":1}\'); }, 50)',
    );
    expect(await child.waitFor('second half', 5_000)).to.equal('second half');
    expect(await child.waitFor('"ready"', 5_000)).to.equal('{"ready":1}');
    await child.exited;
    expect(child.stdout()).to.equal('{"ready":1}\n');
    expect(child.stderr()).to.equal('first\nsecond half\n');
  });

  it('rejects a wait when the child exits first, at once, with no timer left behind', async () => {
    // Mocha arms this test's own timer once the test has returned its promise: count after it.
    await new Promise((r) => setImmediate(r));
    const before = timers();
    const child = node("console.log('bye'); process.exit(3)");
    const started = Date.now();
    const err = await child.waitFor('never written', 60_000).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).to.match(/^probe exited \(code 3\) before writing "never written"/);
    expect(err?.message).to.contain('bye');
    expect(Date.now() - started).to.be.below(10_000);
    expect(timers()).to.equal(before);
  });

  it('stop: SIGTERM, then SIGKILL after the grace period for a child that ignores it', async () => {
    const child = node(
      "process.on('SIGTERM', () => console.log('ignored')); console.log('up'); setInterval(() => {}, 1000)",
    );
    await child.waitFor('up', 5_000);
    const exit = await child.stop(300);
    expect(exit.signal).to.equal('SIGKILL');
    expect(child.output()).to.contain('ignored');
  });

  it('destroy: a paused child dies too', async () => {
    const child = node("console.log('up'); setInterval(() => {}, 1000)");
    await child.waitFor('up', 5_000);
    child.signal('SIGSTOP');
    expect((await child.destroy()).signal).to.equal('SIGKILL');
    expect(child.running()).to.equal(false);
  });

  it('a command that is not installed: the spawn error, and waits fail at once', async () => {
    const child = spawnChild({
      name: 'ghost',
      command: 'onceq-no-such-command',
      args: [],
      env: { PATH: process.env.PATH ?? '' },
    });
    const err = await child.waitFor('anything', 60_000).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).to.match(/^ghost could not start \(ENOENT\)/);
    expect(child.spawnError()?.code).to.equal('ENOENT');
    await child.exited;
  });

  it("ManagedProcess: a missing program is one clear error, not a retry loop (chaos's redis-server)", async () => {
    const managed = new ManagedProcess({
      name: 'redis',
      command: 'onceq-no-such-redis-server',
      args: [],
      env: { PATH: process.env.PATH ?? '' },
      readyText: 'Ready',
    });
    const err = await managed.start().then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).to.match(
      /^chaos: cannot start redis: `onceq-no-such-redis-server` is not installed/,
    );
    await managed.destroy();
  });

  it('ManagedProcess: restarts a child that crashes after it was ready, and stops for good', async () => {
    const managed = new ManagedProcess({
      name: 'crasher',
      command: process.execPath,
      args: ['-e', "console.log('ready'); setTimeout(() => process.exit(1), 100)"],
      env: { PATH: process.env.PATH ?? '' },
      readyText: 'ready',
    });
    await managed.start();
    for (let i = 0; i < 100 && managed.starts < 2; i++) await new Promise((r) => setTimeout(r, 50));
    expect(managed.starts).to.be.at.least(2);
    expect(managed.crashes).to.be.at.least(1);
    await managed.stop(1_000);
    expect(managed.running).to.equal(false);
  });
});
