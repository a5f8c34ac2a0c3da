/**
 * A short chaos campaign against the real thing: the API and three workers as child processes,
 * a private redis-server, every fault kind at least twice in about a minute, then the checker.
 * Slow by nature (about two minutes with start-up and drain); nothing in it depends on timing
 * beyond generous bounds.
 */
import { expect } from 'chai';
import { rm } from 'node:fs/promises';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCampaign, type CampaignReport } from '../../tools/chaos/run.js';
import { formatReport } from '../../tools/chaos/report.js';
import { readHistory } from '../../tools/chaos/history.js';
import { FAULT_KINDS } from '../../tools/chaos/schedule.js';
import { TEST_DATABASE_URL } from '../support/env.js';

describe('chaos campaign (60 s, every fault kind)', function () {
  this.timeout(420_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'onceq-chaos-'));
  let report: CampaignReport | undefined;

  after(async () => {
    // Keep the evidence of a failed run; remove it otherwise.
    if (report?.valid) await rm(dir, { recursive: true, force: true });
    else process.stderr.write(`chaos campaign files kept in ${dir}\n`);
  });

  it('injects every fault at least twice and the checker finds the run valid', async () => {
    report = await runCampaign({
      seed: 20_261_128,
      durationMs: 60_000,
      workers: 3,
      rate: 15,
      faults: FAULT_KINDS,
      historyFile: path.join(dir, 'history.jsonl'),
      databaseUrl: TEST_DATABASE_URL,
      redisServer: process.env.TEST_REDIS_SERVER ?? 'redis-server',
      drainTimeoutMs: 120_000,
      keepSchema: 'invalid',
    });
    const text = formatReport(report);
    for (const kind of FAULT_KINDS) {
      expect(report.injected[kind], `${kind} injected\n${text}`).to.be.at.least(2);
    }
    expect(report.result.accepted, text).to.be.above(100);
    expect(report.result.replays.checked, text).to.be.above(0);
    expect(report.result.poison.accepted + report.result.poison.rawInjected, text).to.be.above(0);
    expect(report.result.lost, text).to.deep.equal([]);
    expect(report.result.duplicated, text).to.deep.equal([]);
    expect(report.result.unexpected, text).to.deep.equal([]);
    expect(report.result.replays.mismatched, text).to.deep.equal([]);
    expect(report.result.invariants.violations, text).to.deep.equal([]);
    expect(report.valid, text).to.equal(true);

    // The history on disk is what the checker read: every request with its answer.
    const history = await readHistory(report.historyFile);
    expect(history[0]!.type).to.equal('meta');
    const requests = history.filter((e) => e.type === 'request');
    expect(requests.length).to.equal(report.result.requests.total);
    expect(history.filter((e) => e.type === 'fault' && e.phase === 'heal')).to.have.length(
      Object.values(report.injected).reduce((a, b) => a + b, 0),
    );
  });
});
