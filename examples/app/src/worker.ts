/**
 * `npm run worker`: runs the app's jobs, and beside them what keeps the guarantees (the
 * reconciler, the outbox relay, the pruner). On SIGTERM or SIGINT it finishes or releases the
 * jobs in flight and closes its connections, and the process ends on its own.
 */
import { createWorker } from 'onceq';
import { jobs } from './jobs.js';
import { settings } from './settings.js';

const worker = await createWorker({
  redis: settings.redis,
  database: settings.database,
  schema: settings.schema,
  prefix: settings.prefix,
  jobs,
  concurrency: 4,
});
console.log('worker ready');

const stop = () => void worker.close().then(() => console.log('worker closed'));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
