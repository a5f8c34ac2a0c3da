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

program
  .command('demo')
  .description(
    'drive the ledger example through the API with repeated requests, duplicated jobs and ' +
      'killed workers, then check the invariants (exit 0 only when they hold)',
  )
  .option('--url <url>', 'API to drive (default ONCEQ_API_URL; unset: start an API of its own)')
  .option('--key <key>', 'API key for --url (default ONCEQ_API_KEY)')
  .option('--accounts <n>', 'accounts to open', '10')
  .option('--transfers <n>', 'transfers to send', '1000')
  .option('--repeat <share>', 'share of requests sent twice with the same Idempotency-Key', '0.1')
  .option('--duplicate <share>', 'share of jobs added to BullMQ twice', '0.1')
  .option('--workers <n>', 'worker processes to run (and kill)', '2')
  .option('--kills <n>', 'workers to SIGKILL and replace during the run', '2')
  .option('--concurrency <n>', 'requests in flight', '16')
  .option(
    '--lock-duration <d>',
    "the demo workers' lock duration: how soon a kill is recovered",
    '2s',
  )
  .option('--timeout <d>', 'bound on waiting for every message to settle', '120s')
  .option('--no-progress', 'no progress bars (they show only on a terminal anyway)')
  .action((opts) => runCommand(async () => (await import('./demo.js')).runDemoCommand(opts)));

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

program
  .command('chaos')
  .description(
    'randomized fault campaign against real API and worker processes, then an invariant check ' +
      '(exit 0 only when valid)',
  )
  .option('--seed <n>', 'seed of the fault schedule and workload (default: random, printed)')
  .option('--duration <d>', 'length of the workload, e.g. 60s or 10m', '60s')
  .option('--workers <n>', 'worker processes', '3')
  .option('--rate <n>', 'operations per second', '20')
  .option(
    '--faults <list>',
    'comma-separated: kill,pause,pgkill,redis-restart,redis-flush,api-kill, or all, or none',
    'all',
  )
  .option('--history <file>', 'JSON-lines history (default chaos-<seed>.history.jsonl)')
  .option('--lock-duration <d>', "workers' lock duration and claim lease", '2s')
  .option('--drain-timeout <d>', 'bound on waiting for the run to settle', '120s')
  .option('--keep-schema <when>', 'keep the PostgreSQL schema: always, never, invalid', 'invalid')
  .option('--json <file>', 'also write the whole report as JSON')
  .action((opts) => runCommand(async () => (await import('./chaos.js')).runChaos(opts)));

await program.parseAsync(process.argv);
