/**
 * The app's settings, read from its environment here and nowhere else: onceq itself reads no
 * environment, it takes options. The names are the onceq CLI's, so `onceq api` started beside the
 * app with the same environment serves the same database schema and Redis prefix.
 */
export const settings = {
  /** `DATABASE_URL`: onceq's tables and the app's live in the same database. */
  database: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/tickets',
  /** `REDIS_URL`: BullMQ's queues and onceq's tokens. */
  redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  /** `ONCEQ_DB_SCHEMA`: the schema of onceq's tables and the app's. */
  schema: process.env.ONCEQ_DB_SCHEMA ?? 'public',
  /** `ONCEQ_PREFIX`: the Redis key prefix. */
  prefix: process.env.ONCEQ_PREFIX ?? 'onceq',
  /** `API_URL` and `API_KEY`: a running `onceq api` and a key of it (`onceq keys create`). */
  apiUrl: process.env.API_URL ?? 'http://127.0.0.1:3000',
  apiKey: process.env.API_KEY ?? '',
  /** The principal of the API key: the producer sends under it too, so the API shows its jobs. */
  principal: process.env.PRINCIPAL ?? 'tickets',
};
