/** Bounding a promise in time without leaving a timer behind. */
import { ErrorCode, OnceqError } from './errors.js';

/** The rejection of {@link withTimeout} when the time ran out; code `timeout`. */
export class TimeoutError extends OnceqError {
  constructor(message: string) {
    super(ErrorCode.Timeout, message);
  }
}

/**
 * Resolves as `promise` does, or rejects first with a {@link TimeoutError} ("no answer in `ms`
 * ms"); clears its timer.
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TimeoutError(`no answer in ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
