/**
 * Structured logs with pino. Pretty when a person is watching (stdout is a terminal), JSON
 * otherwise. Secrets are redacted wherever they appear in a log object.
 */
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

/** Paths pino blanks out: tokens, API keys and credentials never reach a log. */
export const REDACT_PATHS = [
  'token',
  '*.token',
  'data.token',
  'envelope.token',
  'apiKey',
  '*.apiKey',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers["idempotency-key"]',
  'headers["idempotency-key"]',
  'password',
  '*.password',
];

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  level: LogLevel;
  /** @defaultValue whether stdout is a terminal */
  pretty?: boolean;
  /** Component name added to every line. */
  name?: string;
}

/** Creates the process logger. */
export function createLogger(options: LoggerOptions): Logger {
  const pretty = options.pretty ?? process.stdout.isTTY === true;
  return pino({
    level: options.level,
    name: options.name ?? 'onceq',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    ...(pretty
      ? {
          transport: {
            target: 'pino-pretty',
            options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' },
          },
        }
      : {}),
  });
}
