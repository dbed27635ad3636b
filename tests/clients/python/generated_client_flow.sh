#!/usr/bin/env bash
# Generates a Python client from openapi/gatehouse.json with openapi-python-client and drives the
# admin API with it (generated_client_flow.py).
#
#   BASE_URL=https://127.0.0.1:PORT ADMIN_TOKEN=<platform admin bearer> CA_FILE=<test CA> \
#   tests/clients/python/generated_client_flow.sh
#
# SSL_CERT_FILE=<test CA> works in place of CA_FILE. The CA is given to the Python process only:
# the installer run by setup.sh keeps the machine's preset bundle. OPENAPI_FILE overrides the
# document (default: the committed openapi/gatehouse.json), e.g. to match an older binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${BASE_URL:?set BASE_URL, e.g. https://127.0.0.1:8443}"
: "${ADMIN_TOKEN:?set ADMIN_TOKEN to a platform admin bearer token}"
ca="${CA_FILE:-${SSL_CERT_FILE:?set CA_FILE (or SSL_CERT_FILE) to the test CA}}"

tools="$(bash "$here/../setup.sh")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp "${OPENAPI_FILE:-$here/../../../openapi/gatehouse.json}" "$work/gatehouse.json"
# The venv's bin goes on PATH for the post-generation `ruff` hook. --fail-on-warning makes any
# construct in the document that the generator cannot map a failure.
PATH="$tools/venv/bin:$PATH" openapi-python-client generate --path "$work/gatehouse.json" \
  --output-path "$work/gen" --meta setup --overwrite --fail-on-warning >/dev/null

# The generated package is used from PYTHONPATH, never pip-installed.
SSL_CERT_FILE="$ca" PYTHONPATH="$work/gen" "$tools/venv/bin/python" "$here/generated_client_flow.py"
