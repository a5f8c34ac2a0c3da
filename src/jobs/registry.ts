/**
 * The job registry: job definitions by name, each with a compiled validator. The ledger jobs are
 * registered by default; `ONCEQ_JOBS` names a module whose exported definitions are added.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import {
  ConfigError,
  ErrorCode,
  NonRetryableError,
  ValidationError,
  type FieldError,
} from '../core/errors.js';
import { defineJob, isJobDefinition, type JobDefinition, type JobSpec } from './define-job.js';
import { ledgerJobs } from './examples/ledger/index.js';

/** A registered job with its compiled schema. */
interface Entry {
  job: JobDefinition;
  validate: ValidateFunction;
}

/** Job definitions by name. */
export class JobRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly ajv = new Ajv({ allErrors: true, strict: false });

  constructor(jobs: Iterable<JobDefinition> = []) {
    for (const job of jobs) this.register(job);
  }

  /** Adds a job; a second job with the same name is an error. */
  register(job: JobDefinition): this {
    if (this.entries.has(job.name)) throw new TypeError(`job ${job.name} is registered twice`);
    this.entries.set(job.name, { job, validate: this.ajv.compile(job.schema) });
    return this;
  }

  /** The job, or undefined. */
  find(name: string): JobDefinition | undefined {
    return this.entries.get(name)?.job;
  }

  /** The job; unknown names are a non-retryable error. */
  get(name: string): JobDefinition {
    const entry = this.entries.get(name);
    if (!entry) {
      throw new NonRetryableError(ErrorCode.UnknownJob, `unknown job "${name}"`, {
        details: { known: this.names() },
      });
    }
    return entry.job;
  }

  /** Registered job names, sorted. */
  names(): string[] {
    return [...this.entries.keys()].sort();
  }

  /** Every queue a registered job may run on (its default and its declared extra queues). */
  queues(): string[] {
    return [...new Set([...this.entries.values()].flatMap((e) => e.job.queues))].sort();
  }

  /** Validates data against the job's schema; throws a `ValidationError` listing every field. */
  validate(name: string, data: unknown): void {
    const job = this.get(name);
    const entry = this.entries.get(job.name)!;
    if (entry.validate(data)) return;
    const fields = (entry.validate.errors ?? []).map(toFieldError);
    throw new ValidationError(
      `invalid data for job ${name}: ${fields.map((f) => `${f.path || '/'} ${f.message}`).join('; ')}`,
      fields,
    );
  }
}

function toFieldError(error: ErrorObject): FieldError {
  let fieldPath = error.instancePath;
  if (error.keyword === 'required') {
    fieldPath = `${fieldPath}/${pointerToken((error.params as { missingProperty: string }).missingProperty)}`;
  } else if (error.keyword === 'additionalProperties') {
    fieldPath = `${fieldPath}/${pointerToken((error.params as { additionalProperty: string }).additionalProperty)}`;
  }
  return { path: fieldPath, message: error.message ?? error.keyword };
}

/** An RFC 6901 reference token: `~` and `/` in a property name are escaped. */
function pointerToken(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}

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
