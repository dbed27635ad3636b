// Peer for benches/token_peer.sh: panva's oidc-provider as a client_credentials token endpoint
// that issues ES256-signed JWT access tokens over HTTPS, with the default in-memory adapter.
//
// Environment (all required except PEER_LISTEN_HOST):
//   PEER_TLS_KEY, PEER_TLS_CERT   PEM files of the server certificate
//   PEER_CLIENT_ID, PEER_CLIENT_SECRET
//   PEER_RESOURCE                 the audience of every token (the default resource indicator)
//   PEER_TOKEN_TTL_SECS           access token lifetime
//   PEER_LISTEN_HOST              default 127.0.0.1
//
// It listens on a free port, then prints one line `ready <issuer>` followed by one line of JSON
// with its effective configuration, both on stdout.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { createRequire } from 'node:module';

import Provider from 'oidc-provider';

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const host = process.env.PEER_LISTEN_HOST || '127.0.0.1';
const clientId = env('PEER_CLIENT_ID');
const clientSecret = env('PEER_CLIENT_SECRET');
const resource = env('PEER_RESOURCE');
const ttl = Number(env('PEER_TOKEN_TTL_SECS'));

// A fresh P-256 signing key per run; ES256 is the only signing key in the keystore.
const signingJwk = {
  ...crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
  kid: 'bench-es256',
  alg: 'ES256',
  use: 'sig',
};

const resourceServer = {
  scope: '',
  audience: resource,
  accessTokenTTL: ttl,
  accessTokenFormat: 'jwt',
  jwt: { sign: { alg: 'ES256' } },
};

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingJwk] },
  // Without an RS256 key the default id_token alg (RS256) would have nothing to sign with.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  // Only used to sign cookies, which the token endpoint never sets; set to silence the warning.
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    // With a default resource every client_credentials token is bound to one resource server, and
    // only then does accessTokenFormat 'jwt' apply; without it the token is opaque.
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== resource) throw new Provider.errors.InvalidTarget();
        return resourceServer;
      },
      useGrantedResource: async () => true,
    },
  },
  ttl: { ClientCredentials: ttl },
};

// The issuer must contain the port, so bind first and attach the provider afterwards; this is
// the same as https.createServer({ key, cert }, provider.callback()).
const server = https.createServer({
  key: fs.readFileSync(env('PEER_TLS_KEY')),
  cert: fs.readFileSync(env('PEER_TLS_CERT')),
});
server.listen(0, host, () => {
  const { port } = server.address();
  const issuer = `https://${host}:${port}`;
  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());

  const require = createRequire(import.meta.url);
  const effective = {
    issuer,
    node: process.version,
    'oidc-provider': require('oidc-provider/package.json').version,
    process: 'one Node.js process (single-threaded event loop)',
    adapter: 'default in-memory (LRU) adapter',
    tls: 'node:https, ECDSA P-256 certificate from a throwaway CA',
    client: { ...configuration.clients[0], client_secret: '(redacted)' },
    features: {
      clientCredentials: true,
      introspection: true,
      resourceIndicators: { defaultResource: resource, resourceServer },
    },
    signing_keys: [{ kty: signingJwk.kty, crv: signingJwk.crv, alg: signingJwk.alg, kid: signingJwk.kid }],
    ttl: configuration.ttl,
  };
  process.stdout.write(`ready ${issuer}\n${JSON.stringify(effective)}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
