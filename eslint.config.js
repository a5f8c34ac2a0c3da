// ESLint flat config: typescript-eslint on every source, test, migration and example file, and
// the layering of src/ (no-restricted-imports per folder, below).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// --- Layering -------------------------------------------------------------------------------

// The repository's tools (chaos, bench, demo, their CLI) live in tools/, beside src/: a product
// file reaches them only by climbing out of src (`../tools/…`, `../../tools/…`).
const TOOLS = ['tools'];
// Everything at or above the CLI: config.ts maps the environment onto options for the CLI only
// (the library never reads process.env), and logger.ts reads config.ts.
const CLI_LEVEL = ['cli', 'config', 'logger', ...TOOLS];
// Every product folder above core, bottom up.
const ABOVE_CORE = [
  'telemetry',
  'db',
  'redis',
  'ids',
  'queues',
  'jobs',
  'worker',
  'producer',
  'http',
  'metrics',
  'lib',
];
// Driver packages: pure logic (core/) and the client import none of them.
// Packages of the layers above db/redis (BullMQ, HTTP, metrics).
const NOT_BELOW_QUEUES = ['bullmq', 'fastify', '@fastify/*', '@bull-board/*', 'prom-client'];
const DRIVERS = ['pg', 'ioredis', 'kysely', ...NOT_BELOW_QUEUES];
// OpenTelemetry's API: the spans live in telemetry/ (and the layers that start them), never in
// core/, which stays pure.
const TRACING = ['@opentelemetry/*'];

/**
 * A regex matching an import of src/<name>/… or src/<name>.js from a file inside a src/ folder:
 * another folder is always reached by climbing out (`../`, `../../`), so a file's own
 * neighbours (`./worker.js` in worker/) never match. The top-level files have their own block.
 */
const srcModule = (name, prefix = '(\\.\\./)+') => `^${prefix}${name}(/|\\.js$)`;

/**
 * The no-restricted-imports setting for a folder: `folders` are src/ folders (or top-level
 * modules such as config) it must not import, `packages` packages it must not import.
 */
function forbid({ folders = [], packages = [], extra = [], prefix }) {
  return [
    'error',
    {
      paths: [],
      patterns: [
        ...folders.map((name) =>
          TOOLS.includes(name)
            ? {
                // From any depth of src/, tools/ is out of src: always reached by `../`.
                regex: srcModule(name),
                message: 'layering (STYLE.md "The house"): the product never imports tools/.',
              }
            : {
                regex: srcModule(name, prefix),
                message: `layering (STYLE.md "The house"): this folder must not import src/${name}.`,
              },
        ),
        ...(packages.length > 0
          ? [
              {
                group: packages,
                message: 'layering (STYLE.md "The house"): this folder must not import drivers.',
              },
            ]
          : []),
        ...extra,
      ],
    },
  ];
}

