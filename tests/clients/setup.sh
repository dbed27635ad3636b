#!/usr/bin/env bash
# Installs the pinned third-party clients used by tests/clients/ into a cache directory outside
# the clone: a Python venv (python/requirements.txt) and Node packages (node/package-lock.json);
# also Debian's chromium (apt-get, as root) when /usr/bin/chromium is missing.
# The install is keyed by a hash of the pin files and the interpreter versions, so changing a
# pin installs afresh; an install that is already complete is reused at once.
#
# Usage: tests/clients/setup.sh            (GATEHOUSE_TOOLS_DIR overrides the cache root)
# Prints what it did on stderr and the install directory alone on stdout, so other scripts
# can run `tools=$(tests/clients/setup.sh)`.
#
# CA trust: pip and npm use the machine's preset CA variables (the system bundle). This script
# leaves them, and the machine's CA store, alone; each client test points only its own client
# process at the test CA.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log() { echo "setup: $*" >&2; }

missing=()
for tool in python3 npm node flock sha256sum; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "setup: missing tool(s): ${missing[*]} (install them, e.g. apt-get install python3-venv nodejs npm)" >&2
  exit 1
fi

root="${GATEHOUSE_TOOLS_DIR:-/var/cache/gatehouse-tools}"
mkdir -p "$root"

# node/docs_viewer.mjs drives Debian's Chromium through playwright-core (which downloads no
# browser of its own). Installed once per machine, under a lock so parallel callers wait.
chromium=/usr/bin/chromium
if [[ ! -x "$chromium" ]]; then
  exec 8>"$root/chromium.lock"
  flock 8
  if [[ ! -x "$chromium" ]]; then
    log "installing Debian package chromium (for $chromium)"
    if ! command -v apt-get >/dev/null || ((EUID != 0)); then
      echo "setup: $chromium is missing and cannot be installed here (needs root and apt-get): install the Debian package chromium" >&2
      exit 1
    fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2 || [[ ! -x "$chromium" ]]; then
      echo "setup: apt-get install -y chromium failed: install the Debian package chromium (it provides $chromium)" >&2
      exit 1
    fi
  fi
  exec 8>&-
fi
key="$({
  cat "$here/python/requirements.txt" "$here/node/package.json" "$here/node/package-lock.json"
  python3 -c 'import sys; print(sys.version)'
  node --version
} | sha256sum | cut -c1-16)"
dest="$root/$key"

# One installer at a time per key; a second caller waits, then finds the install complete.
exec 9>"$root/$key.lock"
flock 9

if [[ ! -f "$dest/.complete" ]]; then
  # A venv cannot be moved once built, so it is built in place; an install that was cut
  # short has no .complete marker and is redone from scratch.
  rm -rf "$dest"
  mkdir -p "$dest/node"
  start=$SECONDS
  log "installing into $dest"
  python3 -m venv "$dest/venv" || { echo "setup: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$dest/venv/bin/pip" install --quiet --require-virtualenv -r "$here/python/requirements.txt"
  cp "$here/node/package.json" "$here/node/package-lock.json" "$dest/node/"
  (cd "$dest/node" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  touch "$dest/.complete"
  log "installed in $((SECONDS - start)) s"
fi

# Node resolves ES-module imports from the importing file's directory upwards (NODE_PATH does
# not apply), so the scripts in node/ find their packages through this git-ignored link.
link="$here/node/node_modules"
if [[ -L "$link" || ! -e "$link" ]]; then
  ln -sfn "$dest/node/node_modules" "$link"
else
  log "warning: $link is a real directory, left as it is (remove it to use the pinned install)"
fi

log "python venv:   $dest/venv (bin: schemathesis, openapi-python-client, ruff, python with httpx)"
log "node packages: $dest/node/node_modules (linked from $link)"
log "browser:       $chromium ($("$chromium" --version 2>/dev/null || echo 'version unknown'))"
echo "$dest"
