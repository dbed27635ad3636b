// Passkeys on the hosted page ({issuer}/v1/auth/passkeys) in headless Debian Chromium with the
// DevTools WebAuthn virtual authenticator (CTAP2, resident keys, user verification):
//
//   BASE_URL=https://localhost:PORT CA_FILE=<test CA> EMAIL=… PASSWORD=… node tests/clients/node/passkeys.mjs
//
// WebAuthn refuses IP addresses, so BASE_URL must name localhost. Checks: a user signed in with
// their password adds a passkey on the page (a resident credential appears in the
// authenticator); after signing out, "Sign in with a passkey" signs them in without typing a
// name (changed answers, each one field off, are refused first and spend nothing); with user
// verification turned off in the authenticator, the sign-in fails and nobody
// is signed in; a replayed sign-in answer is refused (its challenge is spent). Prints the
// replayed body as `replay-body <base64>` (the caller replays it after a restart) and `ok …` lines; exits 1 on the first failure, 2 on a setup problem.

import { launchTrusting } from './browser.mjs';

const env = {};
for (const name of ['BASE_URL', 'CA_FILE', 'EMAIL', 'PASSWORD']) {
  env[name] = process.env[name];
  if (!env[name]) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
}
const base = new URL(env.BASE_URL);
const TIMEOUT_MS = 20_000;

function fail(what, detail) {
  throw new Error(`${what}: ${detail}`);
}

async function statusBecomes(page, test, what) {
  const status = page.locator('#status');
  const deadline = Date.now() + TIMEOUT_MS;
  let text = '';
  while (Date.now() < deadline) {
    text = (await status.textContent()) ?? '';
    if (test(text)) return text;
    await page.waitForTimeout(100);
  }
  const main = (await page.locator('main').textContent().catch(() => '')) ?? '';
  fail(what, `the status line says ${JSON.stringify(text)}, at ${page.url()}: ${JSON.stringify(main)}`);
}

async function sessionStatus(page) {
  return page.evaluate(async (issuer) => (await fetch(`${issuer}/v1/auth/session`)).status, base.pathname.replace(/\/$/, ''));
}

// The authenticator's answer in a finish request's body, changed by `change(clientData, answer)`.
function mutated(body, change) {
  const b = JSON.parse(body);
  const data = JSON.parse(Buffer.from(b.credential.response.clientDataJSON, 'base64url').toString());
  change(data, b.credential.response);
  b.credential.response.clientDataJSON = Buffer.from(JSON.stringify(data)).toString('base64url');
  return JSON.stringify(b);
}

// Before letting a finish request through, sends the given wrong versions of it (S46, S47):
// each must be refused with 400 `passkey_refused`, and none may spend the ceremony.
async function refuseFirst(page, path, cases, seen) {
  await page.route(`**${path}`, async (route) => {
    const body = route.request().postData();
    for (const [what, change] of cases) {
      const r = await route.fetch({ postData: mutated(body, change) });
      const problem = await r.json().catch(() => ({}));
      seen.push([what, r.status(), problem.type]);
    }
    await route.continue();
  });
}

function allRefused(seen, what) {
  const wrong = seen.filter(([, status, type]) => status !== 400 || type !== 'urn:gatehouse:problem:passkey_refused');
  if (seen.length === 0 || wrong.length) fail(what, JSON.stringify(seen));
}

