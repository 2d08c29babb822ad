// First paint of ferry's dashboard from loopback: opens `/` N times in
// Debian's chromium (a new page each time, cache off) and prints the
// browser's own first-contentful-paint and load timings (Performance API).
// Usage: node firstpaint.mjs URL [N]       (bench/dashboard.sh runs it)
import { chromium } from 'playwright-core';

const url = process.argv[2];
const n = Number(process.argv[3] || 20);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
const context = await browser.newContext();
const fcp = [];
const load = [];
// One load first, not counted: the browser's own start-up (renderer
// process, fonts) is not the page's cost.
for (let i = -1; i < n; i += 1) {
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => performance.getEntriesByName('first-contentful-paint').length > 0);
  const t = await page.evaluate(() => ({
    fcp: performance.getEntriesByName('first-contentful-paint')[0].startTime,
    load: performance.getEntriesByType('navigation')[0].loadEventEnd,
  }));
  if (i >= 0) {
    fcp.push(t.fcp);
    load.push(t.load);
  }
  await page.close();
}
await browser.close();
const q = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
console.log(`first-contentful-paint ms: median ${q(fcp, 0.5).toFixed(1)}, p95 ${q(fcp, 0.95).toFixed(1)}, max ${Math.max(...fcp).toFixed(1)} (${n} loads)`);
console.log(`load event ms:             median ${q(load, 0.5).toFixed(1)}, p95 ${q(load, 0.95).toFixed(1)}`);
