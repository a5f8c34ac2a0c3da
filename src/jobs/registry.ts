/**
 * The job registry: job definitions by name, each with a compiled validator. The ledger jobs are
 * registered by default; `ONCEQ_JOBS` names a module whose exported definitions are added.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { ErrorCode, NonRetryableError, ValidationError, type FieldError } from '../core/errors.js';
import { isJobDefinition, type JobDefinition } from './define-job.js';
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

  /** Every queue a registered job runs on. */
  queues(): string[] {
    return [...new Set([...this.entries.values()].map((e) => e.job.queue))].sort();
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
    fieldPath = `${fieldPath}/${(error.params as { missingProperty: string }).missingProperty}`;
  } else if (error.keyword === 'additionalProperties') {
    fieldPath = `${fieldPath}/${(error.params as { additionalProperty: string }).additionalProperty}`;
  }
  return { path: fieldPath, message: error.message ?? error.keyword };
}

/** The default registry: the ledger example plus the jobs of `jobsModule`, if given. */
export async function loadRegistry(jobsModule?: string): Promise<JobRegistry> {
  const registry = new JobRegistry(ledgerJobs);
  if (jobsModule) {
    for (const job of await importJobs(jobsModule)) registry.register(job);
  }
  return registry;
}

/** Imports a module and returns every exported job definition (default export included). */
export async function importJobs(modulePath: string): Promise<JobDefinition[]> {
  const url = pathToFileURL(path.resolve(modulePath)).href;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`ONCEQ_JOBS=${modulePath}: cannot load the module: ${(err as Error).message}`, {
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
    throw new Error(
      `ONCEQ_JOBS=${modulePath}: the module exports no job definitions (use defineJob)`,
    );
  }
  return unique;
}