async function main() {
  const browser = await launchTrusting(base, env.CA_FILE);
  try {
    // route.fetch (the changed answers below) sends from Node, not from the browser; the
    // certificate was checked against CA_FILE before the launch.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2',
        transport: 'internal',
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    const pageUrl = new URL('v1/auth/passkeys', base.href.endsWith('/') ? base.href : `${base.href}/`).href;
    await page.goto(pageUrl);

    // Signed in with the password (the cookie lands in the browser), the page offers to add one.
    const login = await page.evaluate(
      async ([email, password]) =>
        (await fetch(location.pathname.replace(/passkeys$/, 'login'), {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email, password }),
        })).status,
      [env.EMAIL, env.PASSWORD],
    );
    if (login !== 200) fail('password sign-in', `status ${login}`);
    await page.reload();
    await page.locator('#add').waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    const registrationCases = [
      ['another origin', (d) => { d.origin = 'https://evil.test'; }],
      ['a get for a create', (d) => { d.type = 'webauthn.get'; }],
      ['another challenge', (d) => { d.challenge = Buffer.from('not the challenge we issued').toString('base64url'); }],
      ['a cross-origin call', (d) => { d.crossOrigin = true; d.topOrigin = 'https://evil.test'; }],
    ];
    const refusedRegistrations = [];
    await refuseFirst(page, '/v1/auth/passkeys/register/finish', registrationCases, refusedRegistrations);
    await page.click('#add');
    await statusBecomes(page, (t) => t === 'Passkey added.', 'adding a passkey');
    await page.unroute('**/v1/auth/passkeys/register/finish');
    allRefused(refusedRegistrations, 'changed registrations');
    console.log(`ok ${refusedRegistrations.length} changed registration answers were refused, and the genuine one then worked`);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    if (credentials.length !== 1 || !credentials[0].isResidentCredential) {
      fail('the authenticator', `holds ${JSON.stringify(credentials)}`);
    }
    await page.locator('#list li').first().waitFor({ timeout: TIMEOUT_MS });
    console.log('ok a signed-in user added a discoverable passkey on the hosted page');

    // Signed out, the passkey signs in without a name.
    await page.click('#signout');
    await statusBecomes(page, (t) => t === 'Signed out.', 'signing out');
    if ((await sessionStatus(page)) !== 401) fail('sign-out', 'a session is still there');
    await page.locator('#signin').waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    let finished = null;
    page.on('request', (r) => {
      if (r.method() === 'POST' && r.url().endsWith('/v1/auth/passkeys/login/finish')) finished = r.postData();
    });
    const signInCases = [
      ['another origin', (d) => { d.origin = 'https://evil.test'; }],
      ['a create for a get', (d) => { d.type = 'webauthn.create'; }],
      ['a broken signature', (d, answer) => {
        const sig = Buffer.from(answer.signature, 'base64url');
        sig[sig.length - 1] ^= 1;
        answer.signature = sig.toString('base64url');
      }],
      ['another user handle', (d, answer) => { answer.userHandle = Buffer.alloc(16, 7).toString('base64url'); }],
    ];
    const refusedSignIns = [];
    await refuseFirst(page, '/v1/auth/passkeys/login/finish', signInCases, refusedSignIns);
    await page.click('#signin');
    await statusBecomes(page, (t) => t === `Signed in as ${env.EMAIL}.`, 'a usernameless sign-in');
    await page.unroute('**/v1/auth/passkeys/login/finish');
    allRefused(refusedSignIns, 'changed sign-ins');
    console.log(`ok ${refusedSignIns.length} changed sign-in answers were refused, and the genuine one then worked`);
    if ((await sessionStatus(page)) !== 200) fail('passkey sign-in', 'no session afterwards');
    console.log('ok signed out, the passkey signed the user in without a name');

    // The same answer again: its challenge is spent.
    if (!finished) fail('the finish request', 'was not seen');
    const replay = await page.evaluate(async (body) => {
      const r = await fetch(location.pathname.replace(/passkeys$/, 'passkeys/login/finish'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      return { status: r.status, type: (await r.json()).type };
    }, finished);
    if (replay.status !== 400 || replay.type !== 'urn:gatehouse:problem:invalid_ceremony') {
      fail('a replayed assertion', JSON.stringify(replay));
    }
    console.log('ok a replayed assertion is refused: its challenge was spent');
    console.log(`replay-body ${Buffer.from(finished).toString('base64')}`);

    // Without user verification the sign-in fails, and nobody is signed in.
    await page.click('#signout');
    await statusBecomes(page, (t) => t === 'Signed out.', 'signing out again');
    await cdp.send('WebAuthn.setUserVerified', { authenticatorId, isUserVerified: false });
    await page.locator('#signin').waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    await page.click('#signin');
    const refused = await statusBecomes(page, (t) => t.startsWith('Failed') || t.includes('refused'), 'a sign-in without UV');
    if ((await sessionStatus(page)) !== 401) fail('sign-in without UV', 'a session was started');
    console.log(`ok without user verification the sign-in fails (${refused})`);
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
