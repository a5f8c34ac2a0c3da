/**
 * Structured logs with pino. Pretty when a person is watching (stdout is a terminal) and
 * pino-pretty is installed, JSON otherwise. Secrets are redacted wherever they appear in a log
 * object. A line written while a span is active carries its `trace_id` and `span_id`.
 */
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config.js';
import { traceLogFields } from './telemetry/log-fields.js';

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
  /**
   * Pretty lines instead of JSON; ignored when pino-pretty is not installed.
   * @defaultValue whether stdout is a terminal
   */
  pretty?: boolean;
  /** Component name added to every line. */
  name?: string;
  /** Where lines go (tests capture them). @defaultValue stdout */
  destination?: DestinationStream;
}

/**
 * Tokens and API keys by their shape, wherever they are in a line: in a message, an error's
 * stack, a URL. The path redaction above only covers the fields it names; this is the net
 * under it. Both formats are fixed (core/token.ts, core/api-key.ts), so the match is exact.
 */
const SECRET_PATTERN = /oqt_[A-Za-z0-9_-]{32}|oqk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/g;

/** Replaces every token and API key in `text` with a marker that keeps its kind. */
export function scrubSecrets(text: string): string {
  return text.replace(SECRET_PATTERN, (s) => `${s.slice(0, 4)}[redacted]`);
}

/** Creates the process logger. */
export function createLogger(options: LoggerOptions): Logger {
  const pretty = (options.pretty ?? process.stdout.isTTY === true) && prettyInstalled();
  const settings = {
    level: options.level,
    name: options.name ?? 'onceq',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    hooks: { streamWrite: scrubSecrets },
    mixin: traceLogFields,
  };
  if (options.destination) return pino(settings, options.destination);
  return pino({
    ...settings,
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

/**
 * Whether pino-pretty can be loaded. It is a development dependency: a production install (the
 * Docker image, `npm ci --omit=dev`) leaves it out, and a terminal there (`docker run -it`) must
 * get JSON lines, not a crash in pino's transport thread.
 */
function prettyInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}
