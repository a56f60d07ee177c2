// Loads a Chrome JSON trace into speedscope (its static app, from npm)
// under headless Chromium and prints what speedscope made of it, as JSON:
// the profiles it lists (one per thread) and, for each, its sandwich
// view's rows (function, total ms, self ms), read from the page as a user
// sees them. Used by tests/demo.rs; `.ci/run` installs what it needs
// (npm install here, and Debian's chromium).
//
//   node check.mjs TRACE.json
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [trace] = process.argv.slice(2);
const root = path.join(path.dirname(new URL(import.meta.url).pathname), 'node_modules/speedscope/dist/release');
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const file = url.pathname === '/trace.json' ? trace : path.join(root, path.normalize(url.pathname));
  if (!file.startsWith(root) && file !== trace) { res.writeHead(404); return res.end(); }
  fs.readFile(file, (err, data) => {
    if (err) { res.writeHead(404); return res.end(); }
    const type = file.endsWith('.html') ? 'text/html' : file.endsWith('.js') ? 'text/javascript'
      : file.endsWith('.wasm') ? 'application/wasm' : file.endsWith('.css') ? 'text/css' : 'application/octet-stream';
    res.writeHead(200, { 'content-type': type });
    res.end(data);
  });
});
await new Promise(r => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const profileURL = encodeURIComponent(`http://127.0.0.1:${port}/trace.json`);
  await page.goto(`http://127.0.0.1:${port}/index.html#profileURL=${profileURL}`);
  // The toolbar's title ends with "(i/n)": the profile shown of n.
  const title = async () => {
    for (let k = 0; k < 100; k++) {
      const t = await page.evaluate(() => document.body.innerText);
      const m = t.match(/\n(.*) \((\d+)\/(\d+)\)\n/);
      if (m) return { name: m[1], index: +m[2], count: +m[3] };
      await page.waitForTimeout(100);
    }
    throw new Error('speedscope shows no profile: ' + (await page.evaluate(() => document.body.innerText)));
  };
  const ms = (v) => {
    const m = v.trim().match(/^([\d.]+)(ns|µs|ms|s)/);
    if (!m) return NaN;
    return +m[1] * ({ ns: 1e-6, 'µs': 1e-3, ms: 1, s: 1e3 })[m[2]];
  };
  const sandwich = async () => {
    await page.getByText('Sandwich').click();
    await page.waitForTimeout(300);
    const text = await page.evaluate(() => document.body.innerText);
    await page.getByText('Time Order').click();
    const lines = text.split('Symbol Name')[1].split('\n').filter((l) => l.trim() !== '');
    const rows = [];
    for (let i = 0; i + 2 < lines.length; i += 3) {
      rows.push({ symbol: lines[i + 2].trim(), total_ms: ms(lines[i]), self_ms: ms(lines[i + 1]) });
    }
    return rows;
  };
  let t = await title();
  const out = { count: t.count, profiles: [] };
  for (let i = 0; i < t.count; i++) {
    out.profiles.push({ name: t.name, rows: await sandwich() });
    await page.keyboard.press('n');
    await page.waitForTimeout(100);
    t = await title();
  }
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
  server.close();
}
