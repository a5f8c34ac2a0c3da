/**
 * Checking PromQL written for onceq (deploy/prometheus/alerts.yml, deploy/grafana/onceq.json)
 * against the metrics onceq really exports: the catalogue is read from a registry built by
 * `createMetrics`, the code every onceq process uses, so renaming a metric or a label in
 * src/metrics fails the tests of the files that still name the old one.
 *
 * The reader is a tokenizer, not a full PromQL parser: it finds every selector (a metric name,
 * its label matchers) and every label list of `by`, `without`, `on`, `ignoring`, `group_left`
 * and `group_right`, which is what a name check needs. Grafana's variables (`$queue`,
 * `${datasource}`, `$__rate_interval`) are read as opaque values.
 */
import { createMetrics, CLAIM_RESULTS, JOB_OUTCOMES } from '../../src/metrics/metrics.js';
import { QUEUE_STATES } from '../../src/metrics/state-collectors.js';
import { DEAD_LETTER_REASONS } from '../../src/core/dead-letter.js';

/** One series name a scrape of onceq shows, e.g. `onceq_job_end_to_end_seconds_bucket`. */
export interface ExportedMetric {
  /** The metric as registered (a histogram's base name). */
  readonly family: string;
  readonly type: string;
  /** Its labels, with onceq's `component`, Prometheus's target labels and a bucket's `le`. */
  readonly labels: ReadonlySet<string>;
}

/** Labels Prometheus adds to every scraped series (its target labels). */
export const TARGET_LABELS = ['instance', 'job'] as const;

/**
 * The values a label can take where onceq fixes them, per metric family: a matcher on another
 * value (`outcome="retry"`) would select nothing and an alert on it would never fire.
 */
const LABEL_VALUES: Record<string, Record<string, readonly string[]>> = {
  onceq_jobs_total: { outcome: JOB_OUTCOMES },
  onceq_job_end_to_end_seconds: { outcome: JOB_OUTCOMES },
  onceq_claims_total: { result: CLAIM_RESULTS },
  onceq_queue_jobs: { state: QUEUE_STATES },
  onceq_dead_letters: { reason: DEAD_LETTER_REASONS },
  onceq_reconciler_messages_total: { action: ['reenqueued', 'dead_lettered'] },
  onceq_auth_failures_total: { result: ['unauthorized', 'refused'] },
};
const COMPONENTS = ['api', 'worker', 'start'];

/** Every series name a scrape of an onceq process can show, from a real registry. */
export function exportedMetrics(): ReadonlyMap<string, ExportedMetric> {
  const metrics = createMetrics({ labels: { component: 'worker' } });
  const out = new Map<string, ExportedMetric>();
  for (const metric of metrics.registry.getMetricsAsArray()) {
    // prom-client keeps these on the metric object; its typings do not declare them.
    const { name, type, labelNames } = metric as unknown as {
      name: string;
      type: string;
      labelNames: readonly string[];
    };
    const labels = new Set([...labelNames, 'component', ...TARGET_LABELS]);
    const add = (series: string, extra: readonly string[] = []) =>
      out.set(series, { family: name, type, labels: new Set([...labels, ...extra]) });
    if (type === 'histogram') {
      add(`${name}_bucket`, ['le']);
      add(`${name}_sum`);
      add(`${name}_count`);
    } else if (type === 'summary') {
      add(name, ['quantile']);
      add(`${name}_sum`);
      add(`${name}_count`);
    } else {
      add(name);
    }
  }
  return out;
}

/** A label matcher of a selector: `queue=~"$queue"`. */
export interface Matcher {
  readonly label: string;
  readonly op: '=' | '!=' | '=~' | '!~';
  readonly value: string;
}

/** A vector selector: `onceq_jobs_total{outcome="retried"}`. */
export interface Selector {
  readonly metric: string;
  readonly matchers: readonly Matcher[];
}

/** What {@link readPromql} finds in an expression. */
export interface PromqlReading {
  readonly selectors: readonly Selector[];
  /** Labels named by `by`, `without`, `on`, `ignoring`, `group_left` and `group_right`. */
  readonly groupingLabels: readonly string[];
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan']);
const GROUPING = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
/** Aggregation operators: `sum by (queue) (x)` puts its clause between the name and the `(`. */
const AGGREGATIONS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'group',
  'stddev',
  'stdvar',
  'count',
  'count_values',
  'bottomk',
  'topk',
  'quantile',
  'limitk',
  'limit_ratio',
]);

type Token =
  | { kind: 'ident'; text: string }
  | { kind: 'string'; text: string }
  | { kind: 'punct'; text: string }
  | { kind: 'other'; text: string };

function tokenize(expr: string): Token[] {
  const tokens: Token[] = [];
  const patterns: [Token['kind'] | 'skip', RegExp][] = [
    ['skip', /^\s+/],
    ['skip', /^#[^\n]*/],
    ['string', /^"(?:[^"\\]|\\.)*"/],
    ['string', /^'(?:[^'\\]|\\.)*'/],
    ['string', /^`[^`]*`/],
    // Grafana variables: $name, ${name}, ${name:format}, [[name]].
    ['other', /^\$\{[^}]*\}|^\$\w+|^\[\[\w+\]\]/],
    // Numbers and durations: 0.99, 1e3, 5m, 1h30m, 0x1f.
    ['other', /^(?:0x[0-9a-f]+|[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?(?:[smhdwy]|ms)*)/i],
    ['ident', /^[a-zA-Z_:][a-zA-Z0-9_:]*/],
    ['punct', /^(?:=~|!~|!=|==|<=|>=|[{}()[\],=<>+\-*/%^@:])/],
  ];
  let rest = expr;
  outer: while (rest.length > 0) {
    for (const [kind, re] of patterns) {
      const m = re.exec(rest);
      if (!m) continue;
      if (kind !== 'skip') tokens.push({ kind, text: m[0] } as Token);
      rest = rest.slice(m[0].length);
      continue outer;
    }
    throw new Error(`cannot read PromQL at ${JSON.stringify(rest.slice(0, 30))} in: ${expr}`);
  }
  return tokens;
}

function unquote(text: string): string {
  if (text.startsWith('`')) return text.slice(1, -1);
  return text.slice(1, -1).replace(/\\(.)/g, '$1');
}

