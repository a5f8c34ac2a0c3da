/**
 * Bull Board in a real browser: Debian's Chromium, headless, driven by Playwright
 * (`playwright-core`, which never downloads a browser: it runs the system's), against a running
 * `onceq api` from the compiled executable. The dead letter on the board is one the product made:
 * a `onceq worker` child runs a job whose handler fails, with one attempt allowed, and
 * dead-letters it. The browser signs in as a person does, answering the board's Basic challenge
 * with the admin key as password (Playwright's `httpCredentials` answers the prompt).
 *
 * The test saves a screenshot of the board; with `UPDATE_SCREENSHOTS=1` it writes the one the
 * README shows ({@link README_SCREENSHOT}), otherwise a file in the temporary directory, so that a
 * test run leaves the working tree as it was.
 *
 * Chromium missing is a failure, not a skip: the message names the command that installs it.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { createDb, type Db } from '../../src/db/create-db.js';
import { closeRedis } from '../../src/redis/connection.js';
import { deletePrefix, testRedis, TEST_DATABASE_URL, uniqueName } from '../support/env.js';
import { ensureBuilt, ROOT } from '../support/build.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { waitFor } from '../support/ledger.js';

/** The browser: Debian's `chromium` package, or another Chromium named by the variable. */
const CHROMIUM = process.env.ONCEQ_TEST_CHROMIUM ?? '/usr/bin/chromium';
const INSTALL_CHROMIUM = 'apt-get install -y chromium';
/** The screenshot the README shows (Operations, "Dashboards and logs"). */
const README_SCREENSHOT = path.join(ROOT, 'docs', 'images', 'bull-board.png');

/**
 * A user's jobs module as `ONCEQ_JOBS` loads it: plain JavaScript, no import. The charge always
 * fails, as a payment gateway that is down would make it.
 */
const PAYMENTS_MODULE = `
export const charge = {
  name: 'card.charge',
  queue: 'payments',
  schema: {
    type: 'object',
    properties: { card: { type: 'string' }, amount: { type: 'integer' } },
    required: ['card', 'amount'],
  },
  async handle(ctx) {
    throw new Error('card ' + ctx.data.card + ' declined: the payment gateway is down');
  },
};
`;

const QUEUES = ['ledger', 'ledger.dlq', 'payments', 'payments.dlq'];

