#!/usr/bin/env bash
# Property-based API tests of the admin API with schemathesis, from the document the node serves.
#
#   BASE_URL=https://127.0.0.1:PORT ADMIN_TOKEN=<platform admin bearer> CA_FILE=<test CA> \
#   tests/clients/schemathesis.sh [extra schemathesis run options]
#
# Run it against a throwaway node: it creates, changes and deletes many resources.
# Exits with schemathesis's status (0: no issues; 1: failures). A JUnit report is written to
# SCHEMATHESIS_REPORT_DIR (default: a new temporary directory), named at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${BASE_URL:?set BASE_URL, e.g. https://127.0.0.1:8443}"
: "${ADMIN_TOKEN:?set ADMIN_TOKEN to a platform admin bearer token (valid 900 s)}"
: "${CA_FILE:?set CA_FILE to the test CA}"

tools="$(bash "$here/setup.sh")"
report_dir="${SCHEMATHESIS_REPORT_DIR:-$(mktemp -d -t gatehouse-schemathesis.XXXXXX)}"
color=(); [[ -t 1 ]] || color=(--no-color) # plain text in CI logs

# Run from the report dir with no example database, so every run starts from the seed alone
# and never replays failures that a cache in the working directory kept from older runs.
mkdir -p "$report_dir" && cd "$report_dir"
rc=0
# ensure_resource_availability is left out: a replay under an Idempotency-Key answers the first
# create again, also after the resource was deleted (the documented semantics), which that
# check reads as "created resource not found" whenever the generator reuses a key and body.
# --request-retries: a network failure only (never an HTTP answer) is retried, for a kept-alive
# connection the server closes as idle just as a request is sent on it.
# Every operation of the document, with a seed schemathesis picks (it prints it, so a failure
# can be replayed with --seed). SCHEMATHESIS_SEED pins one.
seed=(); [[ -n "${SCHEMATHESIS_SEED:-}" ]] && seed=(--seed "$SCHEMATHESIS_SEED")
"$tools/venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "${BASE_URL%/}/openapi.json" \
  --checks all --exclude-checks ensure_resource_availability \
  --max-examples 50 "${seed[@]}" --generation-database none \
  --request-retries 2 \
  -H "Authorization: Bearer $ADMIN_TOKEN" \
  --tls-verify "$CA_FILE" \
  --report junit --report-dir "$report_dir" \
  "${color[@]}" "$@" || rc=$?
echo "schemathesis exit status $rc; JUnit report in $report_dir"
exit "$rc"
