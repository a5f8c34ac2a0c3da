/**
 * The `onceq` executable: one thin file per command; this one only parses and dispatches.
 */
import { Command } from 'commander';
import { runCommand } from './runtime.js';

const program = new Command();
program
  .name('onceq')
  .description('BullMQ workers with exactly-once effects on PostgreSQL')
  .showHelpAfterError();

program
  .command('start')
  .description('run migrations, then a worker (the main job on one machine)')
  .action(() => runCommand(async () => (await import('./worker.js')).runWorker({ migrate: true })));

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

program
  .command('bench')
  .description(
    'throughput of BullMQ baselines and of onceq, in one run (prints a table and JSON lines)',
  )
  .option('--jobs <n>', 'jobs per figure', '5000')
  .option('--concurrency <n>', 'worker concurrency', '50')
  .option('--runs <n>', 'runs per figure (the median is reported)', '3')
  .option('--json <file>', 'also write all figures to this file')
  .option('--only <names>', 'comma-separated figures to run (e.g. bullmq-insert,onceq-insert)')
  .action((opts) => runCommand(async () => (await import('../bench/bench.js')).runBench(opts)));

await program.parseAsync(process.argv);