describe('http: Bull Board in headless Chromium against onceq api', function () {
  this.timeout(30_000);
  const schema = uniqueName('board_browser');
  const prefix = uniqueName('board_browser');
  const children: WorkerChild[] = [];
  const contexts: BrowserContext[] = [];
  let dir: string | undefined;
  let redis: Redis | undefined;
  let db: Db | undefined;
  let browser: Browser | undefined;
  let address: string;
  let adminKey: string;
  let shopKey: string;
  let dead: { jobId: string; messageId: string };

  function spawn(args: string[], env: Record<string, string> = {}): WorkerChild {
    const child = spawnWorker({
      schema,
      prefix,
      args,
      compiled: true,
      // One attempt per job (the API sets it when it enqueues): the first failure is final.
      env: { ONCEQ_JOBS: path.join(dir!, 'payments.mjs'), ONCEQ_MAX_ATTEMPTS: '1', ...env },
    });
    children.push(child);
    return child;
  }

  /** `node bin/onceq.js ARGS` to its end, its stdout if it exited 0. */
  async function onceq(...args: string[]): Promise<string> {
    const child = spawn(args);
    const { code } = await child.exited;
    expect(code, `onceq ${args.join(' ')}: ${child.output()}`).to.equal(0);
    return child.stdout();
  }

  async function newPage(credentials?: { username: string; password: string }): Promise<Page> {
    const context = await browser!.newContext({
      viewport: { width: 1280, height: 800 },
      ...(credentials ? { httpCredentials: credentials } : {}),
    });
    context.setDefaultTimeout(5_000);
    contexts.push(context);
    // Only the API under test: Bull Board's page also asks Google for its fonts, which a test
    // must not wait on (nor need a network for).
    await context.route(
      (url) => url.origin !== address,
      (route) => route.abort('blockedbyclient'),
    );
    return context.newPage();
  }

  before(async function () {
    // First, before anything is started: a missing browser fails here, naming the fix.
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `Chromium is not installed at ${CHROMIUM}: the Bull Board browser test needs it. Install ` +
          `Debian's package with \`${INSTALL_CHROMIUM}\` (as root; \`bash .ci/run ` +
          '--services-only` does it), or set ONCEQ_TEST_CHROMIUM to the executable of another ' +
          'Chromium.',
      );
    }
    this.timeout(150_000);
    await ensureBuilt();
    redis = testRedis();
    db = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 1, applicationName: 'onceq-test' });
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-board-'));
    writeFileSync(path.join(dir, 'payments.mjs'), PAYMENTS_MODULE);

    await onceq('migrate', 'latest');
    // Side by side, for time: the keys, as the README makes them, and the two processes.
    const api = spawn(['api'], { PORT: '0', ONCEQ_HOST: '127.0.0.1' });
    const worker = spawn(['worker']);
    [adminKey, shopKey] = await Promise.all([
      onceq('keys', 'create', '--principal', 'ops', '--admin'),
      onceq('keys', 'create', '--principal', 'shop'),
      api.waitForOutput('api listening', 30_000),
      worker.waitForOutput('worker started', 30_000),
    ]).then(([ops, shop]) => [ops.trim(), shop.trim()]);
    address = /"address":"(http:[^"]+)"/.exec(api.output())![1]!;

    // The dead letter, made by the product: enqueued through the API, failed by the worker.
    const auth = { authorization: `Bearer ${shopKey}` };
    const issued = await fetch(`${address}/v1/tokens`, { method: 'POST', headers: auth });
    const { token } = (await issued.json()) as { token: string };
    const accepted = await fetch(`${address}/v1/jobs`, {
      method: 'POST',
      headers: { ...auth, 'idempotency-key': token, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'card.charge', data: { card: 'visa-4242', amount: 1999 } }),
    });
    expect(accepted.status).to.equal(202);
    dead = (await accepted.json()) as { jobId: string; messageId: string };
    let last: unknown;
    await waitFor('the charge to be dead-lettered', async () => {
      const res = await fetch(`${address}/v1/jobs/${dead.jobId}`, { headers: auth });
      last = await res.json();
      return (last as { state: string }).state === 'dead' ? true : undefined;
    }).catch((err: Error) => {
      throw new Error(`${err.message}; last ${JSON.stringify(last)}; ${worker.output()}`);
    });
    worker.child.kill('SIGTERM');
    expect(await worker.exited).to.deep.equal({ code: 0, signal: null });

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  });

  after(async function () {
    this.timeout(30_000);
    for (const context of contexts.splice(0)) await context.close();
    await browser?.close();
    await Promise.all(children.splice(0).map((c) => c.destroy()));
    if (redis) {
      await deletePrefix(redis, prefix);
      await closeRedis(redis);
    }
    if (db) {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
      await db.destroy();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses the board without credentials: 401 with a Basic challenge, no queue shown', async () => {
    const page = await newPage();
    const document = page.waitForResponse(`${address}/admin/queues`);
    // Headless, nobody answers the prompt: Chromium gives up on the page
    // (ERR_INVALID_AUTH_CREDENTIALS) rather than show the 401's body.
    const navigation = await page.goto(`${address}/admin/queues`).catch((err: Error) => err);
    if (navigation instanceof Error) {
      expect(navigation.message).to.contain('ERR_INVALID_AUTH_CREDENTIALS');
    }
    const res = await document;
    expect(res.status()).to.equal(401);
    expect(res.headers()['www-authenticate']).to.match(/^Basic realm="onceq admin"/);
    const text = await page.locator('body').innerText();
    for (const queue of QUEUES) expect(text).not.to.contain(queue);
    // Nor does the board's data route answer without the key.
    const api = await page.request.get(`${address}/admin/queues/api/queues`);
    expect(api.status()).to.equal(401);
    expect(await api.json()).to.include({ code: 'unauthorized', status: 401 });
    for (const queue of QUEUES) expect(await api.text()).not.to.contain(queue);
  });

  it('refuses a key that is not an admin key: 403, no queue shown', async () => {
    const page = await newPage({ username: 'shop', password: shopKey });
    const res = await page.goto(`${address}/admin/queues`);
    expect(res?.status()).to.equal(403);
    const text = await page.locator('body').innerText();
    expect(text).to.contain('this route needs an admin API key');
    for (const queue of QUEUES) expect(text).not.to.contain(queue);
  });

  it('shows an admin key the work queues and their dead-letter queues, the dead letter in payments.dlq', async () => {
    // Any user name; the admin key is the password, as a person types it into the prompt.
    const page = await newPage({ username: 'ops', password: adminKey });
    const res = await page.goto(`${address}/admin/queues`);
    expect(res?.status()).to.equal(200);
    const menu = page.getByRole('navigation');
    for (const queue of QUEUES) {
      await menu.getByRole('link', { name: queue, exact: true }).waitFor();
    }
    // The overview's cards: the dead-letter queue holds one job, the work queues none.
    await page.getByText('1 Job', { exact: true }).waitFor();
    const overview = await page.locator('main').innerText();
    expect(overview).to.match(/\bpayments\.dlq\s+No workers\s+1 Job\b/);
    for (const queue of ['ledger', 'ledger.dlq', 'payments']) {
      expect(overview).to.match(
        new RegExp(`(^|\\n)${queue.replace('.', '\\.')}\\s+No workers\\s+0 Jobs\\b`),
      );
    }

    await menu.getByRole('link', { name: 'payments.dlq', exact: true }).click();
    await page.waitForURL(/\/admin\/queues\/queue\/payments\.dlq/);
    // The dead letter's card: its job id, its job, and (in its data) its messageId and reason.
    await page.getByText(dead.jobId, { exact: true }).waitFor();
    const text = await page.locator('main').innerText();
    expect(text).to.contain('card.charge');
    expect(text).to.contain(`"${dead.messageId}"`);
    expect(text).to.contain('"exhausted"');
    expect(text).to.contain('card visa-4242 declined: the payment gateway is down');
    expect(await page.locator('header').innerText()).to.contain('dead letters of payments');

    const file = process.env.UPDATE_SCREENSHOTS
      ? README_SCREENSHOT
      : path.join(dir!, 'bull-board.png');
    mkdirSync(path.dirname(file), { recursive: true });
    await page.screenshot({ path: file });
    const png = readFileSync(file);
    expect(png.subarray(1, 4).toString('latin1')).to.equal('PNG');
    expect(png.length).to.be.greaterThan(10_000);
    // And the README shows the committed one.
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme).to.contain(`](${path.relative(ROOT, README_SCREENSHOT)})`);
    expect(readFileSync(README_SCREENSHOT).subarray(1, 4).toString('latin1')).to.equal('PNG');
  });
});
