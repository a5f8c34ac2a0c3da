/**
 * The rules on onceq's timing settings that the CLI's environment and the library's options
 * share: each setting's smallest value, and the combinations that are each valid but together
 * break a guarantee. The callers name the settings their own way (`ONCEQ_TOKEN_TTL` for the CLI,
 * `tokenTtlMs` for the library); the rules and their explanations live only here.
 */
import { formatDuration } from './duration.js';

/** The settings the combination rules look at, in milliseconds. */
export interface TimingSettings {
  readonly lockDurationMs: number;
  readonly tokenTtlMs: number;
  readonly dedupeWindowMs: number;
  readonly reconcileGraceMs: number;
  readonly statementTimeoutMs: number;
}

/** The smallest accepted value of each duration setting, in milliseconds. */
export const MIN_DURATION_MS = Object.freeze({
  lockDurationMs: 1_000,
  tokenTtlMs: 1_000,
  dedupeWindowMs: 60_000,
  reconcileIntervalMs: 100,
  reconcileGraceMs: 100,
  pruneIntervalMs: 100,
  outboxIntervalMs: 100,
  statementTimeoutMs: 0,
  shutdownTimeoutMs: 0,
});

/** How a caller names a setting in its messages, and whether the value is one it was given. */
export interface SettingNames {
  /** The setting as the user spells it (`ONCEQ_TOKEN_TTL`, `tokenTtlMs`). */
  name(setting: keyof TimingSettings): string;
  /** False when the value is the default: the message then says so. */
  isSet(setting: keyof TimingSettings): boolean;
  /** True for a setting already reported as bad: pairs with it are not checked. */
  isBad?(setting: keyof TimingSettings): boolean;
}

/**
 * Settings that are each valid but together break a guarantee, one line each, naming the
 * settings and their values.
 */
export function combinationProblems(settings: TimingSettings, names: SettingNames): string[] {
  const problems: string[] = [];
  const show = (setting: keyof TimingSettings) =>
    `${names.name(setting)}=${formatDuration(settings[setting])}` +
    (names.isSet(setting) ? '' : ' (the default)');
  const check = (pair: (keyof TimingSettings)[], broken: boolean, line: () => string) => {
    if (broken && !pair.some((s) => names.isBad?.(s))) problems.push(line());
  };
  check(
    ['tokenTtlMs', 'dedupeWindowMs'],
    settings.tokenTtlMs > settings.dedupeWindowMs,
    () =>
      `${show('tokenTtlMs')} is longer than ${show('dedupeWindowMs')}: a retry of an ` +
      'accepted request could outlive its acceptance record, and after a Redis loss be accepted ' +
      'as a new message; keep the token ttl at most the dedupe window',
  );
  check(
    ['reconcileGraceMs', 'dedupeWindowMs'],
    settings.reconcileGraceMs >= settings.dedupeWindowMs,
    () =>
      `${show('reconcileGraceMs')} is not shorter than ${show('dedupeWindowMs')}: a message ` +
      'whose job Redis lost would expire before the reconciler re-enqueued it; keep the grace ' +
      'well below the dedupe window',
  );
  check(
    ['statementTimeoutMs', 'lockDurationMs'],
    settings.statementTimeoutMs !== 0 && settings.statementTimeoutMs < settings.lockDurationMs,
    () =>
      `${show('statementTimeoutMs')} is shorter than ${show('lockDurationMs')}: a delivery ` +
      "waiting on a paused worker's uncommitted inbox row would time out, spending an attempt, " +
      'before PostgreSQL ends that transaction; set it to at least the lock duration, or 0 to ' +
      'turn it off',
  );
  return problems;
}
