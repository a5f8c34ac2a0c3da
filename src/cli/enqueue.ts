/** `onceq enqueue NAME --data JSON [--token T]`: enqueue through the producer library. */
import { loadRegistry } from './jobs.js';
import { loadConfig, producerOptionsFrom } from '../config.js';
import { openProducer } from '../lib/create-producer.js';
import { resolveServices } from './services.js';

/** Options of {@link runEnqueue}. */
export interface EnqueueCommandOptions {
  data: string;
  token?: string;
  queue?: string;
  delay?: string;
  priority?: string;
}

/** Enqueues one message and prints the answer as JSON; returns the exit code. */
export async function runEnqueue(name: string, opts: EnqueueCommandOptions): Promise<number> {
  let data: unknown;
  try {
    data = JSON.parse(opts.data);
  } catch (err) {
    process.stderr.write(`onceq enqueue: --data is not JSON: ${(err as Error).message}\n`);
    return 1;
  }
  // The registry first: a bad ONCEQ_JOBS is reported before anything is connected, and nothing
  // opened below can be left open by it (an open connection would keep the process alive).
  const environment = loadConfig();
  const registry = await loadRegistry(environment.jobsModule);
  const { config } = await resolveServices(environment);
  const { producer } = await openProducer(producerOptionsFrom(config, registry.jobs()), {
    name: 'onceq-enqueue',
    failFast: true,
  });
  try {
    const result = await producer.enqueue(name, data, {
      token: opts.token,
      queue: opts.queue,
      delay: opts.delay === undefined ? undefined : Number(opts.delay),
      priority: opts.priority === undefined ? undefined : Number(opts.priority),
    });
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } finally {
    await producer.close();
  }
}
