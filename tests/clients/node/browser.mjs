// Headless Debian Chromium (playwright-core) that trusts exactly the node's certificate:
// Node verifies the certificate against the test CA for the URL's host first, then Chromium is
// told to accept only that certificate's key (--ignore-certificate-errors-spki-list), so any
// other certificate still fails in the browser. Shared by the browser tests here.

import crypto from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

// The server certificate's SPKI hash (base64 SHA-256, the form Chromium's flag takes), taken only
// after Node has verified the certificate against `caFile` for this host.
export function trustedSpkiHash(base, caFile) {
  const ca = fs.readFileSync(caFile);
  const port = Number(base.port || 443);
  return new Promise((resolve, reject) => {
    const host = base.hostname.replace(/^\[|\]$/g, '');
    const servername = /^[\d.]+$|:/.test(host) ? undefined : host; // no SNI for an IP address
    const sock = tls.connect({ host, port, ca, servername, ALPNProtocols: ['http/1.1'] }, () => {
      const peer = sock.getPeerX509Certificate();
      sock.end();
      const err = tls.checkServerIdentity(host, peer.toLegacyObject());
      if (err) return reject(err);
      const spki = peer.publicKey.export({ type: 'spki', format: 'der' });
      resolve(crypto.createHash('sha256').update(spki).digest('base64'));
    });
    sock.on('error', (e) => reject(new Error(`TLS to ${base.origin} with CA_FILE failed: ${e.code ?? e.message}`)));
  });
}

// Launches the browser trusting `base`'s certificate (checked against `caFile`), with `extraArgs`.
export async function launchTrusting(base, caFile, extraArgs = []) {
  const { chromium } = await import('playwright-core').catch((e) => {
    console.error(`cannot load playwright-core (${e.code}): run tests/clients/setup.sh first`);
    process.exit(2);
  });
  if (!fs.existsSync(CHROMIUM)) {
    console.error(`no browser at ${CHROMIUM}: run tests/clients/setup.sh (it installs the Debian package chromium)`);
    process.exit(2);
  }
  const spki = await trustedSpkiHash(base, caFile);
  console.log(`ok server certificate verified against CA_FILE (spki sha256 ${spki})`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-default-apps',
      '--disable-extensions',
      '--no-first-run',
      '--metrics-recording-only',
      `--ignore-certificate-errors-spki-list=${spki}`,
      ...extraArgs,
    ],
  });
}
