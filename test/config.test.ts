/**
 * `loadConfig(env)`: the environment becomes one frozen, validated Config, and every bad value is
 * reported at once, by name, without leaking credentials. Pure: no process.env, no I/O.
 */
import { expect } from 'chai';
import {
  DEFAULT_CONCURRENCY,
  DEFAULT_DATABASE_URL,
  DEFAULT_DEDUPE_WINDOW_MS,
  DEFAULT_LOCK_DURATION_MS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_POOL_SIZE,
  DEFAULT_PORT,
  DEFAULT_PREFIX,
  DEFAULT_REDIS_URL,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
  DEFAULT_TOKEN_TTL_MS,
  LOG_LEVELS,
  loadConfig,
  queueMode,
  workerOptionsFrom,
  redactUrl,
  type Config,
} from '../src/config.js';
import { ConfigError, ErrorCode } from '../src/core/errors.js';
import { mintApiKey } from '../src/core/api-key.js';

/** The ConfigError that `env` produces; fails the test when there is none. */
function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return err as ConfigError;
  }
  expect.fail(`loadConfig accepted ${JSON.stringify(env)}`);
}

/** The problems reported about one variable. */
function problemsAbout(err: ConfigError, name: string): string[] {
  return err.details.filter((p) => p.startsWith(`${name}=`) || p.startsWith(`${name}:`));
}

