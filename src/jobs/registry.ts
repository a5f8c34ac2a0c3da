/**
 * The job registry: job definitions by name, each with a compiled validator. It holds exactly the
 * jobs it is given; the CLI's built-in ledger and `ONCEQ_JOBS` are the CLI's (cli/jobs.ts).
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import {
  describeFieldErrors,
  ErrorCode,
  InvalidArgumentError,
  NonRetryableError,
  ValidationError,
  type FieldError,
} from '../core/errors.js';
import type { JobDefinition } from './define-job.js';
import type { QueuePartitions } from '../core/queue-partitions.js';
import { DEFAULT_PARTITIONS } from '../core/defaults.js';

/**
 * Largest data (counted in JSON values: objects, arrays and scalars) whose every failing field
 * is searched for. Ajv's `allErrors` allocates one error per failing value, unbounded: data of
 * 100,000 unknown properties costs 100,000 error objects to report 20. Larger data is reported
 * with the first error Ajv meets, found without that cost.
 */
export const FULL_REPORT_MAX_VALUES = 1_000;

/** A registered job with its schema compiled twice: stop at the first error, or find all. */
interface Entry {
  job: JobDefinition;
  firstError: ValidateFunction;
  allErrors: ValidateFunction;
}

/** Job definitions by name. */
export class JobRegistry {
  private readonly entries = new Map<string, Entry>();
  /** Partition count of every queue of a registered job, and the job that first declared it. */
  private readonly queuePartitions = new Map<string, { count: number; job: string }>();
  private readonly ajvFirstError = new Ajv({ allErrors: false, strict: false });
  private readonly ajvAllErrors = new Ajv({ allErrors: true, strict: false });

  constructor(jobs: Iterable<JobDefinition> = []) {
    for (const job of jobs) this.register(job);
  }

  /** Adds a job; a second job with the same name is an error. */
  register(job: JobDefinition): this {
    if (this.entries.has(job.name))
      throw new InvalidArgumentError(`job ${job.name} is registered twice`);
    // A definition built by hand (not by defineJob) may lack the count: one partition.
    const count = (job.partitions as number | undefined) ?? DEFAULT_PARTITIONS;
    for (const queue of job.queues) {
      const declared = this.queuePartitions.get(queue);
      if (declared && declared.count !== count) {
        throw new InvalidArgumentError(
          `job ${job.name} declares ${count} partition(s) for queue ${queue}, but job ` +
            `${declared.job} declares ${declared.count}: partitioning is a property of the ` +
            'queue, every job on it must declare the same partitions',
        );
      }
    }
    for (const queue of job.queues) {
      if (!this.queuePartitions.has(queue))
        this.queuePartitions.set(queue, { count, job: job.name });
    }
    this.entries.set(job.name, {
      job,
      firstError: this.ajvFirstError.compile(job.schema),
      allErrors: this.ajvAllErrors.compile(job.schema),
    });
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

  /** Registered jobs, sorted by name. */
  jobs(): JobDefinition[] {
    return this.names().map((name) => this.entries.get(name)!.job);
  }

  /** Registered job names, sorted. */
  names(): string[] {
    return [...this.entries.keys()].sort();
  }

  /** Every queue a registered job may run on (its default and its declared extra queues). */
  queues(): string[] {
    return [...new Set([...this.entries.values()].flatMap((e) => e.job.queues))].sort();
  }

  /**
   * The partition count of every queue a registered job may run on (1 for most), for the
   * components that route messages to partitions or read every partition of a queue.
   */
  partitions(): QueuePartitions {
    return new Map([...this.queuePartitions].map(([queue, { count }]) => [queue, count]));
  }

  /**
   * Validates data against the job's schema; throws a `ValidationError` listing the failing
   * fields (at most `MAX_REPORTED_ERRORS`, the rest counted). Valid data, the common case, is
   * checked once by the validator that stops at the first error; data over
   * {@link FULL_REPORT_MAX_VALUES} values is reported with that first error only.
   */
  validate(name: string, data: unknown): void {
    const job = this.get(name);
    const entry = this.entries.get(job.name)!;
    if (entry.firstError(data)) return;
    let errors = entry.firstError.errors ?? [];
    let note = '';
    if (!exceedsValues(data, FULL_REPORT_MAX_VALUES)) {
      if (!entry.allErrors(data)) errors = entry.allErrors.errors ?? errors;
    } else {
      note = ` (the first error only: data over ${FULL_REPORT_MAX_VALUES} values is not searched for every error)`;
    }
    const fields = errors.map(toFieldError);
    throw new ValidationError(
      `invalid data for job ${name}: ${describeFieldErrors(fields)}${note}`,
      fields,
    );
  }
}

/** True when `value` holds more than `limit` JSON values; walks at most `limit + 1` of them. */
function exceedsValues(value: unknown, limit: number): boolean {
  const pending: unknown[] = [value];
  let seen = 0;
  while (pending.length > 0) {
    if (++seen > limit) return true;
    const v = pending.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      for (const item of v) {
        pending.push(item);
        if (pending.length + seen > limit) return true;
      }
    } else {
      for (const key in v) {
        if (!Object.hasOwn(v, key)) continue;
        pending.push((v as Record<string, unknown>)[key]);
        if (pending.length + seen > limit) return true;
      }
    }
  }
  return false;
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
