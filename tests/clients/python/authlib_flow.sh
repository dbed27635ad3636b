#!/usr/bin/env bash
# Runs authlib_flow.py with the pinned venv (setup.sh), trusting only the test CA.
#
#   ISSUER=… CLIENT_ID=… CLIENT_SECRET=… REDIRECT_URI=… EMAIL=… PASSWORD=… CA_FILE=<test CA> \
#   tests/clients/python/authlib_flow.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${CA_FILE:?set CA_FILE to the test CA}"
tools="$(bash "$here/../setup.sh")"
# requests reads REQUESTS_CA_BUNDLE over any session setting: point it at the test CA alone.
REQUESTS_CA_BUNDLE="$CA_FILE" "$tools/venv/bin/python" "$here/authlib_flow.py"
