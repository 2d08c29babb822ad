// ferry's dashboard in a real browser: Debian's chromium driven by
// playwright-core, against a real `ferry serve` and a throttled origin.
// Run by scripts/browser.sh, which sets FERRY_BIN, FERRY_ORIGIN_BIN,
// CHROMIUM and, optionally, FERRY_SCREENSHOTS (a directory).
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const ferry = process.env.FERRY_BIN;
const originBin = process.env.FERRY_ORIGIN_BIN;
const shots = process.env.FERRY_SCREENSHOTS;
const axePath = path.join(here, 'node_modules/axe-core/axe.min.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-browser-'));
const children = [];
const MiB = 1024 * 1024;

function log(...args) { console.error('browser:', ...args); }

// Starts a process and resolves with the first match of `pattern` in its
// stdout or stderr.
function start(bin, args, env, pattern) {
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${bin} did not start`)), 30000);
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        const m = pattern.exec(line);
        if (m) { clearTimeout(timer); resolve({ child, url: m[1] }); }
      });
    }
    child.on('exit', (code) => reject(new Error(`${bin} exited with ${code}`)));
  });
}

function serve(dataDir, extra = [], listen = '127.0.0.1:0') {
  return start(ferry, ['serve', '--listen', listen, '--data-dir', dataDir, '--progress-interval', '200ms', ...extra],
    { FERRY_ALLOW_SOURCE: '127.0.0.1' }, /ferry serve: listening on (\S+)/);
}

async function api(base, method, p, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(base + p, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = await resp.json();
  assert.ok(resp.ok, `${method} ${p}: ${resp.status} ${JSON.stringify(data)}`);
  return data;
}

async function waitFor(what, fn, timeoutMs = 60000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= until && globalThis.dumpPage) await globalThis.dumpPage();
    assert.ok(Date.now() < until, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function walk(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

// '' until the job's page has rendered its facts.
const jobStatus = (page) => page.$eval('#job-facts dd', (d) => d.textContent).catch(() => '');

async function axeCheck(browser, url, views) {
  for (const colorScheme of ['light', 'dark']) {
    await axeScheme(browser, url, views, colorScheme);
  }
}

async function axeScheme(browser, url, views, colorScheme) {
  // The page's CSP forbids injected scripts; this context alone bypasses it.
  const context = await browser.newContext({ bypassCSP: true, colorScheme });
  const page = await context.newPage();
  for (const view of views) {
    await page.goto(url + view.hash);
    await page.waitForSelector(view.ready, { state: 'visible' });
    await page.addScriptTag({ path: axePath });
    const result = await page.evaluate(async () => window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    }));
    const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(serious.map((v) => `${v.id}: ${v.help}`), [], `axe on ${view.hash} (${colorScheme})`);
    log(`axe ${view.hash} (${colorScheme}): ${result.passes.length} rules passed, no serious violation`);
  }
  await context.close();
}

async function main() {
  assert.ok(ferry && originBin, 'FERRY_BIN and FERRY_ORIGIN_BIN are set');
  const srv = path.join(work, 'srv');
  fs.mkdirSync(srv);
  for (const name of ['a.bin', 'b.bin', 'c.bin', 'd.bin', 'e.bin', 'f.bin']) {
    fs.writeFileSync(path.join(srv, name), Buffer.alloc(3 * MiB, name));
  }
  fs.writeFileSync(path.join(srv, 'big.bin'), Buffer.alloc(64 * MiB, 7));
  const origin = await start(originBin, [srv], { FERRY_ORIGIN_THROTTLE: String(MiB) }, /listening on (\S+)/);
  const dataDir = path.join(work, 'data');
  let server = await serve(dataDir);
  const base = server.url;
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  process.on('exit', () => { if (pageErrors.length) console.error('page errors:', pageErrors); });
  globalThis.dumpPage = async () => {
    console.error('page at', page.url(), 'conn:', await page.textContent('#conn').catch(() => '?'));
    console.error('facts:', await page.textContent('#job-facts').catch(() => '?'));
    console.error('files:', await page.textContent('#files-table tbody').catch(() => '?'));
    console.error('events:', await page.textContent('#event-tail').catch(() => '?'));
  };

  // 1. A 3-file job through the form; every bar moves and fills.
  await page.goto(base + '/');
  await page.waitForSelector('#jobs-view', { state: 'visible' });
  await page.click('nav >> text=Submit');
  await page.fill('#destination', '../outside');
  await page.fill('#urls', `${origin.url}/a.bin\n${origin.url}/b.bin\n${origin.url}/c.bin\n`);
  await page.click('#submit-form button[type=submit]');
  await waitFor('the destination error', async () => (await page.textContent('#destination-error')).length > 0);
  log('a bad destination is shown at its field:', await page.textContent('#destination-error'));
  await page.fill('#destination', 'ui');
  await page.click('#submit-form button[type=submit]');
  await page.waitForURL(/#\/jobs\//);
  const firstId = decodeURIComponent(page.url().split('#/jobs/')[1]);
  const partial = new Set();
  let shot = false;
  await waitFor('the first job to complete', async () => {
    const bars = await page.$$eval('#files-table progress', (ps) => ps.map((p) => [p.value, p.max]));
    bars.forEach(([v, max], i) => { if (v > 0 && v < max) partial.add(i); });
    const midway = bars.filter(([v, max]) => v / max > 0.3 && v / max < 0.8).length;
    if (!shot && shots && midway >= 2) {
      shot = true;
      await page.screenshot({ path: path.join(shots, 'dashboard-job.png') });
    }
    return (await jobStatus(page)) === 'completed';
  });
  const bars = await page.$$eval('#files-table progress', (ps) => ps.map((p) => [p.value, p.max]));
  assert.equal(bars.length, 3);
  bars.forEach(([v, max]) => assert.equal(v, max, 'every bar ends full'));
  assert.deepEqual([...partial].sort(), [0, 1, 2], 'every bar was seen part-way');
  for (const name of ['a.bin', 'b.bin', 'c.bin']) {
    assert.equal(fs.statSync(path.join(dataDir, 'files/ui', name)).size, 3 * MiB);
  }
  log(`job ${firstId}: 3 bars moved and filled; completed`);

  // 2. Cancel a running job from its page.
  const big = await api(base, 'POST', '/v1/jobs', { destination: 'cancel', files: [{ source: `${origin.url}/big.bin`, key: 'big.bin' }] });
  await page.goto(`${base}/#/jobs/${big.id}`);
  await waitFor('the big file to start', async () => {
    const v = await page.$eval('#files-table progress', (p) => p.value).catch(() => 0);
    return v > 0;
  });
  await page.click('#cancel-button');
  await page.click('#confirm-yes');
  await waitFor('the job to be cancelled', async () => (await jobStatus(page)) === 'cancelled');
  const cancelled = await api(base, 'GET', `/v1/jobs/${big.id}`);
  assert.equal(cancelled.files[0].status, 'cancelled');
  await waitFor('no temp file left', async () => walk(path.join(dataDir, 'files/cancel')).length === 0, 10000);
  log(`job ${big.id}: cancelled from its page; nothing left in files/cancel`);

  // 3. The jobs list shows both, live.
  await page.goto(base + '/#/');
  await waitFor('two job rows', async () => (await page.$$('#jobs-table tbody tr')).length === 2);
  const statuses = await page.$$eval('#jobs-table tbody tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent));
  assert.deepEqual(statuses.sort(), ['cancelled', 'completed']);
  const live = await api(base, 'POST', '/v1/jobs', { destination: 'live', files: [{ source: `${origin.url}/d.bin`, key: 'd.bin' }] });
  await waitFor('a new job to appear without reload', async () => (await page.$(`#jobs-table tr[data-id="${live.id}"]`)) !== null);
  if (shots) await page.screenshot({ path: path.join(shots, 'dashboard-jobs.png') });
  await waitFor('it to complete in the list', async () => (await page.textContent(`#jobs-table tr[data-id="${live.id}"] td:nth-child(2)`)) === 'completed');
  log('the jobs list follows new jobs and their ends live');

  // 4. Accessibility.
  await axeCheck(browser, base + '/', [
    { hash: '#/', ready: '#jobs-view' },
    { hash: `#/jobs/${firstId}`, ready: '#files-table tbody tr' },
    { hash: '#/submit', ready: '#submit-view' },
  ]);

  // 5. A dropped stream (the server restarted) resumes without duplicates.
  const resumed = await api(base, 'POST', '/v1/jobs', { destination: 'resume', files: ['e.bin', 'f.bin'].map((n) => ({ source: `${origin.url}/${n}`, key: n })) });
  await page.goto(`${base}/#/jobs/${resumed.id}`);
  await waitFor('progress before the restart', async () => (await page.$$eval('#event-tail li', (l) => l.length)) >= 4);
  server.child.kill('SIGKILL');
  await new Promise((r) => server.child.once('exit', r));
  await waitFor('the page to notice', async () => (await page.textContent('#conn')).startsWith('reconnecting'), 15000);
  server = await serve(dataDir, [], base.replace('http://', ''));
  await waitFor('the resumed job to complete', async () => (await jobStatus(page)) === 'completed', 90000);
  const seqs = await page.$$eval('#event-tail li', (l) => l.map((x) => Number(x.textContent.split(' ')[0])));
  seqs.slice(1).forEach((s, i) => assert.ok(s > seqs[i], `events in order without duplicate: ${seqs}`));
  assert.equal((await page.$$('#files-table tbody tr')).length, 2, 'one row per file');
  log(`job ${resumed.id}: the page reconnected after a restart; ${seqs.length} events, none twice`);

  // 6. Tokens: the prompt, a refused token, an owner's view.
  const tokens = path.join(work, 'tokens');
  const create = async (args) => {
    const out = await new Promise((resolve, reject) => {
      const c = spawn(ferry, ['token', 'create', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      c.stdout.on('data', (d) => { text += d; });
      c.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`token create: ${code}`))));
    });
    const [token, line] = out.trim().split('\n');
    fs.appendFileSync(tokens, line + '\n');
    return token;
  };
  const admin = await create(['ops', '--admin']);
  const alice = await create(['alice']);
  const guarded = await serve(path.join(work, 'data2'), ['--tokens', tokens]);
  const mine = await api(guarded.url, 'POST', '/v1/jobs', { destination: 'alice', files: [{ source: `${origin.url}/a.bin`, key: 'a.bin' }] }, alice);
  await api(guarded.url, 'POST', '/v1/jobs', { destination: 'o', files: [{ source: `${origin.url}/b.bin`, key: 'b.bin' }] }, admin);
  const fresh = await browser.newPage();
  await fresh.goto(guarded.url + '/');
  await fresh.waitForSelector('#token-view', { state: 'visible' });
  await fresh.fill('#token-input', 'not-a-token');
  await fresh.click('#token-form button');
  await waitFor('the refusal', async () => (await fresh.textContent('#token-error')) === 'That token was refused.');
  await fresh.fill('#token-input', alice);
  await fresh.click('#token-form button');
  await fresh.waitForSelector('#jobs-view', { state: 'visible' });
  await waitFor("alice's job", async () => (await fresh.$$('#jobs-table tbody tr')).length === 1);
  await new Promise((r) => setTimeout(r, 500));
  const ids = await fresh.$$eval('#jobs-table tbody tr', (rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(ids, [mine.id], 'a non-admin token sees only its own jobs');
  log('tokens: prompt shown, a wrong token refused, alice sees only her job');

  await browser.close();
  log('all dashboard checks passed');
}

main()
  .then(() => { children.forEach((c) => c.kill('SIGKILL')); fs.rmSync(work, { recursive: true, force: true }); process.exit(0); })
  .catch((e) => { console.error(e); children.forEach((c) => c.kill('SIGKILL')); process.exit(1); });
