// The authorization code flow with npm openid-client (a certified relying party), the browser
// step in headless Debian Chromium on the hosted sign-in page:
//
//   ISSUER=https://localhost:PORT CA_FILE=<test CA> NODE_EXTRA_CA_CERTS=<test CA> CLIENT_ID=… \
//   REDIRECT_URI=https://app.test/cb EMAIL=… PASSWORD=… TOTP_EMAIL=… TOTP_SECRET=… PYTHON=<venv python> \
//   node tests/clients/node/oidc_code_flow.mjs
//
// For a password user and for a user with an authenticator app (its codes from Python pyotp):
// discovery, authorization code + PKCE S256 with state and nonce (openid-client checks `iss`
// in the callback, RFC 9207), the code redeemed by openid-client, the ID and access tokens
// verified by jose against JWKS, UserInfo, a refresh (rotated; the old token then refused), and
// revocation (UserInfo then refuses the token).
// Prints `ok …` lines; exits 1 on the first failure, 2 on a setup problem.

import { execFileSync } from 'node:child_process';

import { launchTrusting } from './browser.mjs';

const env = {};
for (const name of ['ISSUER', 'CA_FILE', 'CLIENT_ID', 'REDIRECT_URI', 'EMAIL', 'PASSWORD', 'TOTP_EMAIL', 'TOTP_SECRET', 'PYTHON']) {
  env[name] = process.env[name];
  if (!env[name]) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
}
const oidc = await import('openid-client').catch((e) => {
  console.error(`cannot load openid-client (${e.code}): run tests/clients/setup.sh first`);
  process.exit(2);
});
const jose = await import('jose');

function check(condition, what, detail = '') {
  if (!condition) throw new Error(`${what} ${detail}`);
  console.log(`ok ${what}`);
}

function totpNow() {
  const script = 'import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).now())';
  return execFileSync(env.PYTHON, ['-c', script, env.TOTP_SECRET]).toString().trim();
}

const config = await oidc.discovery(new URL(env.ISSUER), env.CLIENT_ID, { redirect_uris: [env.REDIRECT_URI] }, oidc.None());
const meta = config.serverMetadata();
check(meta.issuer === env.ISSUER, 'discovery names the issuer');
check(meta.code_challenge_methods_supported.join() === 'S256', 'discovery lists S256 alone');
const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));

const browser = await launchTrusting(new URL(env.ISSUER), env.CA_FILE);
try {
  for (const user of [
    { email: env.EMAIL, password: env.PASSWORD, totp: false },
    { email: env.TOTP_EMAIL, password: env.PASSWORD, totp: true },
  ]) {
    const who = user.totp ? 'the user with an authenticator' : 'the password user';
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: env.REDIRECT_URI,
      scope: 'openid profile email offline_access',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    const context = await browser.newContext();
    let callback = null;
    await context.route(`${env.REDIRECT_URI}**`, (route) => {
      callback = route.request().url();
      return route.fulfill({ status: 200, contentType: 'text/plain', body: 'signed in' });
    });
    const page = await context.newPage();
    await page.goto(url.href);
    await page.fill('input[name=email]', user.email);
    await page.fill('input[name=password]', user.password);
    await page.click('button[type=submit]');
    if (user.totp) {
      await page.waitForSelector('input[name=code]', { timeout: 20_000 });
      await page.fill('input[name=code]', totpNow());
      await page.click('button[type=submit]');
    }
    await page.waitForURL(`${env.REDIRECT_URI}**`, { timeout: 20_000 });
    await context.close();
    check(callback !== null, `${who}: the browser came back to the client`);

    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    check(tokens.token_type.toLowerCase() === 'bearer', `${who}: openid-client redeemed the code`);
    const { payload: id, protectedHeader } = await jose.jwtVerify(tokens.id_token, jwks, {
      issuer: env.ISSUER,
      audience: env.CLIENT_ID,
    });
    check(protectedHeader.alg === 'RS256' && protectedHeader.kid, `${who}: jose verified the ID token`);
    check(id.nonce === nonce, `${who}: the ID token carries the nonce`);
    const amr = (id.amr ?? []).join(' ');
    check(amr === (user.totp ? 'pwd otp mfa' : 'pwd'), `${who}: amr`, amr);
    const { payload: at } = await jose.jwtVerify(tokens.access_token, jwks, { issuer: env.ISSUER, typ: 'at+jwt' });
    check(at.sub === id.sub, `${who}: jose verified the access token`);
    const info = await oidc.fetchUserInfo(config, tokens.access_token, id.sub);
    check(info.email === user.email, `${who}: UserInfo`, JSON.stringify(info));

    // Refresh: a new access token and a rotated refresh token; the old one is then refused.
    check(typeof tokens.refresh_token === 'string', `${who}: a refresh token for offline_access`);
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
    check(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, `${who}: openid-client refreshed, rotated`);
    await jose.jwtVerify(refreshed.access_token, jwks, { issuer: env.ISSUER, typ: 'at+jwt' });
    const replayed = await oidc.refreshTokenGrant(config, tokens.refresh_token).then(
      () => false,
      (e) => e.error === 'invalid_grant',
    );
    check(replayed, `${who}: the replaced refresh token is refused (invalid_grant)`);

    await oidc.tokenRevocation(config, tokens.access_token);
    const refused = await oidc.fetchUserInfo(config, tokens.access_token, id.sub).then(
      () => false,
      () => true,
    );
    check(refused, `${who}: a revoked access token gets no UserInfo`);
  }
} finally {
  await browser.close();
}
process.exit(0);
