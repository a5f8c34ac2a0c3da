/**
 * `npm run test:property -- [--runs N] [--seed S] [--path P] [--grep TEXT]`: the HTTP property
 * tests (test/http/property.test.ts) with more runs than `npm test` gives them (N in all, shared
 * by the properties; 100,000 by default), or again with the seed of a failure. It passes the
 * options on as environment variables and runs mocha on the property file only; each property
 * prints the seed it runs with, and fast-check prints seed and path of a counterexample.
 *
 * The properties keep state between cases (tokens get used), so the same seed and runs replay a
 * failure exactly; `--path` jumps straight to the shrunk case, without the state earlier cases
 * built.
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '100000' },
    seed: { type: 'string' },
    path: { type: 'string' },
    grep: { type: 'string' },
  },
});
if (!/^\d+$/.test(values.runs!))
  throw new Error(`--runs must be a whole number, not ${values.runs}`);
if (values.seed !== undefined && !/^-?\d+$/.test(values.seed)) {
  throw new Error(`--seed must be an integer, not ${values.seed}`);
}
const seed = values.seed ?? String((Date.now() ^ (Math.random() * 0x100000000)) | 0);
console.log(
  `property run: --runs ${values.runs} --seed ${seed}${values.path ? ` --path ${values.path}` : ''}`,
);
const mocha = [
  'mocha',
  'test/http/property.test.ts',
  ...(values.grep ? ['--grep', values.grep] : []),
];
const result = spawnSync('npx', mocha, {
  stdio: 'inherit',
  env: {
    ...process.env,
    ONCEQ_PROPERTY_RUNS: values.runs,
    ONCEQ_PROPERTY_SEED: seed,
    ...(values.path ? { ONCEQ_PROPERTY_PATH: values.path } : {}),
  },
});
process.exit(result.status ?? 1);
