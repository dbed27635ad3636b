// The API docs viewer (/docs: Redoc, served by the node itself) rendered in headless Debian
// Chromium, driven by playwright-core (pinned in package-lock.json; run tests/clients/setup.sh
// first, which installs /usr/bin/chromium and links node_modules here).
//
//   BASE_URL=https://127.0.0.1:PORT CA_FILE=<test CA> node tests/clients/node/docs_viewer.mjs
//
// Chromium reads no CA file. This script verifies the node's certificate against CA_FILE itself
// (Node TLS, host name checked), then tells Chromium to accept exactly that certificate's key
// (--ignore-certificate-errors-spki-list), so any other certificate still fails in the browser.
//
// Checks: the page renders the API (title and an operation) within 30 s; every request stays on
// the node's origin (or is data:/blob:); no request fails; no CSP violation is reported (as a
// `securitypolicyviolation` event or a console message); /docs carries the CSP with
// frame-ancestors 'none' and X-Content-Type-Options: nosniff. Prints `ok …` lines; exits 1 on
// the first failure, 2 on a setup problem.

import { launchTrusting } from './browser.mjs';

const env = {};
for (const name of ['BASE_URL', 'CA_FILE']) {
  env[name] = process.env[name];
  if (!env[name]) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
}
const base = new URL(env.BASE_URL);
const origin = base.origin;
const TIMEOUT_MS = 30_000;

function fail(what, detail) {
  throw new Error(`${what}: ${detail}`);
}

const requests = [];
const failed = [];
const consoleLines = [];
const violations = [];

async function main() {
  const browser = await launchTrusting(base, env.CA_FILE);
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    // Reported from the page before any of its scripts run, so nothing is missed.
    await page.exposeFunction('__reportCspViolation', (v) => violations.push(v));
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) =>
        window.__reportCspViolation({
          directive: e.effectiveDirective || e.violatedDirective,
          blocked: e.blockedURI,
          source: e.sourceFile ? `${e.sourceFile}:${e.lineNumber}:${e.columnNumber}` : '',
          sample: e.sample,
        }),
      );
    });
    // Workers share the context; their requests show up here too.
    context.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
    context.on('requestfailed', (r) => failed.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    page.on('console', (m) => {
      const at = m.location()?.url;
      consoleLines.push(`${m.type()}: ${m.text()}${at ? ` (${at})` : ''}`);
    });
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));

    const docsUrl = new URL('/docs', origin).href;
    const res = await page.goto(docsUrl, { waitUntil: 'load', timeout: TIMEOUT_MS });
    if (!res) fail('load', `no response for ${docsUrl}`);
    if (res.status() !== 200) fail('load', `GET ${docsUrl} -> ${res.status()}`);
    console.log(`ok GET /docs ${res.status()}`);

    const headers = await res.allHeaders();
    const csp = headers['content-security-policy'] ?? '';
    if (!/(^|;)\s*frame-ancestors 'none'\s*(;|$)/.test(csp)) fail('csp header', `no frame-ancestors 'none' in ${JSON.stringify(csp)}`);
    console.log(`ok content-security-policy: ${csp}`);
    const nosniff = headers['x-content-type-options'];
    if (nosniff !== 'nosniff') fail('x-content-type-options', `got ${JSON.stringify(nosniff)}`);
    console.log('ok x-content-type-options: nosniff');

    // Redoc renders the document's title in the info section and one h2 per operation.
    const title = page.locator('.api-info h1, h1').filter({ hasText: 'Gatehouse' }).first();
    await title.waitFor({ state: 'visible', timeout: TIMEOUT_MS }).catch(() => fail('render', `no h1 with "Gatehouse" after ${TIMEOUT_MS / 1000} s`));
    console.log(`ok rendered API title: ${(await title.innerText()).trim()}`);
    const operation = page.locator('h2', { hasText: 'Create a tenant' }).first();
    await operation.waitFor({ state: 'attached', timeout: TIMEOUT_MS }).catch(() => fail('render', `no operation "Create a tenant" after ${TIMEOUT_MS / 1000} s`));
    const operations = await page.locator('[data-section-id^="operation/"], [id^="operation/"]').count();
    console.log(`ok rendered operation "Create a tenant" (${operations} operation sections)`);

    // Let late requests (lazy chunks, fonts, the menu's search worker) and reports arrive.
    await page.waitForLoadState('networkidle', { timeout: 10_000 }).catch(() => {});
    await page.waitForTimeout(500);

    const offsite = requests.filter((r) => {
      const url = r.slice(r.indexOf(' ') + 1);
      return !(url === origin || url.startsWith(`${origin}/`) || url.startsWith('data:') || url.startsWith('blob:'));
    });
    if (offsite.length) fail('offline', `requests left ${origin}:\n  ${offsite.join('\n  ')}`);
    console.log(`ok all ${requests.length} requests stayed on ${origin} (or data:/blob:)`);
    if (!requests.some((r) => r.endsWith(' ' + new URL('/openapi.json', origin).href))) fail('openapi', 'the page never fetched /openapi.json');
    console.log('ok the page fetched /openapi.json');

    const cspConsole = consoleLines.filter((l) => /Content Security Policy|Refused to/i.test(l));
    if (violations.length || cspConsole.length) {
      const detail = [
        ...violations.map((v) => `directive ${v.directive} blocked ${v.blocked || '(inline)'}${v.source ? ` at ${v.source}` : ''}${v.sample ? ` sample ${JSON.stringify(v.sample)}` : ''}`),
        ...cspConsole,
      ];
      fail('csp', `${violations.length} violation(s) reported:\n  ${detail.join('\n  ')}`);
    }
    console.log('ok no CSP violation reported');
    if (failed.length) fail('requests', `${failed.length} request(s) failed:\n  ${failed.join('\n  ')}`);
    console.log('ok no request failed');
    // Chromium asks for /favicon.ico by itself (the page does not); a 404 there is harmless.
    const favicon = `${origin}/favicon.ico`;
    if (consoleLines.some((l) => l.startsWith('error:') && l.endsWith(`(${favicon})`))) {
      console.log(`note: the browser's own request for ${favicon} was not answered 2xx (ignored)`);
    }
    const errors = consoleLines.filter((l) => /^(error|pageerror):/.test(l) && !l.endsWith(`(${favicon})`));
    if (errors.length) fail('console', `errors on the console:\n  ${errors.join('\n  ')}`);
    console.log('ok no error on the console');
  } finally {
    await browser.close();
  }
}

let error;
try {
  await main();
} catch (e) {
  error = e.cause ? `${e.message} (${e.cause.code ?? e.cause.message})` : e.message;
}
if (error !== undefined) {
  console.error(`docs_viewer failed: ${error}`);
  console.error(`requests seen:\n  ${requests.join('\n  ') || '(none)'}`);
  console.error(`console:\n  ${consoleLines.join('\n  ') || '(nothing)'}`);
  process.exit(1);
}
console.log(`ok docs viewer rendered offline at ${origin}/docs`);
process.exit(0);