function layering() {
  const above = (...names) => [...names, ...CLI_LEVEL];
  return [
    {
      // Pure logic, no I/O. It imports only node:crypto and node:net (isIP) today.
      files: ['src/core/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({
          folders: above(...ABOVE_CORE),
          packages: [...DRIVERS, ...TRACING],
        }),
      },
    },
    {
      // Traces through @opentelemetry/api (no SDK): on core only, so that every layer above may
      // start spans; no driver, so it stays the same whatever carries the messages.
      files: ['src/telemetry/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({
          folders: above(...ABOVE_CORE.filter((name) => name !== 'telemetry')),
          packages: DRIVERS,
        }),
      },
    },
    {
      // The typed HTTP client runs in browsers too: nothing from the server side, no package,
      // not even node: builtins. Only its own files.
      files: ['src/client/**/*.ts'],
      rules: {
        'no-restricted-imports': [
          'error',
          {
            patterns: [
              {
                regex: '^\\.\\./',
                message: 'onceq/client imports nothing outside src/client (STYLE.md "The house").',
              },
              {
                regex: '^[^.]',
                message: 'onceq/client is dependency-free: no packages, no node: builtins.',
              },
            ],
          },
        ],
      },
    },
    {
      // db/ and redis/ sit on core only; neither imports the other today.
      files: ['src/db/**/*.ts', 'src/redis/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({
          folders: above(...ABOVE_CORE),
          packages: NOT_BELOW_QUEUES,
        }),
      },
    },
    {
      // ids/ leases worker ids through db/ (worker-id-leases.repository.ts): core and db only.
      files: ['src/ids/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({
          folders: above('redis', 'queues', 'jobs', 'worker', 'producer', 'http', 'metrics', 'lib'),
          packages: NOT_BELOW_QUEUES,
        }),
      },
    },
    {
      // The BullMQ adapter (queue cache, job options, batched adds): above redis, below worker
      // and producer; beside jobs, so neither imports the other.
      files: ['src/queues/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({
          folders: above('jobs', 'worker', 'producer', 'http', 'metrics', 'lib'),
        }),
      },
    },
    {
      // defineJob and the handler context: on core and db (MessageTransaction). The ledger
      // under jobs/examples/ is the CLI's demo domain and keeps to the same rule.
      files: ['src/jobs/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({
          folders: above('queues', 'worker', 'producer', 'http', 'metrics', 'lib'),
        }),
      },
    },
    {
      // Nothing in worker imports producer: what both need of BullMQ lives in src/queues.
      files: ['src/worker/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({
          folders: above('http', 'metrics', 'lib'),
          extra: [
            {
              regex: '^(\\./|(\\.\\./)+)producer/',
              message:
                'layering: nothing in worker imports producer (issue 13 item 4); shared BullMQ ' +
                'code belongs in src/queues.',
            },
          ],
        }),
      },
    },
    {
      files: ['src/producer/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({
          folders: above('worker', 'http', 'metrics', 'lib'),
        }),
      },
    },
    {
      // http/ and metrics/ share a level: build-app.ts serves the metrics registry, and
      // routes/tokens.ts counts issued tokens, so http may import metrics but not the reverse.
      files: ['src/http/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({ folders: above('lib') }),
      },
    },
    {
      files: ['src/metrics/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({ folders: above('http', 'lib') }),
      },
    },
    {
      // createWorker/createProducer: the library's composition, beside http; never the CLI's.
      files: ['src/lib/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({ folders: above('http', 'metrics') }),
      },
    },
    {
      // `import 'onceq'`: the library, never the API server, the metrics or the CLI.
      files: ['src/index.ts'],
      rules: {
        'no-restricted-imports': forbid({ folders: above('http', 'metrics'), prefix: '\\./' }),
      },
    },
    {
      // The CLI and its environment mapping: never a tool (tools/cli.ts adds them to the CLI).
      files: ['src/cli/**/*.ts'],
      rules: {
        'no-restricted-imports': forbid({ folders: TOOLS }),
      },
    },
    {
      files: ['src/config.ts', 'src/logger.ts'],
      rules: {
        'no-restricted-imports': forbid({ folders: TOOLS, prefix: '\\./' }),
      },
    },
    {
      // no-restricted-imports sees only static imports: a product file must not reach a tool
      // through import() either.
      files: ['src/**/*.ts'],
      rules: {
        'no-restricted-syntax': [
          'error',
          {
            selector: `ImportExpression[source.value=/^(\\.\\.\\/)+(${TOOLS.join('|')})\\//]`,
            message: 'layering (STYLE.md "The house"): the product never imports a tool.',
          },
        ],
      },
    },
  ];
}

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'bin/**',
      'docs/api/**',
      'examples/**/node_modules/**',
      'examples/**/dist/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'no-restricted-imports': 'off',
    },
  },
  {
    // CommonJS config files (mocha reads .mocharc.cjs) run in Node with its globals.
    files: ['**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { module: 'writable', require: 'readonly', process: 'readonly' },
    },
  },
  // The layering (STYLE.md "The house"): arrows point down only,
  //   core <- telemetry, db, redis, ids <- queues, jobs <- worker, producer <- http, metrics, lib <- cli
  // (lib/ holds createWorker/createProducer, index.ts exports them; config.ts and logger.ts
  // belong to the CLI), tools/ (chaos, bench, demo) above everything: it may import src/, nothing
  // in src/ imports it. Each block below names what a folder must not import; one block per file,
  // since a later block's no-restricted-imports replaces an earlier one's. examples/ is a package of its own above everything: not covered.
  ...layering(),
);
