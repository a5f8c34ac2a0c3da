/**
 * deploy/prometheus/alerts.yml: promtool accepts it and its unit tests pass (alerts.test.yml),
 * every alert is tested firing and not firing, says what to do, and names only metrics, labels
 * and label values that onceq's real registry exports; the README lists exactly these alerts.
 * promtool is required: without it these tests fail with the command that installs it.
 */
import { expect } from 'chai';
import {
  ALERT_RULES,
  ALERT_TESTS,
  alertRules,
  promtool,
  PROMTOOL_INSTALL,
  readmeAnchors,
  readRepoFile,
  readYaml,
} from '../support/deploy-files.js';
import { exportedMetrics, promqlProblems, readPromql } from '../support/promql.js';

interface RuleTest {
  alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[];
}

describe('deploy/prometheus alert rules', () => {
  const rules = alertRules();

  it('has the alerts the README suggests, each once', () => {
    const names = rules.map((r) => r.alert);
    expect(names).to.have.members([
      'OnceqDeadLetters',
      'OnceqRetriesHigh',
      'OnceqBacklogGrowing',
      'OnceqOutboxLag',
      'OnceqReconcilerNotRunning',
      'OnceqEndToEndLatencyHigh',
      'OnceqMetricsCollectorFailing',
    ]);
    expect(new Set(names).size).to.equal(names.length);
  });

  it('promtool check rules accepts alerts.yml', async () => {
    const out = await promtool('check', 'rules', ALERT_RULES);
    expect(out).to.include(`SUCCESS: ${rules.length} rules found`);
  });

  it('promtool test rules passes alerts.test.yml', async () => {
    const out = await promtool('test', 'rules', ALERT_TESTS);
    expect(out).to.include('SUCCESS');
  });

  it('tests every alert both firing and not firing', () => {
    const doc = readYaml(ALERT_TESTS) as { rule_files: string[]; tests: RuleTest[] };
    expect(doc.rule_files).to.deep.equal(['alerts.yml']);
    const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const { alert } of rules) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${alert} is never expected to fire`,
      ).to.equal(true);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${alert} is never expected to stay quiet`,
      ).to.equal(true);
    }
    const unknown = cases.map((c) => c.alertname).filter((n) => !rules.some((r) => r.alert === n));
    expect(unknown, 'tests of alerts that do not exist').to.deep.equal([]);
  });

  it('gives every alert a for, a severity, a summary, what to do and a README section', () => {
    const anchors = readmeAnchors();
    for (const rule of rules) {
      expect(rule.for, `${rule.alert}: for`).to.match(/^\d+[smh]$/);
      expect(rule.labels?.severity, `${rule.alert}: severity`).to.be.oneOf(['warning', 'critical']);
      expect(rule.annotations?.summary, `${rule.alert}: summary`)
        .to.be.a('string')
        .with.length.above(0);
      expect(rule.annotations?.description, `${rule.alert}: description`)
        .to.be.a('string')
        .with.length.above(80);
      const runbook = /^README\.md#(.+)$/.exec(rule.annotations?.runbook ?? '');
      expect(runbook, `${rule.alert}: runbook README.md#section`).to.not.equal(null);
      expect(anchors, `${rule.alert}: README has no section #${runbook![1]}`).to.include(
        runbook![1],
      );
    }
  });

  it('names only metrics, labels and label values onceq exports', () => {
    const exported = exportedMetrics();
    const problems = rules.flatMap((r) =>
      promqlProblems(r.expr, exported).map((p) => `${r.alert}: ${p}`),
    );
    expect(problems).to.deep.equal([]);
    // The check read the selectors it was meant to: the dead-letter gauge and a histogram bucket.
    const names = rules.flatMap((r) => readPromql(r.expr).selectors.map((s) => s.metric));
    expect(names).to.include.members(['onceq_dead_letters', 'onceq_job_end_to_end_seconds_bucket']);
  });

  it('would catch a renamed metric, a missing label, a value onceq never sets', () => {
    const exported = exportedMetrics();
    expect(promqlProblems('rate(onceq_job_total[5m]) > 0', exported)).to.deep.equal([
      'onceq_job_total is not a metric onceq exports',
    ]);
    expect(
      promqlProblems('sum by (job) (onceq_dead_letters{queue="a", status="x"})', exported),
    ).to.deep.equal(['onceq_dead_letters has no label status']);
    expect(
      promqlProblems(
        'sum by (le, shard) (rate(onceq_jobs_total{outcome=~"retry|dead"}[5m]))',
        exported,
      ),
    ).to.deep.equal([
      'onceq_jobs_total: outcome="retry" is never set (onceq sets applied, duplicate, conflict, rejected, retried, dead)',
      "grouping label le is on none of the expression's metrics",
      "grouping label shard is on none of the expression's metrics",
    ]);
    expect(promqlProblems('vector(1)', exported)).to.deep.equal(['names no metric']);
  });

  it('is what the README lists under Alerts and dashboard', () => {
    const readme = readRepoFile('README.md');
    const section = readme.slice(readme.indexOf('### Alerts and dashboard'));
    const listed = [...section.slice(0, section.indexOf('\n### ', 5)).matchAll(/`(Onceq\w+)`/g)];
    expect(new Set(listed.map((m) => m[1]))).to.deep.equal(new Set(rules.map((r) => r.alert)));
    expect(section).to.include(ALERT_RULES).and.include(PROMTOOL_INSTALL);
  });
});
