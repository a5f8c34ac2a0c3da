/** The campaign's report as text: the figures first, then every anomaly with where to look. */
import type { CampaignReport } from './run.js';

const MAX_LISTED = 20;

/** A human-readable report (what `onceq chaos` prints). */
export function formatReport(report: CampaignReport): string {
  const r = report.result;
  const out: string[] = [];
  const line = (s = '') => out.push(s);
  const list = <T>(title: string, items: T[], show: (item: T) => string) => {
    line(`${title}: ${items.length}`);
    for (const item of items.slice(0, MAX_LISTED)) line(`  - ${show(item)}`);
    if (items.length > MAX_LISTED) line(`  … and ${items.length - MAX_LISTED} more`);
  };
  const kinds = (counts: Record<string, number>) =>
    Object.entries(counts)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ') || 'none';

  const mode =
    report.backend === 'postgres'
      ? 'PostgreSQL-only mode'
      : report.redisCluster
        ? 'Redis mode on a Redis Cluster'
        : 'Redis mode';
  line(`chaos campaign seed ${report.seed}, ${mode}: ${report.valid ? 'VALID' : 'INVALID'}`);
  line(
    `  workload ${Math.round(report.workloadMs / 1_000)} s, drain ${Math.round(report.drainMs / 1_000)} s` +
      `${report.drained ? '' : ' (bound reached before everything settled)'}`,
  );
  line(
    `  requests ${r.requests.total} by status: ${kinds(r.requests.byStatus)}; ` +
      `replays sent on purpose ${report.workload.replays}; ` +
      `503s waited out (Retry-After, then sent again) ${report.workload.waited503}`,
  );
  line(
    `  messages accepted ${r.accepted}, applied ${r.applied}; ` +
      `duplicate jobs enqueued ${report.workload.duplicates}, raw poison jobs ${r.poison.rawInjected}`,
  );
  const w = report.deliveries;
  line(
    `  deliveries ${w.completed + w.failed} (workers' logs): completed ${w.completed} ` +
      `(${kinds(w.outcomes)}), failed ${w.failed}`,
  );
  if (r.deliveries) {
    const d = r.deliveries;
    line(
      `  jobs left in ${report.backend === 'redis' ? 'Redis' : "BullMQ's tables"} ${d.jobs}: ` +
        `${d.deliveries} deliveries started, stalled ${d.stalled}; ` +
        `completed as applied ${d.applied}, as duplicate ${d.duplicates}`,
    );
  }
  line(`  faults injected: ${kinds(report.injected)} (planned: ${kinds(report.planned)})`);
  if (report.failovers.length > 0) {
    const f = report.failovers;
    const lossy = f.filter((x) => x.lostBytes > 0);
    line(
      `  failovers ${f.length}: ${lossy.length} lost acknowledged writes, ` +
        `${lossy.reduce((a, x) => a + x.lostBytes, 0)} bytes of replication stream in all ` +
        `(per failover: ${f.map((x) => x.lostBytes).join(', ')}); promotion ` +
        `${Math.min(...f.map((x) => x.failoverMs))}-${Math.max(...f.map((x) => x.failoverMs))} ms after the kill`,
    );
  }
  line(`  PostgreSQL backends terminated: ${report.backendsTerminated}`);
  line(`  unplanned process exits: ${kinds(report.crashes)}`);
  line(
    `  dead letters by reason: ${r.deadLetters ? kinds(r.deadLetters) : 'no dead_letters table'}; ` +
      `failed jobs without dead letter: ${kinds(r.failed)}`,
  );
  line(
    `  poison: accepted ${r.poison.accepted}, dead or failed ${r.poison.deadOrFailed}, ` +
      `applied ${r.poison.applied.length}; raw ${r.poison.rawInjected}, dead or failed ` +
      `${r.poison.rawDeadOrFailed}, vanished ${r.poison.rawVanished}` +
      `${report.durableStores ? ' (stores durable: none may vanish)' : ' (with Redis)'}`,
  );
  line(
    `  indeterminate requests ${r.indeterminate.requests}; accepted without a 2xx ` +
      `${r.indeterminate.acceptedWithoutAnswer} (applied ${r.indeterminate.appliedWithoutAnswer})`,
  );
  line(
    `  ledger: ${r.invariants.accounts} accounts, ${r.invariants.transfers} transfers, ` +
      `sum of balances ${r.invariants.sumBalances}, sum of opening balances ${r.invariants.sumOpening}`,
  );
  line();
  list(
    'lost',
    r.lost,
    (l) =>
      `${l.messageId} ${l.name} token ${l.token} (history line ${l.line})${l.stillQueued ? ', a job is still queued' : ''}${l.failedWithoutDeadLetter ? ', failed in BullMQ without a dead letter' : ''}`,
  );
  list('duplicated', r.duplicated, (a) => `${a.messageId}: ${a.detail}`);
  list('unexpected', r.unexpected, (a) => `${a.messageId ?? '-'}: ${a.detail}`);
  list(
    'acceptance anomalies',
    r.acceptance,
    (a) => `${a.messageId}: ${a.detail} (lines ${a.lines?.join(', ')})`,
  );
  list('poison applied', r.poison.applied, (a) => `${a.messageId}: ${a.detail}`);
  if (r.tokens) {
    line(
      `tokens checked ${r.tokens.checked}: ${kinds(r.tokens.byState)}; of applied messages: ` +
        `${kinds(r.tokens.appliedByState)}`,
    );
    list(
      'token anomalies',
      r.tokens.anomalies,
      (a) => `${a.messageId} token ${a.token}: ${a.detail}`,
    );
  }
  list('vanished jobs', r.vanished, (a) => `${a.messageId}: ${a.detail}`);
  line(`replays checked ${r.replays.checked}`);
  list(
    'replay mismatches',
    r.replays.mismatched,
    (a) => `token ${a.token}: ${a.detail} (lines ${a.lines?.join(', ')})`,
  );
  line(`invariants: ${r.invariants.ok ? 'hold' : 'VIOLATED'}`);
  for (const v of r.invariants.violations.slice(0, MAX_LISTED)) line(`  - ${v}`);
  if (r.invariants.violations.length > MAX_LISTED)
    line(`  … and ${r.invariants.violations.length - MAX_LISTED} more`);
  if (r.warnings.length) list('warnings', r.warnings, (w) => w);
  line();
  line(`history ${report.historyFile}; process output ${report.logFile}`);
  if (report.schemaKept) {
    line(
      report.backend === 'redis'
        ? `schema ${report.schema} kept for inspection`
        : `schemas ${report.schema} (onceq) and ${report.prefix} (BullMQ) kept for inspection`,
    );
  }
  return out.join('\n');
}
