/**
 * Reading Prometheus exposition text in tests.
 */

/** The value of the series `name` whose labels include `labels` (in any order); NaN if none. */
export function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = (match[2] ?? '').split(',');
    const has = Object.entries(labels).every(([k, v]) => present.includes(`${k}="${v}"`));
    if (has) return Number(match[3]);
  }
  return NaN;
}
