// client_credentials flow against a Gatehouse tenant, checked with panva's `jose` (pinned in
// package-lock.json; run tests/clients/setup.sh first, which links node_modules here).
//
//   NODE_EXTRA_CA_CERTS=<test CA> ISSUER=https://127.0.0.1:PORT/t/acme \
//   CLIENT_ID=... CLIENT_SECRET=... AUDIENCE=https://api.example.test \
//   node tests/clients/node/jose_flow.mjs
//
// NODE_EXTRA_CA_CERTS is read once at process start and replaces the machine's preset value,
// so it must be set on this process itself. Prints one JSON line; exits 0 only if all checks pass.

const jose = await import('jose').catch((e) => {
  console.error(`cannot load jose (${e.code}): run tests/clients/setup.sh first`);
  process.exit(2);
});

const env = {};
for (const name of ['ISSUER', 'CLIENT_ID', 'CLIENT_SECRET', 'AUDIENCE', 'NODE_EXTRA_CA_CERTS']) {
  env[name] = process.env[name];
  if (!env[name]) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
}

const checks = {};
function check(name, ok, detail) {
  checks[name] = ok ? 'ok' : `FAILED: ${detail}`;
  if (!ok) throw new Error(`${name}: ${detail}`);
}

// RFC 6749 2.3.1: id and secret are form-urlencoded before going into the Basic header.
const basic =
  'Basic ' +
  Buffer.from(`${encodeURIComponent(env.CLIENT_ID)}:${encodeURIComponent(env.CLIENT_SECRET)}`).toString('base64');

async function postForm(url, fields) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields),
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

async function main() {
  const discoveryUrl = `${env.ISSUER.replace(/\/$/, '')}/.well-known/openid-configuration`;
  const res = await fetch(discoveryUrl);
  check('discovery', res.ok, `GET ${discoveryUrl} -> ${res.status}`);
  const meta = await res.json();
  check('discovery_issuer', meta.issuer === env.ISSUER, `issuer ${meta.issuer} != ${env.ISSUER}`);
  for (const k of ['token_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint']) {
    check(`discovery_${k}`, typeof meta[k] === 'string', `no ${k} in discovery`);
  }

  // An absolute URI is an RFC 8707 resource; a bare name (e.g. gatehouse-admin) is an audience.
  const aud = URL.canParse(env.AUDIENCE) ? { resource: env.AUDIENCE } : { audience: env.AUDIENCE };
  const tok = await postForm(meta.token_endpoint, { grant_type: 'client_credentials', ...aud });
  check('token', tok.status === 200 && tok.body.access_token, `${tok.status} ${JSON.stringify(tok.body)}`);
  check('token_type', /^bearer$/i.test(tok.body.token_type), `token_type ${tok.body.token_type}`);
  check('expires_in', tok.body.expires_in > 0, `expires_in ${tok.body.expires_in}`);
  const token = tok.body.access_token;

  const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  const opts = { issuer: env.ISSUER, audience: env.AUDIENCE, typ: 'at+jwt', algorithms: ['ES256'] };
  let payload;
  try {
    ({ payload } = await jose.jwtVerify(token, jwks, opts));
  } catch (e) {
    check('jwt_verify', false, `${e.code}: ${e.message}`);
  }
  checks.jwt_verify = 'ok';
  check('jwt_client_id', payload.client_id === env.CLIENT_ID, `client_id claim ${payload.client_id}`);

  // Flip one character in the middle of the payload segment (the last character may only
  // carry padding bits, which would leave the decoded payload unchanged).
  const [h, p, s] = token.split('.');
  const i = Math.floor(p.length / 2);
  const tampered = `${h}.${p.slice(0, i)}${p[i] === 'A' ? 'B' : 'A'}${p.slice(i + 1)}.${s}`;
  const err = await jose.jwtVerify(tampered, jwks, opts).then(() => null, (e) => e);
  check('tampered_rejected', err?.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', `got ${err ? err.code : 'a valid token'}`);

  const intro = await postForm(meta.introspection_endpoint, { token, token_type_hint: 'access_token' });
  check('introspect_active', intro.status === 200 && intro.body.active === true, `${intro.status} ${JSON.stringify(intro.body)}`);
  check('introspect_client_id', intro.body.client_id === env.CLIENT_ID, `client_id ${intro.body.client_id}`);

  const rev = await postForm(meta.revocation_endpoint, { token, token_type_hint: 'access_token' });
  check('revoke', rev.status === 200, `${rev.status} ${JSON.stringify(rev.body)}`);

  const after = await postForm(meta.introspection_endpoint, { token });
  check('introspect_after_revoke', after.status === 200 && after.body.active === false, `${after.status} ${JSON.stringify(after.body)}`);
}

let error;
try {
  await main();
} catch (e) {
  // A TLS failure shows up as "fetch failed" with the reason in e.cause.
  error = e.cause ? `${e.message} (${e.cause.code ?? e.cause.message})` : e.message;
  console.error(`jose_flow failed: ${error}`);
}
const ok = error === undefined;
console.log(JSON.stringify({ client: 'jose', ok, issuer: env.ISSUER, checks, ...(ok ? {} : { error }) }));
// Keep-alive sockets would hold the process open for several seconds.
process.exit(ok ? 0 : 1);
