/**
 * The deploy/ files (Prometheus rules, Grafana dashboard) and the README sections they point at,
 * for the tests that keep them in step with onceq's metrics and documentation.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

/** The repository's root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const ALERT_RULES = 'deploy/prometheus/alerts.yml';
export const ALERT_TESTS = 'deploy/prometheus/alerts.test.yml';
export const DASHBOARD = 'deploy/grafana/onceq.json';

/** A file of the repository, as text. */
export function readRepoFile(path: string): string {
  return readFileSync(new URL(path, `file://${ROOT}`), 'utf8');
}

/** A YAML file of the repository, parsed. */
export function readYaml(path: string): unknown {
  return parse(readRepoFile(path));
}

/** One alerting rule of alerts.yml. */
export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** The alerting rules of alerts.yml, every group's. */
export function alertRules(): AlertRule[] {
  const doc = readYaml(ALERT_RULES) as { groups: { rules: AlertRule[] }[] };
  return doc.groups.flatMap((g) => g.rules);
}

/** The GitHub anchors of the README's headings (`### Dead letters` → `dead-letters`). */
export function readmeAnchors(): Set<string> {
  const anchors = new Set<string>();
  let fenced = false;
  for (const line of readRepoFile('README.md').split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = !fenced && /^#{1,6} (.+)$/.exec(line);
    if (!heading) continue;
    anchors.add(
      heading[1]!
        .toLowerCase()
        .replace(/[^a-z0-9 _-]/g, '')
        .replace(/ /g, '-'),
    );
  }
  return anchors;
}

/** The command that installs promtool, named by the failure when it is missing. */
export const PROMTOOL_INSTALL = 'apt-get install -y prometheus';

/**
 * Runs promtool in the repository's root; rejects with the install command when it is missing,
 * and with its output when it fails.
 */
export function promtool(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('promtool', args, { cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') {
        reject(
          new Error(
            `promtool is not installed. Install Debian's prometheus package: ${PROMTOOL_INSTALL} ` +
              '(as root; `bash .ci/run --services-only` does it and keeps its server stopped)',
          ),
        );
      } else if (err) {
        reject(new Error(`promtool ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`));
      } else {
        resolve(`${stdout}${stderr}`);
      }
    });
  });
}