/** Finds the selectors and grouping labels of a PromQL expression. */
export function readPromql(expr: string): PromqlReading {
  const tokens = tokenize(expr);
  const selectors: Selector[] = [];
  const groupingLabels: string[] = [];
  const at = (i: number) => tokens[i];
  const isPunct = (i: number, text: string) => at(i)?.kind === 'punct' && at(i)?.text === text;

  // Reads `{label op "value", ...}` from index i (at the `{`); returns the index after `}`.
  const readMatchers = (i: number, matchers: Matcher[]): number => {
    i++;
    while (!isPunct(i, '}')) {
      const label = at(i);
      const op = at(i + 1);
      const value = at(i + 2);
      if (label?.kind !== 'ident' || op?.kind !== 'punct' || value?.kind !== 'string') {
        throw new Error(`cannot read the label matchers at token ${i} of: ${expr}`);
      }
      if (!['=', '!=', '=~', '!~'].includes(op.text)) {
        throw new Error(`unknown matcher ${op.text} in: ${expr}`);
      }
      matchers.push({
        label: label.text,
        op: op.text as Matcher['op'],
        value: unquote(value.text),
      });
      i += 3;
      if (isPunct(i, ',')) i++;
    }
    return i + 1;
  };

  let i = 0;
  while (i < tokens.length) {
    const token = tokens[i]!;
    if (token.kind === 'punct' && token.text === '[') {
      // A range or subquery: durations and Grafana's $__rate_interval, no names.
      while (i < tokens.length && !isPunct(i, ']')) i++;
      i++;
      continue;
    }
    if (token.kind === 'punct' && token.text === '{') {
      const matchers: Matcher[] = [];
      i = readMatchers(i, matchers);
      const name = matchers.find((m) => m.label === '__name__' && m.op === '=');
      selectors.push({ metric: name?.value ?? '', matchers });
      continue;
    }
    if (token.kind !== 'ident') {
      i++;
      continue;
    }
    const word = token.text;
    if (GROUPING.has(word) && isPunct(i + 1, '(')) {
      i += 2;
      while (i < tokens.length && !isPunct(i, ')')) {
        if (at(i)?.kind === 'ident') groupingLabels.push(at(i)!.text);
        i++;
      }
      i++;
      continue;
    }
    if (GROUPING.has(word) || KEYWORDS.has(word.toLowerCase())) {
      i++;
      continue;
    }
    if (isPunct(i + 1, '(') || AGGREGATIONS.has(word)) {
      // A function or an aggregation: sum(...), rate(...), histogram_quantile(...).
      i++;
      continue;
    }
    const matchers: Matcher[] = [];
    i = isPunct(i + 1, '{') ? readMatchers(i + 1, matchers) : i + 1;
    selectors.push({ metric: word, matchers });
  }
  return { selectors, groupingLabels };
}

/**
 * What is wrong with an expression's names, as sentences (empty when nothing is): metrics onceq
 * does not export, labels they do not have, label values onceq never sets, and grouping labels
 * none of the expression's metrics has. An expression with no onceq metric at all is wrong too.
 */
export function promqlProblems(
  expr: string,
  exported: ReadonlyMap<string, ExportedMetric> = exportedMetrics(),
): string[] {
  const problems: string[] = [];
  const { selectors, groupingLabels } = readPromql(expr);
  if (selectors.length === 0) problems.push('names no metric');
  const labelsInScope = new Set<string>();
  for (const { metric, matchers } of selectors) {
    const known = exported.get(metric);
    if (!known) {
      problems.push(`${metric || '{…}'} is not a metric onceq exports`);
      continue;
    }
    for (const label of known.labels) labelsInScope.add(label);
    for (const { label, op, value } of matchers) {
      if (label === '__name__') continue;
      if (!known.labels.has(label)) {
        problems.push(`${metric} has no label ${label}`);
        continue;
      }
      const allowed = label === 'component' ? COMPONENTS : LABEL_VALUES[known.family]?.[label];
      if (!allowed || value.includes('$')) continue;
      // A regex of plain alternatives (waiting|prioritized) is checked word by word.
      const values = op === '=' || op === '!=' ? [value] : plainAlternatives(value);
      for (const v of values) {
        if (!allowed.includes(v)) {
          problems.push(
            `${metric}: ${label}="${v}" is never set (onceq sets ${allowed.join(', ')})`,
          );
        }
      }
    }
  }
  for (const label of groupingLabels) {
    if (!labelsInScope.has(label)) {
      problems.push(`grouping label ${label} is on none of the expression's metrics`);
    }
  }
  return problems;
}

function plainAlternatives(regex: string): string[] {
  return /^[a-z_]+(?:\|[a-z_]+)*$/.test(regex) ? regex.split('|') : [];
}
