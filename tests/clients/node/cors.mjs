// CORS of the sign-in API in headless Debian Chromium: a front end on an origin the tenant lists
// reads the session and changes the profile with credentials (a preflighted PATCH); one on an
// unlisted origin is blocked by the browser. The two front ends' pages are served by this script
// (Playwright route.fulfill), so no other server runs.
//
//   BASE_URL=https://localhost:PORT CA_FILE=… EMAIL=… PASSWORD=… LISTED=https://localhost:P1 \
//   UNLISTED=https://localhost:P2 node tests/clients/node/cors.mjs
//
// Prints `ok …` lines; exits 1 on the first failure, 2 on a setup problem.

import { launchTrusting } from './browser.mjs';

const env = {};
for (const name of ['BASE_URL', 'CA_FILE', 'EMAIL', 'PASSWORD', 'LISTED', 'UNLISTED']) {
  env[name] = process.env[name];
  if (!env[name]) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
}
const base = new URL(env.BASE_URL);
const api = base.origin;

function fail(what, detail) {
  throw new Error(`${what}: ${detail}`);
}

async function main() {
  // The front ends' pages come from this script, not from a loopback server, so Chromium's
  // local network access checks would stop their calls to the node before CORS is even asked:
  // they are turned off here (they guard something else than what this test checks).
  const browser = await launchTrusting(base, env.CA_FILE, ['--disable-features=LocalNetworkAccessChecks']);
  try {
    const context = await browser.newContext();
    for (const origin of [env.LISTED, env.UNLISTED]) {
      await context.route(`${origin}/**`, (route) =>
        route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>front end</title>' }),
      );
    }
    const page = await context.newPage();
    // The browser says why it blocked a request on the console: shown when something fails.
    page.on('console', (m) => console.log(`console ${m.type()}: ${m.text()}`));
    await page.goto(`${api}/v1/auth/passkeys`);
    const login = await page.evaluate(
      async ([email, password]) =>
        (await fetch('/v1/auth/login', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email, password }),
        })).status,
      [env.EMAIL, env.PASSWORD],
    );
    if (login !== 200) fail('password sign-in', `status ${login}`);

    await page.goto(`${env.LISTED}/app`);
    const read = await page.evaluate(async (api) => {
      const r = await fetch(`${api}/v1/auth/session`, { credentials: 'include' });
      return { status: r.status, email: (await r.json()).user?.email };
    }, api);
    if (read.status !== 200 || read.email !== env.EMAIL) fail('a listed origin reading the session', JSON.stringify(read));
    const patched = await page.evaluate(async (api) => {
      const r = await fetch(`${api}/v1/auth/me`, {
        method: 'PATCH',
        credentials: 'include',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ display_name: 'From the front end' }),
      });
      return { status: r.status, name: (await r.json()).display_name };
    }, api);
    if (patched.status !== 200 || patched.name !== 'From the front end') {
      fail('a listed origin changing the profile', JSON.stringify(patched));
    }
    console.log('ok a listed origin reads the session and changes the profile with credentials');

    await page.goto(`${env.UNLISTED}/app`);
    const blocked = await page.evaluate(async (api) => {
      try {
        await fetch(`${api}/v1/auth/session`, { credentials: 'include' });
        return 'read';
      } catch (e) {
        return e.name;
      }
    }, api);
    if (blocked !== 'TypeError') fail('an unlisted origin', `the browser let it ${blocked}`);
    console.log('ok the browser blocks an unlisted origin');
  } finally {
    await browser.close();
  }
}

try {
  await main();
} catch (e) {
  console.error(`FAIL ${e.message}`);
  process.exit(1);
}
process.exit(0);
