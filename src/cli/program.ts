/**
 * The product commands of the `onceq` executable: one thin file per command; this one only
 * declares them. src/cli/index.ts parses them for the published package; tools/cli.ts adds the
 * repository's development tools (demo, bench, chaos, soak) to the same program.
 */
import { Command } from 'commander';
import { runCommand } from './runtime.js';

/** The development tools of the repository, which the published package does not hold. */
export const TOOL_COMMANDS = ['demo', 'bench', 'chaos', 'soak'] as const;

/** The `onceq` program with every product command: start, worker, api, keys, migrate, enqueue, dlq. */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('onceq')
    .description('BullMQ workers with exactly-once effects on PostgreSQL')
    .showHelpAfterError();

  program
    .command('start')
    .description(
      'run migrations, then the API and a worker in one process (the main job on one machine)',
    )
    .action(() => runCommand(async () => (await import('./start.js')).runStart()));

  program
    .command('worker')
    .description('consume the queues until SIGTERM/SIGINT')
    .action(() => runCommand(async () => (await import('./worker.js')).runWorker()));

  program
    .command('api')
    .description('serve the producer HTTP API until SIGTERM/SIGINT')
    .action(() => runCommand(async () => (await import('./api.js')).runApi()));

  const keys = program.command('keys').description('API keys of the producer HTTP API');
  keys
    .command('create')
    .description('create a key for a principal and print it once')
    .requiredOption('--principal <name>', 'who the key acts as (tokens and jobs are bound to it)')
    .option('--admin', 'may use admin-only routes')
    .action((opts) => runCommand(async () => (await import('./keys.js')).runKeysCreate(opts)));
  keys
    .command('revoke')
    .description('revoke a key (by its id or the key itself)')
    .argument('<id>', 'key id (16 hex characters) or the whole key')
    .action((id: string) => runCommand(async () => (await import('./keys.js')).runKeysRevoke(id)));
  keys
    .command('list')
    .description('list keys (ids, principals, never secrets)')
    .option('--all', 'include revoked keys')
    .option('--json', 'one JSON object per line')
    .action((opts) => runCommand(async () => (await import('./keys.js')).runKeysList(opts)));

  program
    .command('migrate')
    .description('database migrations; creates the database if missing')
    .argument('[action]', 'latest, down or status', 'latest')
    .action((action: string) =>
      runCommand(async () => (await import('./migrate.js')).runMigrate(action)),
    );

  program
    .command('enqueue')
    .description('enqueue one message through the producer library')
    .argument('<name>', 'job name, e.g. ledger.transfer')
    .requiredOption('--data <json>', 'job data as JSON')
    .option('--token <token>', 'idempotency token (retrying with it never makes a second message)')
    .option('--queue <queue>', "queue (defaults to the job's)")
    .option('--delay <ms>', 'delay before the first delivery')
    .option('--priority <n>', 'BullMQ priority')
    .action((name: string, opts) =>
      runCommand(async () => (await import('./enqueue.js')).runEnqueue(name, opts)),
    );

  const dlq = program.command('dlq').description('inspect, replay and purge dead letters');
  dlq
    .command('list')
    .description('pending dead letters, oldest message first')
    .option('--queue <queue>', 'only this queue')
    .option('--reason <reason>', 'only this reason (exhausted, invalid, expired, stalled)')
    .option('--limit <n>', 'at most this many', '100')
    .option('--all', 'include replayed and purged letters')
    .option('--json', 'one JSON object per line')
    .action((opts) => runCommand(async () => (await import('./dlq.js')).runDlqList(opts)));
  dlq
    .command('show')
    .description('one dead letter with its data, error and stack, as JSON')
    .argument('<id>', 'message id')
    .action((id: string) => runCommand(async () => (await import('./dlq.js')).runDlqShow(id)));
  dlq
    .command('replay')
    .description('put dead letters back on their queues: same messageId and token, fresh attempts')
    .argument('[ids...]', 'message ids')
    .option('--all', 'every pending dead letter (with --queue and --reason to narrow)')
    .option('--queue <queue>', 'with --all: only this queue')
    .option('--reason <reason>', 'with --all: only this reason')
    .option('--dry-run', 'count what would be replayed; change nothing')
    .option('--json', 'print the summary as JSON')
    .action((ids: string[], opts) =>
      runCommand(async () => (await import('./dlq.js')).runDlqReplay(ids, opts)),
    );
  dlq
    .command('purge')
    .description('give dead letters up for good (they will never be applied)')
    .option('--older-than <duration>', 'only letters dead for longer than this (e.g. 7d)')
    .option('--queue <queue>', 'only this queue')
    .option('--reason <reason>', 'only this reason')
    .option('--json', 'print the count as JSON')
    .action((opts) => runCommand(async () => (await import('./dlq.js')).runDlqPurge(opts)));

  return program;
}

/**
 * Adds hidden `demo`, `bench`, `chaos` and `soak` commands that say, in one line and exit code 1, where
 * those tools are: the published package (and the Docker image) holds the product only, and a
 * user who follows an old guide should learn why the command is missing, not commander's
 * generic "unknown command".
 */
export function addMissingToolCommands(program: Command): Command {
  for (const name of TOOL_COMMANDS) {
    program
      .command(name, { hidden: true })
      // `onceq help demo` shows this; `onceq demo …`, whatever follows, runs the action.
      .description('a development tool of the onceq repository, not in the published package')
      .helpOption(false)
      .allowUnknownOption()
      .allowExcessArguments()
      .action(() => {
        process.stderr.write(
          `onceq: \`${name}\` is a development tool of the onceq repository, not part of the ` +
            `published package: clone the repository, \`npm ci\`, then \`npm run ${name}\`\n`,
        );
        process.exitCode = 1;
      });
  }
  return program;
}
