/**
 * The CLI's jobs: the built-in ledger example, plus the jobs of the module `ONCEQ_JOBS` names.
 * The library registers exactly the jobs it is given; only the CLI has a default domain.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError } from '../core/errors.js';
import {
  defineJob,
  isJobDefinition,
  type JobDefinition,
  type JobSpec,
} from '../jobs/define-job.js';
import { ledgerJobs } from '../jobs/examples/ledger/index.js';
import { JobRegistry } from '../jobs/registry.js';

/**
 * The default registry: the ledger example plus the jobs of `jobsModule`, if given. Every problem
 * with the module (not loadable, no jobs, a bad or duplicate job) is a `ConfigError` naming
 * `ONCEQ_JOBS`, so the CLI prints it as one line per problem rather than a stack trace.
 */
export async function loadRegistry(jobsModule?: string): Promise<JobRegistry> {
  const registry = new JobRegistry(ledgerJobs);
  if (!jobsModule) return registry;
  const problems: string[] = [];
  for (const job of await importJobs(jobsModule)) {
    if (registry.find(job.name)) {
      problems.push(
        `ONCEQ_JOBS=${jobsModule}: job ${job.name} is defined twice ` +
          `(job names are unique; built in: ${ledgerJobs.map((j) => j.name).join(', ')})`,
      );
      continue;
    }
    try {
      registry.register(job);
    } catch (err) {
      // An invalid JSON schema, which Ajv refuses to compile.
      problems.push(`ONCEQ_JOBS=${jobsModule}: job ${job.name}: ${oneLine(err)}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return registry;
}

/**
 * Imports a module and returns every exported job definition (default export and arrays
 * included). Plain objects shaped like a definition go through `defineJob`, so their names and
 * queues are checked and a missing queue gets the default, as if they had been defined with it.
 */
export async function importJobs(modulePath: string): Promise<JobDefinition[]> {
  const url = pathToFileURL(path.resolve(modulePath)).href;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError([`ONCEQ_JOBS=${modulePath}: cannot load the module: ${oneLine(err)}`], {
      cause: err,
    });
  }
  const found: JobDefinition[] = [];
  const visit = (value: unknown): void => {
    if (isJobDefinition(value)) found.push(value);
    else if (Array.isArray(value)) value.forEach(visit);
  };
  for (const value of Object.values(mod)) visit(value);
  const unique = [...new Set(found)];
  if (unique.length === 0) {
    throw new ConfigError([
      `ONCEQ_JOBS=${modulePath}: the module exports no job definitions (use defineJob)`,
    ]);
  }
  const problems: string[] = [];
  const jobs: JobDefinition[] = [];
  for (const job of unique) {
    try {
      jobs.push(defineJob(job as unknown as JobSpec<JobDefinition['schema'], unknown>));
    } catch (err) {
      problems.push(`ONCEQ_JOBS=${modulePath}: ${oneLine(err)}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return jobs;
}

/** An error's message on one line (loader errors can span several, with code frames). */
function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message || err.name : String(err);
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
