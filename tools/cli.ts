/**
 * The `onceq` executable of a repository checkout: the product's commands (src/cli/program.ts)
 * plus the development tools, `demo`, `bench` and `chaos`, which the published package does not
 * hold. bin/onceq.js runs the compiled form of this file when it exists; `npm run onceq`, `npm run
 * demo`, `npm run bench` and `npm run chaos` run it from the sources through tsx.
 */
import { buildProgram } from '../src/cli/program.js';
import { runCommand } from '../src/cli/runtime.js';

const program = buildProgram();

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
  .action((opts) => runCommand(async () => (await import('./cli/demo.js')).runDemoCommand(opts)));

program
  .command('bench')
  .description(
    'throughput of BullMQ and graphile-worker baselines and of onceq, in one run (prints a ' +
      'table and JSON lines)',
  )
  .option('--jobs <n>', 'jobs per figure', '5000')
  .option('--concurrency <n>', 'worker concurrency', '50')
  .option('--runs <n>', 'runs per figure (the median is reported)', '3')
  .option('--json <file>', 'also write all figures to this file')
  .option('--only <names>', 'comma-separated figures to run (e.g. bullmq-insert,onceq-insert)')
  .option(
    '--cases <words>',
    'comma-separated figures or families to run: a word chooses the figures it names, is a ' +
      'dash-separated part of, or is the family of (e.g. workers: workers-1/2/4, ' +
      'cluster-workers-1/2/4 and pg-commits)',
  )
  .option(
    '--group-variants <list>',
    'also run each onceq figure per group-commit variant, mode[:maxGroups[:maxSize]] with ' +
      'mode off, on or savepoints (e.g. off,on:2:50,savepoints:2:50,on:1:50,on:4:25)',
  )
  .option('--sweep', 'also run bullmq-insert and onceq-insert at concurrency 1, 10, 50 and 200')
  .option('--chart <file>', 'SVG chart of the sweep (default docs/bench/concurrency.svg)')
  .option(
    '--workers-chart <file>',
    'SVG chart of the workers figures (default docs/bench/workers.svg)',
  )
  .option(
    '--partitions',
    'instead: inserts, token lookups and pruning at --rows rows, unpartitioned vs partitioned by ' +
      'day (throwaway schemas of DATABASE_URL; --runs rounds)',
  )
  .option('--rows <n>', 'with --partitions: rows per table', '20000000')
  .option('--days <n>', 'with --partitions: days the rows spread over', '10')
  .option('--inserts <n>', 'with --partitions: rows inserted per round and shape', '20000')
  .action((opts) =>
    runCommand(async () =>
      opts.partitions
        ? (await import('./bench/partitions.js')).runPartitionsBenchCommand({
            ...opts,
            rounds: opts.runs,
          })
        : (await import('./bench/bench.js')).runBench(opts),
    ),
  );

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
    '--backend <kind>',
    'redis (a private redis-server) or postgres (PostgreSQL-only mode: no Redis at all)',
    'redis',
  )
  .option(
    '--redis-cluster',
    'Redis mode on a Redis Cluster of its own (3 masters, 3 replicas on loopback) instead of ' +
      'one redis-server; adds the redis-failover fault',
  )
  .option(
    '--faults <list>',
    'comma-separated: kill,pause,pgkill,redis-restart,redis-flush,api-kill,redis-failover, or ' +
      'all (every fault the backend has: no redis-* with postgres, redis-failover only with ' +
      '--redis-cluster), or none',
    'all',
  )
  .option('--history <file>', 'JSON-lines history (default chaos-<seed>.history.jsonl)')
  .option('--lock-duration <d>', "workers' lock duration and claim lease", '2s')
  .option('--drain-timeout <d>', 'bound on waiting for the run to settle', '120s')
  .option('--keep-schema <when>', 'keep the PostgreSQL schema: always, never, invalid', 'invalid')
  .option('--json <file>', 'also write the whole report as JSON')
  .action((opts) => runCommand(async () => (await import('./cli/chaos.js')).runChaos(opts)));

program
  .command('soak')
  .description(
    'many messages through one compiled `onceq start`, sampling its RSS and Redis memory ' +
      '(run `npm run build` first; `npm run soak` does)',
  )
  .option('--messages <n>', 'messages to send through the API', '1000000')
  .option('--connections <n>', 'concurrent client loops (and the worker concurrency)', '50')
  .option('--sample <d>', 'time between two samples', '10s')
  .option('--token-ttl <d>', 'ONCEQ_TOKEN_TTL and completed-job retention of the run', '2m')
  .option(
    '--max-backlog <n>',
    'pause sending while this many sent messages are not applied',
    '20000',
  )
  .option('--json <file>', 'also write the report, every sample included, as JSON')
  .option('--chart <file>', 'also write RSS and Redis memory over time as an SVG chart')
  .action((opts) => runCommand(async () => (await import('./soak/soak.js')).runSoak(opts)));

await program.parseAsync(process.argv);
