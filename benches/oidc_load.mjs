// The load of benches/oidc.sh: CONCURRENCY workers, each signed in with its own session.
//   1. Full authorization-code exchanges: authorize with the session (303 with a code), then
//      the code redeemed at the token endpoint (PKCE S256, ID token RS256), for DURATION_S.
//   2. Refresh rotations: each worker's own refresh token family, rotated for DURATION_S (each
//      rotation a raft write; no new ID token).
// Prints one JSON line: per phase, completed per second, p50 and p99 latency, and failures.
//
//   URL=… CLIENT_ID=… EMAIL=… PASSWORD=… CONCURRENCY=32 DURATION_S=10 NODE_EXTRA_CA_CERTS=ca.pem node oidc_load.mjs

import crypto from 'node:crypto';

const env = {};
for (const name of ['URL', 'CLIENT_ID', 'EMAIL', 'PASSWORD']) {
  env[name] = process.env[name];
  if (!env[name]) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
}
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 32);
const DURATION_MS = Number(process.env.DURATION_S ?? 10) * 1000;
const REDIRECT = 'https://app.bench/cb';
const verifier = crypto.randomBytes(32).toString('base64url');
const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');

async function signIn() {
  const r = await fetch(`${env.URL}/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: env.EMAIL, password: env.PASSWORD }),
  });
  if (r.status !== 200) throw new Error(`login answered ${r.status}`);
  return r.headers.get('set-cookie').split(';')[0];
}

async function exchange(cookie, scope) {
  const q = new URLSearchParams({
    response_type: 'code',
    client_id: env.CLIENT_ID,
    redirect_uri: REDIRECT,
    scope,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 's',
  });
  const a = await fetch(`${env.URL}/oauth2/authorize?${q}`, { headers: { cookie }, redirect: 'manual' });
  await a.arrayBuffer();
  const location = a.headers.get('location');
  const code = location && new URL(location).searchParams.get('code');
  if (a.status !== 303 || !code) throw new Error(`authorize answered ${a.status} ${location}`);
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    client_id: env.CLIENT_ID,
    code,
    redirect_uri: REDIRECT,
    code_verifier: verifier,
  });
  const t = await fetch(`${env.URL}/oauth2/token`, { method: 'POST', body: form });
  const body = await t.json();
  if (t.status !== 200 || !body.id_token) throw new Error(`token answered ${t.status} ${JSON.stringify(body)}`);
  return body;
}

async function rotate(token) {
  const form = new URLSearchParams({ grant_type: 'refresh_token', client_id: env.CLIENT_ID, refresh_token: token });
  const t = await fetch(`${env.URL}/oauth2/token`, { method: 'POST', body: form });
  const body = await t.json();
  if (t.status !== 200) throw new Error(`refresh answered ${t.status} ${JSON.stringify(body)}`);
  return body.refresh_token;
}

async function phase(workers, step) {
  const latencies = [];
  let failures = 0;
  let firstError = null;
  const start = performance.now();
  const deadline = start + DURATION_MS;
  await Promise.all(
    workers.map(async (w) => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        try {
          await step(w);
          latencies.push(performance.now() - t0);
        } catch (e) {
          failures += 1;
          firstError ??= e.message;
        }
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p) => (latencies.length ? +latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1) : null);
  return { per_s: +(latencies.length / seconds).toFixed(1), p50_ms: q(0.5), p99_ms: q(0.99), done: latencies.length, failures, first_error: firstError };
}

const workers = [];
for (let i = 0; i < CONCURRENCY; i++) workers.push({ cookie: await signIn() });
const exchanges = await phase(workers, (w) => exchange(w.cookie, 'openid'));
for (const w of workers) w.refresh = (await exchange(w.cookie, 'openid offline_access')).refresh_token;
const refreshes = await phase(workers, async (w) => {
  w.refresh = await rotate(w.refresh);
});
console.log(JSON.stringify({ concurrency: CONCURRENCY, exchanges, refreshes }));
process.exit(0);