describe('config', () => {
  describe('defaults', () => {
    it('gives the documented default for every setting when the environment is empty', () => {
      const config = loadConfig({});
      expect(config).to.deep.equal({
        redisUrl: 'redis://127.0.0.1:6379',
        redisClusterNodes: undefined,
        defaultServices: true,
        dataDir: './.onceq/pg',
        databaseUrl: 'postgres://postgres@127.0.0.1:5432/onceq',
        databaseSchema: 'public',
        poolSize: 10,
        port: 3000,
        prefix: 'onceq',
        queues: [],
        concurrency: 10,
        maxAttempts: 10,
        lockDurationMs: 30_000,
        tokenTtlMs: 24 * 3_600_000,
        dedupeWindowMs: 7 * 86_400_000,
        reconcileIntervalMs: 60_000,
        reconcileGraceMs: 120_000,
        pruneIntervalMs: 600_000,
        outboxIntervalMs: 1_000,
        groupCommit: { maxSize: 50, maxGroups: 2, savepoints: false, lockTimeoutMs: 100 },
        completedJobRetentionMs: 86_400_000,
        statementTimeoutMs: 60_000,
        shutdownTimeoutMs: 10_000,
        jobsModule: undefined,
        logLevel: 'info',
        fault: undefined,
        host: '0.0.0.0',
        bodyLimit: 1_048_576,
        rateLimit: { max: 60_000, windowMs: 60_000 },
        maxOutstandingTokens: 10_000,
        authFailureLimit: { max: 100, windowMs: 60_000 },
        metricsPort: undefined,
        apiUrl: undefined,
        apiKey: undefined,
      } satisfies Config);
    });

    it('exports DEFAULT_* constants that match DESIGN.md section 4', () => {
      expect(DEFAULT_REDIS_URL).to.equal('redis://127.0.0.1:6379');
      expect(DEFAULT_DATABASE_URL).to.equal('postgres://postgres@127.0.0.1:5432/onceq');
      expect(DEFAULT_PORT).to.equal(3000);
      expect(DEFAULT_PREFIX).to.equal('onceq');
      expect(DEFAULT_TOKEN_TTL_MS).to.equal(86_400_000);
      expect(DEFAULT_DEDUPE_WINDOW_MS).to.equal(604_800_000);
      const config = loadConfig({});
      expect(config.concurrency).to.equal(DEFAULT_CONCURRENCY);
      expect(config.maxAttempts).to.equal(DEFAULT_MAX_ATTEMPTS);
      expect(config.poolSize).to.equal(DEFAULT_POOL_SIZE);
      expect(config.lockDurationMs).to.equal(DEFAULT_LOCK_DURATION_MS);
      expect(config.shutdownTimeoutMs).to.equal(DEFAULT_SHUTDOWN_TIMEOUT_MS);
    });

    it('treats empty and blank values as unset', () => {
      const config = loadConfig({
        REDIS_URL: '',
        DATABASE_URL: '   ',
        PORT: '',
        ONCEQ_CONCURRENCY: ' ',
        ONCEQ_TOKEN_TTL: '',
        LOG_LEVEL: '',
        ONCEQ_JOBS: '  ',
        ONCEQ_QUEUES: '',
      });
      expect(config).to.deep.equal(loadConfig({}));
    });

    it('ignores variables it does not know', () => {
      expect(loadConfig({ HOME: '/root', ONCEQ_UNKNOWN: 'x', NODE_ENV: 'test' })).to.deep.equal(
        loadConfig({}),
      );
    });
  });

  describe('parsing each variable', () => {
    it('reads REDIS_URL and DATABASE_URL (redis/rediss, postgres/postgresql), trimmed', () => {
      const config = loadConfig({
        REDIS_URL: ' rediss://:pw@cache.example:6380/2 ',
        DATABASE_URL: 'postgresql://app:pw@db.example:6543/ledger?sslmode=require',
      });
      expect(config.redisUrl).to.equal('rediss://:pw@cache.example:6380/2');
      expect(config.databaseUrl).to.equal(
        'postgresql://app:pw@db.example:6543/ledger?sslmode=require',
      );
      expect(loadConfig({ REDIS_URL: 'redis://r:1' }).redisUrl).to.equal('redis://r:1');
      expect(loadConfig({ DATABASE_URL: 'postgres://h/db' }).databaseUrl).to.equal(
        'postgres://h/db',
      );
    });

    it('reads REDIS_CLUSTER_NODES (host:port, IPv6 in brackets), and then ignores REDIS_URL', () => {
      const config = loadConfig({
        REDIS_CLUSTER_NODES: ' 10.0.0.1:7000, cache-2.example:7001,[::1]:7002,10.0.0.1:7000 ',
        REDIS_URL: 'redis://elsewhere:6379',
      });
      expect(config.redisClusterNodes).to.deep.equal([
        { host: '10.0.0.1', port: 7000 },
        { host: 'cache-2.example', port: 7001 },
        { host: '::1', port: 7002 },
      ]);
      expect(config.redisUrl).to.equal(undefined);
      expect(config.defaultServices).to.equal(false);
      expect(queueMode(config)).to.equal('redis');
      expect(workerOptionsFrom(config, []).redis).to.deep.equal(config.redisClusterNodes);
      // DATABASE_URL beside it changes nothing: still Redis mode, on the cluster.
      const both = loadConfig({ REDIS_CLUSTER_NODES: 'r:7000', DATABASE_URL: 'postgres://h/db' });
      expect(queueMode(both)).to.equal('redis');
      expect(loadConfig({}).redisClusterNodes).to.equal(undefined);
      expect(queueMode(loadConfig({ DATABASE_URL: 'postgres://h/db' }))).to.equal('postgres');
    });

    it('names each REDIS_CLUSTER_NODES entry that is not host:port', () => {
      const err = configError({ REDIS_CLUSTER_NODES: 'a:7000,b,c:0,:7001,d:70000,[zz]:1' });
      const lines = err.message.split('\n').filter((l) => l.includes('REDIS_CLUSTER_NODES'));
      expect(lines).to.have.length(5);
      expect(lines[0]).to.include('node 2 ("b") is not host:port');
      for (const text of ['"c:0"', '":7001"', '"d:70000"', '"[zz]:1"']) {
        expect(lines.some((l) => l.includes(text))).to.equal(true, text);
      }
      expect(configError({ REDIS_CLUSTER_NODES: ',,' }).message).to.include(
        'REDIS_CLUSTER_NODES: no nodes',
      );
    });

    it('reads the integers PORT, ONCEQ_CONCURRENCY, ONCEQ_MAX_ATTEMPTS, ONCEQ_DB_POOL_SIZE', () => {
      const config = loadConfig({
        PORT: '8080',
        ONCEQ_CONCURRENCY: '50',
        ONCEQ_MAX_ATTEMPTS: '3',
        ONCEQ_DB_POOL_SIZE: '25',
      });
      expect(config).to.include({ port: 8080, concurrency: 50, maxAttempts: 3, poolSize: 25 });
      // The bounds themselves are accepted.
      expect(loadConfig({ PORT: '0' }).port).to.equal(0);
      expect(loadConfig({ PORT: '65535' }).port).to.equal(65535);
      expect(loadConfig({ ONCEQ_CONCURRENCY: '1' }).concurrency).to.equal(1);
      expect(loadConfig({ ONCEQ_CONCURRENCY: '10000' }).concurrency).to.equal(10_000);
      expect(loadConfig({ ONCEQ_MAX_ATTEMPTS: '1000' }).maxAttempts).to.equal(1000);
      expect(loadConfig({ ONCEQ_DB_POOL_SIZE: '1' }).poolSize).to.equal(1);
    });

    const durations: [string, number][] = [
      ['30s', 30_000],
      ['5m', 300_000],
      ['24h', 86_400_000],
      ['7d', 604_800_000],
      ['45', 45_000],
      ['1500ms', 1_500],
      [' 2s ', 2_000],
    ];
    for (const [text, ms] of durations) {
      it(`reads the duration "${text}" as ${ms} ms in every duration variable`, () => {
        const config = loadConfig({
          ONCEQ_LOCK_DURATION: text,
          ONCEQ_TOKEN_TTL: text,
          ONCEQ_SHUTDOWN_TIMEOUT: text,
          // Longer than every duration here: the token ttl and the reconcile grace must stay
          // within it (read on its own below).
          ONCEQ_DEDUPE_WINDOW: '30d',
          ONCEQ_RECONCILE_INTERVAL: text,
          ONCEQ_RECONCILE_GRACE: text,
          ONCEQ_PRUNE_INTERVAL: text,
          ONCEQ_OUTBOX_INTERVAL: text,
          ONCEQ_STATEMENT_TIMEOUT: text,
        });
        for (const key of [
          'reconcileIntervalMs',
          'reconcileGraceMs',
          'pruneIntervalMs',
          'outboxIntervalMs',
          'statementTimeoutMs',
        ] as const) {
          expect(config[key], key).to.equal(ms);
        }
        expect(config.lockDurationMs).to.equal(ms);
        expect(config.tokenTtlMs).to.equal(ms);
        expect(config.shutdownTimeoutMs).to.equal(ms);
        // The dedupe window has a one-minute floor.
        const window = loadConfig({
          ONCEQ_DEDUPE_WINDOW: ms >= 60_000 ? text : '1m',
          ONCEQ_TOKEN_TTL: '1m',
          ONCEQ_RECONCILE_GRACE: '30s',
        });
        expect(window.dedupeWindowMs).to.equal(ms >= 60_000 ? ms : 60_000);
      });
    }

    it('reads the background-task settings down to 100 ms (tests use short ones)', () => {
      const config = loadConfig({
        ONCEQ_RECONCILE_INTERVAL: '100ms',
        ONCEQ_RECONCILE_GRACE: '1s',
        ONCEQ_PRUNE_INTERVAL: '5m',
        ONCEQ_OUTBOX_INTERVAL: '250ms',
      });
      expect(config.reconcileIntervalMs).to.equal(100);
      expect(config.reconcileGraceMs).to.equal(1_000);
      expect(config.pruneIntervalMs).to.equal(300_000);
      expect(config.outboxIntervalMs).to.equal(250);
    });

    it('accepts a zero shutdown timeout (release in-flight jobs at once)', () => {
      expect(loadConfig({ ONCEQ_SHUTDOWN_TIMEOUT: '0' }).shutdownTimeoutMs).to.equal(0);
      expect(loadConfig({ ONCEQ_SHUTDOWN_TIMEOUT: '0s' }).shutdownTimeoutMs).to.equal(0);
    });

    it('turns the worker statement timeout off with 0, and names the variable of a bad value', () => {
      expect(loadConfig({ ONCEQ_STATEMENT_TIMEOUT: '0' }).statementTimeoutMs).to.equal(0);
      expect(() => loadConfig({ ONCEQ_STATEMENT_TIMEOUT: 'soon' })).to.throw(
        /ONCEQ_STATEMENT_TIMEOUT/,
      );
    });

    it('reads every LOG_LEVEL pino knows, case-insensitively', () => {
      for (const level of LOG_LEVELS) {
        expect(loadConfig({ LOG_LEVEL: level }).logLevel).to.equal(level);
        expect(loadConfig({ LOG_LEVEL: level.toUpperCase() }).logLevel).to.equal(level);
      }
    });

    it('splits ONCEQ_QUEUES on commas, trimming and dropping empty entries', () => {
      expect(loadConfig({ ONCEQ_QUEUES: 'ledger' }).queues).to.deep.equal(['ledger']);
      expect(loadConfig({ ONCEQ_QUEUES: ' ledger , emails.v2,,bulk_1-a, ' }).queues).to.deep.equal([
        'ledger',
        'emails.v2',
        'bulk_1-a',
      ]);
      expect(loadConfig({ ONCEQ_QUEUES: ',' }).queues).to.deep.equal([]);
    });

    it('accepts ONCEQ_PREFIX of letters, digits, _ . - up to 64 characters', () => {
      expect(loadConfig({ ONCEQ_PREFIX: 'prod-eu.1_a' }).prefix).to.equal('prod-eu.1_a');
      expect(loadConfig({ ONCEQ_PREFIX: 'p'.repeat(64) }).prefix).to.equal('p'.repeat(64));
    });

    it('reads ONCEQ_DB_SCHEMA, ONCEQ_JOBS and ONCEQ_FAULT', () => {
      const config = loadConfig({
        ONCEQ_DB_SCHEMA: 'tenant_42',
        ONCEQ_JOBS: ' ./jobs/index.js ',
        ONCEQ_FAULT: 'after-claim:kill',
      });
      expect(config.databaseSchema).to.equal('tenant_42');
      expect(config.jobsModule).to.equal('./jobs/index.js');
      expect(config.fault).to.equal('after-claim:kill');
    });
  });

  describe('API settings', () => {
    it('reads ONCEQ_HOST and ONCEQ_BODY_LIMIT', () => {
      const config = loadConfig({ ONCEQ_HOST: '127.0.0.1', ONCEQ_BODY_LIMIT: '2048' });
      expect(config.host).to.equal('127.0.0.1');
      expect(config.bodyLimit).to.equal(2048);
    });

    const rates: [string, { max: number; windowMs: number }][] = [
      ['500', { max: 500, windowMs: 60_000 }],
      ['100/1s', { max: 100, windowMs: 1_000 }],
      ['100/s', { max: 100, windowMs: 1_000 }],
      ['6000/m', { max: 6000, windowMs: 60_000 }],
      ['10 / 5m', { max: 10, windowMs: 300_000 }],
      ['0', { max: 0, windowMs: 60_000 }],
    ];
    for (const [text, expected] of rates) {
      it(`reads ONCEQ_RATE_LIMIT=${text} as ${expected.max} per ${expected.windowMs} ms`, () => {
        expect(loadConfig({ ONCEQ_RATE_LIMIT: text }).rateLimit).to.deep.equal(expected);
      });
    }

    it('reads the group commit: ONCEQ_GROUP_COMMIT on, off or savepoints, and its sizes', () => {
      expect(loadConfig({ ONCEQ_GROUP_COMMIT: 'off' }).groupCommit).to.equal(false);
      expect(
        loadConfig({
          ONCEQ_GROUP_COMMIT: 'Savepoints',
          ONCEQ_GROUP_MAX_SIZE: '200',
          ONCEQ_GROUP_MAX_GROUPS: '3',
          ONCEQ_GROUP_LOCK_TIMEOUT: '250ms',
        }).groupCommit,
      ).to.deep.equal({ maxSize: 200, maxGroups: 3, savepoints: true, lockTimeoutMs: 250 });
      expect(loadConfig({ ONCEQ_GROUP_COMMIT: 'on' })).to.deep.equal(loadConfig({}));
    });

    it('reads ONCEQ_MAX_UNUSED_TOKENS (100 up, or 0 for no bound)', () => {
      expect(loadConfig({ ONCEQ_MAX_UNUSED_TOKENS: '250' }).maxOutstandingTokens).to.equal(250);
      expect(loadConfig({ ONCEQ_MAX_UNUSED_TOKENS: '100' }).maxOutstandingTokens).to.equal(100);
      expect(loadConfig({ ONCEQ_MAX_UNUSED_TOKENS: '0' }).maxOutstandingTokens).to.equal(0);
    });

    it('reads ONCEQ_AUTH_FAILURE_LIMIT as ONCEQ_RATE_LIMIT is read', () => {
      expect(loadConfig({ ONCEQ_AUTH_FAILURE_LIMIT: '20/10s' }).authFailureLimit).to.deep.equal({
        max: 20,
        windowMs: 10_000,
      });
      expect(loadConfig({ ONCEQ_AUTH_FAILURE_LIMIT: '0' }).authFailureLimit.max).to.equal(0);
    });
  });

  describe('bad values', () => {
    const badValues: [string, string][] = [
      ['REDIS_URL', 'not a url'],
      ['REDIS_URL', 'http://127.0.0.1:6379'],
      ['DATABASE_URL', 'mysql://root@127.0.0.1/onceq'],
      ['DATABASE_URL', 'postgres://h:99999999/db'],
      ['PORT', '65536'],
      ['PORT', '80.5'],
      ['PORT', '-1'],
      ['ONCEQ_CONCURRENCY', 'abc'],
      ['ONCEQ_CONCURRENCY', '0'],
      ['ONCEQ_CONCURRENCY', '10001'],
      ['ONCEQ_CONCURRENCY', '1e3'],
      ['ONCEQ_MAX_ATTEMPTS', '0'],
      ['ONCEQ_MAX_ATTEMPTS', '+3'],
      ['ONCEQ_DB_POOL_SIZE', '0'],
      ['ONCEQ_LOCK_DURATION', '500ms'],
      ['ONCEQ_LOCK_DURATION', '1.5s'],
      ['ONCEQ_LOCK_DURATION', '-5s'],
      ['ONCEQ_TOKEN_TTL', '1w'],
      ['ONCEQ_TOKEN_TTL', 'forever'],
      ['ONCEQ_TOKEN_TTL', '99999999999999999d'],
      ['ONCEQ_DEDUPE_WINDOW', '59s'],
      ['ONCEQ_SHUTDOWN_TIMEOUT', 'soon'],
      ['ONCEQ_RECONCILE_INTERVAL', '50ms'],
      ['ONCEQ_RECONCILE_INTERVAL', 'often'],
      ['ONCEQ_RECONCILE_GRACE', '0'],
      ['ONCEQ_PRUNE_INTERVAL', '-1m'],
      ['ONCEQ_OUTBOX_INTERVAL', '99ms'],
      ['LOG_LEVEL', 'loud'],
      ['LOG_LEVEL', 'verbose'],
      ['ONCEQ_PREFIX', 'a:b'],
      ['ONCEQ_PREFIX', '{onceq}'],
      ['ONCEQ_PREFIX', 'p'.repeat(65)],
      ['ONCEQ_PREFIX', 'with space'],
      ['ONCEQ_QUEUES', 'ledger,bad:queue'],
      ['ONCEQ_QUEUES', `${'q'.repeat(65)}`],
      ['ONCEQ_DB_SCHEMA', 'Public'],
      ['ONCEQ_DB_SCHEMA', 'drop table; --'],
      ['ONCEQ_BODY_LIMIT', '1023'],
      ['ONCEQ_BODY_LIMIT', '1mb'],
      ['ONCEQ_RATE_LIMIT', 'lots'],
      ['ONCEQ_RATE_LIMIT', '-1'],
      ['ONCEQ_RATE_LIMIT', '100/500ms'],
      ['ONCEQ_RATE_LIMIT', '100/fortnight'],
      ['ONCEQ_MAX_UNUSED_TOKENS', '99'],
      ['ONCEQ_MAX_UNUSED_TOKENS', '1e4'],
      ['ONCEQ_MAX_UNUSED_TOKENS', 'lots'],
      ['ONCEQ_MAX_UNUSED_TOKENS', '100000001'],
      ['ONCEQ_AUTH_FAILURE_LIMIT', '10/100ms'],
      ['ONCEQ_AUTH_FAILURE_LIMIT', 'few'],
      ['ONCEQ_HOST', 'a host'],
      ['ONCEQ_GROUP_COMMIT', 'sometimes'],
      ['ONCEQ_GROUP_MAX_SIZE', '0'],
      ['ONCEQ_GROUP_MAX_SIZE', '1001'],
      ['ONCEQ_GROUP_MAX_GROUPS', '0'],
      ['ONCEQ_GROUP_LOCK_TIMEOUT', 'never'],
      ['ONCEQ_GROUP_LOCK_TIMEOUT', '100'],
      ['ONCEQ_GROUP_LOCK_TIMEOUT', '30d'],
      ['ONCEQ_COMPLETED_JOB_RETENTION', '500ms'],
    ];
    for (const [name, value] of badValues) {
      it(`rejects ${name}=${value.length > 30 ? `${value.slice(0, 27)}...` : value} by name`, () => {
        const err = configError({ [name]: value });
        expect(err.code).to.equal(ErrorCode.ConfigInvalid);
        expect(err.details, err.message).to.have.length(1);
        expect(problemsAbout(err, name), err.message).to.have.length(1);
        expect(err.message).to.contain(name);
      });
    }

    it('reports every bad variable at once, one line each, in one ConfigError', () => {
      const err = configError({
        REDIS_URL: 'ftp://x',
        DATABASE_URL: 'nope',
        PORT: 'http',
        ONCEQ_CONCURRENCY: 'abc',
        ONCEQ_MAX_ATTEMPTS: '0',
        ONCEQ_TOKEN_TTL: 'tomorrow',
        ONCEQ_DEDUPE_WINDOW: '1s',
        LOG_LEVEL: 'loud',
        ONCEQ_PREFIX: 'a:b',
        ONCEQ_QUEUES: 'good,{bad}',
        // Valid ones are not reported.
        ONCEQ_LOCK_DURATION: '5s',
      });
      const names = [
        'REDIS_URL',
        'DATABASE_URL',
        'PORT',
        'ONCEQ_CONCURRENCY',
        'ONCEQ_MAX_ATTEMPTS',
        'ONCEQ_TOKEN_TTL',
        'ONCEQ_DEDUPE_WINDOW',
        'LOG_LEVEL',
        'ONCEQ_PREFIX',
        'ONCEQ_QUEUES',
      ];
      expect(err.details, err.message).to.have.length(names.length);
      for (const name of names) {
        expect(problemsAbout(err, name), `${name} in\n${err.message}`).to.have.length(1);
      }
      expect(err.message).not.to.contain('ONCEQ_LOCK_DURATION');
      // The message is a header plus one line per problem, ready for stderr.
      const lines = err.message.split('\n');
      expect(lines[0]).to.equal('invalid configuration:');
      expect(lines.slice(1).map((l) => l.trim())).to.deep.equal(err.details);
      expect(err.name).to.equal('ConfigError');
    });

    describe('combinations that would break a guarantee', () => {
      it('refuses a token ttl longer than the dedupe window, naming both', () => {
        const err = configError({ ONCEQ_TOKEN_TTL: '8d' });
        expect(err.details).to.deep.equal([
          'ONCEQ_TOKEN_TTL=8d is longer than ONCEQ_DEDUPE_WINDOW=7d (the default): a retry of an ' +
            'accepted request could outlive its acceptance record, and after a Redis loss be ' +
            'accepted as a new message; keep the token ttl at most the dedupe window',
        ]);
        expect(configError({ ONCEQ_TOKEN_TTL: '2h', ONCEQ_DEDUPE_WINDOW: '1h' }).details)
          .to.have.length(1)
          .and.satisfy((d: string[]) =>
            d[0]!.startsWith('ONCEQ_TOKEN_TTL=2h is longer than ONCEQ_DEDUPE_WINDOW=1h:'),
          );
        // Equal is fine: the token is gone when its record is.
        expect(
          loadConfig({ ONCEQ_TOKEN_TTL: '1h', ONCEQ_DEDUPE_WINDOW: '1h' }).tokenTtlMs,
        ).to.equal(3_600_000);
      });

      it('refuses a reconcile grace not shorter than the dedupe window', () => {
        for (const grace of ['7d', '8d']) {
          const err = configError({ ONCEQ_RECONCILE_GRACE: grace });
          expect(err.details, grace).to.have.length(1);
          expect(err.details[0]).to.match(
            new RegExp(
              `^ONCEQ_RECONCILE_GRACE=${grace} is not shorter than ONCEQ_DEDUPE_WINDOW=7d \\(the default\\): `,
            ),
          );
        }
        expect(
          loadConfig({
            ONCEQ_RECONCILE_GRACE: '59m',
            ONCEQ_DEDUPE_WINDOW: '1h',
            ONCEQ_TOKEN_TTL: '1h',
          }).reconcileGraceMs,
        ).to.equal(59 * 60_000);
      });

      it('refuses a statement timeout shorter than the lock duration, unless it is 0 (off)', () => {
        expect(configError({ ONCEQ_LOCK_DURATION: '2m' }).details).to.deep.equal([
          'ONCEQ_STATEMENT_TIMEOUT=1m (the default) is shorter than ONCEQ_LOCK_DURATION=2m: a ' +
            "delivery waiting on a paused worker's uncommitted inbox row would time out, spending " +
            'an attempt, before PostgreSQL ends that transaction; set it to at least the lock ' +
            'duration, or 0 to turn it off',
        ]);
        expect(
          configError({ ONCEQ_STATEMENT_TIMEOUT: '10s', ONCEQ_LOCK_DURATION: '30s' }).details[0],
        ).to.match(/^ONCEQ_STATEMENT_TIMEOUT=10s is shorter than ONCEQ_LOCK_DURATION=30s: /);
        const equal = loadConfig({ ONCEQ_STATEMENT_TIMEOUT: '30s', ONCEQ_LOCK_DURATION: '30s' });
        expect(equal.statementTimeoutMs).to.equal(30_000);
        const off = loadConfig({ ONCEQ_STATEMENT_TIMEOUT: '0', ONCEQ_LOCK_DURATION: '1h' });
        expect(off.statementTimeoutMs).to.equal(0);
      });

      it('reports each broken combination on its own line, with the other bad values', () => {
        const err = configError({
          ONCEQ_TOKEN_TTL: '2d',
          ONCEQ_DEDUPE_WINDOW: '1d',
          ONCEQ_RECONCILE_GRACE: '1d',
          ONCEQ_STATEMENT_TIMEOUT: '1s',
          ONCEQ_LOCK_DURATION: '5s',
          PORT: 'http',
        });
        expect(err.details, err.message).to.have.length(4);
        expect(problemsAbout(err, 'PORT')).to.have.length(1);
        expect(problemsAbout(err, 'ONCEQ_TOKEN_TTL')).to.have.length(1);
        expect(problemsAbout(err, 'ONCEQ_RECONCILE_GRACE')).to.have.length(1);
        expect(problemsAbout(err, 'ONCEQ_STATEMENT_TIMEOUT')).to.have.length(1);
        expect(err.message.split('\n')).to.have.length(5);
      });

      it('does not judge a pair by a default that stands in for a bad value', () => {
        // The window is bad (below its floor): only that is reported, not "ttl longer than
        // the window" against the default 7d standing in for it.
        const err = configError({ ONCEQ_DEDUPE_WINDOW: '1s', ONCEQ_TOKEN_TTL: '8d' });
        expect(err.details).to.have.length(1);
        expect(problemsAbout(err, 'ONCEQ_DEDUPE_WINDOW')).to.have.length(1);
      });
    });

    it('says what was expected, with the value given', () => {
      const err = configError({
        ONCEQ_CONCURRENCY: 'abc',
        ONCEQ_TOKEN_TTL: '1w',
        LOG_LEVEL: 'loud',
        ONCEQ_QUEUES: 'x:y',
      });
      expect(problemsAbout(err, 'ONCEQ_CONCURRENCY')[0]).to.equal(
        'ONCEQ_CONCURRENCY=abc: expected an integer from 1 to 10000',
      );
      expect(problemsAbout(err, 'ONCEQ_TOKEN_TTL')[0])
        .to.contain('ONCEQ_TOKEN_TTL=1w')
        .and.contain('30s, 5m, 24h or 7d');
      expect(problemsAbout(err, 'LOG_LEVEL')[0]).to.equal(
        `LOG_LEVEL=loud: expected one of ${LOG_LEVELS.join(', ')}`,
      );
      expect(problemsAbout(err, 'ONCEQ_QUEUES')[0]).to.contain('"x:y"');
    });

    it('names each bad queue of ONCEQ_QUEUES on its own line', () => {
      const err = configError({ ONCEQ_QUEUES: 'ok,a:b,fine,{c}' });
      expect(err.details).to.have.length(2);
      expect(err.details[0]).to.contain('"a:b"');
      expect(err.details[1]).to.contain('"{c}"');
    });

    it('never shows a URL password in an error', () => {
      const secret = 'S3cr3tPassw0rd';
      const err = configError({
        REDIS_URL: `http://user:${secret}@127.0.0.1:6379`,
        DATABASE_URL: `mysql://root:${secret}@db.example/onceq`,
      });
      expect(err.details).to.have.length(2);
      expect(err.message).not.to.contain(secret);
      expect(JSON.stringify(err.details)).not.to.contain(secret);
      // The redacted URL still says where.
      expect(problemsAbout(err, 'REDIS_URL')[0]).to.contain('127.0.0.1:6379').and.contain('***');
      expect(problemsAbout(err, 'DATABASE_URL')[0]).to.contain('db.example');

      // Unparseable URLs are not echoed at all: there is no telling where the password ends.
      const unparseable = configError({
        REDIS_URL: `redis://user:${secret}@host:notaport`,
        DATABASE_URL: `postgres://user:${secret}@[::1`,
      });
      expect(unparseable.details).to.deep.equal([
        'REDIS_URL: not a URL',
        'DATABASE_URL: not a URL',
      ]);
      expect(unparseable.message).not.to.contain(secret);
    });

    it('redactUrl hides the password and keeps the rest', () => {
      expect(redactUrl('postgres://app:hunter2@db:5432/x')).to.equal(
        'postgres://app:***@db:5432/x',
      );
      expect(redactUrl('redis://127.0.0.1:6379')).to.equal('redis://127.0.0.1:6379');
      expect(redactUrl('::not a url')).to.equal('<invalid URL>');
    });
  });

  describe('operations settings (metrics port, demo client)', () => {
    it('reads ONCEQ_METRICS_PORT, with 0 for a free port; unset means no worker metrics server', () => {
      expect(loadConfig({}).metricsPort).to.equal(undefined);
      expect(loadConfig({ ONCEQ_METRICS_PORT: '9464' }).metricsPort).to.equal(9464);
      expect(loadConfig({ ONCEQ_METRICS_PORT: '0' }).metricsPort).to.equal(0);
      for (const bad of ['-1', '65536', 'http', '94.64']) {
        expect(
          problemsAbout(configError({ ONCEQ_METRICS_PORT: bad }), 'ONCEQ_METRICS_PORT'),
        ).to.have.length(1);
      }
    });

    it('reads ONCEQ_API_URL as an http(s) URL', () => {
      expect(loadConfig({ ONCEQ_API_URL: 'http://127.0.0.1:3000' }).apiUrl).to.equal(
        'http://127.0.0.1:3000',
      );
      expect(
        problemsAbout(configError({ ONCEQ_API_URL: 'redis://x:1' }), 'ONCEQ_API_URL'),
      ).to.have.length(1);
    });

    it('checks the shape of ONCEQ_API_KEY and never repeats its value in the error', () => {
      const { key } = mintApiKey();
      expect(loadConfig({ ONCEQ_API_KEY: key }).apiKey).to.equal(key);
      const bad = `${key.slice(0, -1)}!`;
      const err = configError({ ONCEQ_API_KEY: bad });
      expect(problemsAbout(err, 'ONCEQ_API_KEY')).to.have.length(1);
      expect(err.message).not.to.contain(bad.slice(21));
    });
  });

  describe('the result', () => {
    it('is frozen, its queue list included', () => {
      const config = loadConfig({ ONCEQ_QUEUES: 'a,b' });
      expect(Object.isFrozen(config)).to.equal(true);
      expect(Object.isFrozen(config.queues)).to.equal(true);
      expect(() => {
        (config as { port: number }).port = 1;
      }).to.throw(TypeError);
      expect(() => (config.queues as string[]).push('c')).to.throw(TypeError);
      expect(config.port).to.equal(3000);
      expect(config.queues).to.deep.equal(['a', 'b']);
    });

    it('reads only the environment object it is given, and leaves it unchanged', () => {
      const saved = process.env.ONCEQ_CONCURRENCY;
      process.env.ONCEQ_CONCURRENCY = '7';
      try {
        const env = Object.freeze({ PORT: '4000', LOG_LEVEL: 'DEBUG' });
        const config = loadConfig(env);
        expect(config.port).to.equal(4000);
        expect(config.concurrency).to.equal(DEFAULT_CONCURRENCY);
        expect(env).to.deep.equal({ PORT: '4000', LOG_LEVEL: 'DEBUG' });
      } finally {
        if (saved === undefined) delete process.env.ONCEQ_CONCURRENCY;
        else process.env.ONCEQ_CONCURRENCY = saved;
      }
    });
  });
});
