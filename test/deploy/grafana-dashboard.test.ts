/**
 * deploy/grafana/onceq.json: a dashboard Grafana imports (ids, titles, a layout, a Prometheus
 * `${datasource}` variable every panel and query uses, a `queue` variable), whose expressions
 * name only metrics, labels and label values onceq's real registry exports, covering the figures
 * an on-call engineer looks for.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { stringify } from 'yaml';
import { DASHBOARD, promtool, readRepoFile } from '../support/deploy-files.js';
import { exportedMetrics, promqlProblems, readPromql } from '../support/promql.js';

interface Target {
  refId?: string;
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id?: number;
  type?: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  gridPos?: { h: number; w: number; x: number; y: number };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query?: string | { query?: string };
  definition?: string;
  datasource?: { type?: string; uid?: string };
  multi?: boolean;
  includeAll?: boolean;
}
interface Dashboard {
  uid?: string;
  title?: string;
  schemaVersion?: number;
  templating?: { list?: Variable[] };
  panels?: Panel[];
}

const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };

describe('deploy/grafana dashboard', () => {
  const dashboard = JSON.parse(readRepoFile(DASHBOARD)) as Dashboard;
  // Rows may hold their panels (collapsed) or precede them (expanded): check both.
  const all = (dashboard.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
  const graphs = all.filter((p) => p.type !== 'row');
  const exprs = graphs.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p, expr: t.expr })));
  const variables = dashboard.templating?.list ?? [];

  it('is a dashboard Grafana can import: uid, title, a recent schema, unique panel ids', () => {
    expect(dashboard.uid).to.equal('onceq');
    expect(dashboard.title).to.be.a('string').with.length.above(0);
    // 39 is Grafana 10.4 and 11.0; later versions migrate it on load.
    expect(dashboard.schemaVersion).to.be.at.least(39);
    const ids = all.map((p) => p.id);
    expect(
      ids.every((id) => Number.isInteger(id) && id! > 0),
      'integer ids',
    ).to.equal(true);
    expect(new Set(ids).size, 'unique ids').to.equal(ids.length);
    for (const p of all) {
      expect(p.title, `panel ${p.id}: title`).to.be.a('string').with.length.above(0);
      expect(p.type, `panel ${p.id}: type`).to.be.oneOf(['row', 'timeseries', 'stat']);
      const g = p.gridPos;
      expect(g, `panel ${p.id}: gridPos`).to.not.equal(undefined);
      expect(
        g!.x >= 0 && g!.w > 0 && g!.x + g!.w <= 24,
        `panel ${p.id}: within 24 columns`,
      ).to.equal(true);
    }
  });

  it('lays out no two panels on top of each other', () => {
    const boxes = all.map((p) => ({ id: p.id, ...p.gridPos! }));
    for (const a of boxes) {
      for (const b of boxes) {
        if (a.id! >= b.id!) continue;
        const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
        expect(overlap, `panels ${a.id} and ${b.id} overlap`).to.equal(false);
      }
    }
  });

  it('has a Prometheus datasource variable that every panel and query uses', () => {
    const ds = variables.find((v) => v.name === 'datasource');
    expect(ds?.type).to.equal('datasource');
    expect(ds?.query).to.equal('prometheus');
    for (const p of graphs) {
      expect(p.datasource, `panel ${p.id} ${p.title}`).to.deep.equal(DATASOURCE);
      expect(p.targets, `panel ${p.id} ${p.title}: targets`).to.be.an('array').with.length.above(0);
      const refIds = p.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, `panel ${p.id}: unique refIds`).to.equal(refIds.length);
      for (const t of p.targets!) {
        expect(t.expr, `panel ${p.id} ${p.title}: expr`).to.be.a('string').with.length.above(0);
        if (t.datasource) expect(t.datasource, `panel ${p.id} target`).to.deep.equal(DATASOURCE);
      }
    }
  });

  it('has a multi-value queue variable of the work queues, used by the per-queue panels', () => {
    const queue = variables.find((v) => v.name === 'queue');
    expect(queue?.type).to.equal('query');
    expect(queue?.datasource).to.deep.equal(DATASOURCE);
    expect(queue?.multi && queue.includeAll, 'multi-value with All').to.equal(true);
    const query = typeof queue?.query === 'string' ? queue.query : queue?.query?.query;
    expect(queue?.definition).to.equal(query);
    const m = /^label_values\((.+),\s*(\w+)\)$/.exec(query ?? '');
    expect(m, `label_values(selector, label): ${query}`).to.not.equal(null);
    expect(m![2]).to.equal('queue');
    expect(promqlProblems(m![1]!)).to.deep.equal([]);
    const [selector] = readPromql(m![1]!).selectors;
    expect(selector?.matchers, 'dead-letter queues left out').to.deep.include({
      label: 'queue',
      op: '!~',
      value: '.+[.]dlq',
    });
    // Every expression on a metric with a queue label filters it by the variable.
    const exported = exportedMetrics();
    for (const { panel, expr } of exprs) {
      for (const s of readPromql(expr!).selectors) {
        if (!exported.get(s.metric)?.labels.has('queue')) continue;
        expect(s.matchers, `${panel.title}: ${s.metric} by $queue`).to.deep.include({
          label: 'queue',
          op: '=~',
          value: '$queue',
        });
      }
    }
  });

  it('names only metrics, labels and label values onceq exports', () => {
    const exported = exportedMetrics();
    const problems = exprs.flatMap(({ panel, expr }) =>
      promqlProblems(expr!, exported).map((p) => `${panel.title}: ${p}`),
    );
    expect(problems).to.deep.equal([]);
  });

  it('has expressions Prometheus parses, its variables filled in (promtool check rules)', async () => {
    // Grafana fills these in before Prometheus sees the query.
    const filled = exprs.map(({ expr }) =>
      expr!
        .replaceAll('$queue', 'ledger|mail')
        .replaceAll('$__rate_interval', '1m')
        .replaceAll('$__range', '6h'),
    );
    const rules = filled.map((expr, i) => ({ record: `onceq_dashboard:expr_${i}`, expr }));
    const dir = mkdtempSync(path.join(tmpdir(), 'onceq-dashboard-'));
    try {
      const file = path.join(dir, 'dashboard-exprs.yml');
      writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
      const out = await promtool('check', 'rules', file);
      expect(out).to.include(`SUCCESS: ${rules.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('shows throughput, duplicates, latency, dead letters, queues, outbox, reconciler, claims', () => {
    const uses = (metric: string, pattern?: RegExp) =>
      exprs.some(
        ({ expr }) =>
          readPromql(expr!).selectors.some((s) => s.metric === metric) &&
          (!pattern || pattern.test(expr!)),
      );
    const wanted: [string, string, RegExp?][] = [
      ['throughput by outcome', 'onceq_jobs_total', /by \(outcome\)/],
      ['duplicates absorbed', 'onceq_jobs_total', /outcome="duplicate"/],
      ['handler latency quantiles', 'onceq_handler_duration_seconds_bucket', /histogram_quantile/],
      ['end-to-end quantiles', 'onceq_job_end_to_end_seconds_bucket', /histogram_quantile/],
      ['dead letters by reason', 'onceq_dead_letters', /reason/],
      ['queue depths', 'onceq_queue_jobs', /state/],
      ['outbox lag', 'onceq_outbox_lag_seconds'],
      ['outbox depth', 'onceq_outbox_messages'],
      ['reconciler lag', 'onceq_reconciler_lag_seconds'],
      ['reconciler last pass', 'onceq_reconciler_last_pass_timestamp_seconds'],
      ['claims busy', 'onceq_claims_total', /result="busy"/],
    ];
    const missing = wanted.filter(([, metric, pattern]) => !uses(metric, pattern));
    expect(missing.map(([what]) => what)).to.deep.equal([]);
  });

  it('is what the README points at', () => {
    expect(readRepoFile('README.md')).to.include(DASHBOARD);
  });
});
