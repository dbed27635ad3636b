#!/usr/bin/env bash
# Generates TypeScript types from the OpenAPI document with openapi-typescript, type-checks
# ts_client_flow.ts against them (`tsc --noEmit --strict`; any type error fails), then compiles it
# and runs it with node: an openapi-fetch `createClient<paths>` drives the admin API.
#
#   BASE_URL=https://127.0.0.1:PORT ADMIN_TOKEN=<platform admin bearer> CA_FILE=<test CA> \
#   tests/clients/node/ts_client_flow.sh
#
# NODE_EXTRA_CA_CERTS=<test CA> works in place of CA_FILE. The CA is given to the client process
# only: the installer run by setup.sh keeps the machine's preset bundle. OPENAPI_FILE overrides
# the document (default: the committed openapi/gatehouse.json), e.g. the one a node serves.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${BASE_URL:?set BASE_URL, e.g. https://127.0.0.1:8443}"
: "${ADMIN_TOKEN:?set ADMIN_TOKEN to a platform admin bearer token}"
ca="${CA_FILE:-${NODE_EXTRA_CA_CERTS:?set CA_FILE (or NODE_EXTRA_CA_CERTS) to the test CA}}"
doc="${OPENAPI_FILE:-$here/../../../openapi/gatehouse.json}"
[[ -f "$doc" ]] || { echo "ts_client_flow: no OpenAPI document at $doc" >&2; exit 2; }

tools="$(bash "$here/../setup.sh")"
bin="$tools/node/node_modules/.bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp "$doc" "$work/gatehouse.json"
cp "$here/ts_client_flow.ts" "$work/"
# Node and tsc resolve packages from the importing file's directory upwards.
ln -s "$tools/node/node_modules" "$work/node_modules"
echo '{"type": "module"}' >"$work/package.json"
cat >"$work/tsconfig.json" <<'JSON'
{
  "compilerOptions": {
    "target": "ES2022",
    "module": "ES2022",
    "moduleResolution": "Bundler",
    "lib": ["ES2022"],
    "types": ["node"],
    "strict": true,
    "noUncheckedIndexedAccess": true,
    "outDir": "out"
  },
  "files": ["ts_client_flow.ts", "schema.d.ts"]
}
JSON

# Without --default-non-nullable false, properties with a default become required in request bodies.
"$bin/openapi-typescript" "$work/gatehouse.json" -o "$work/schema.d.ts" --default-non-nullable false >&2 \
  || { echo "ts_client_flow: openapi-typescript could not generate types from $doc" >&2; exit 1; }
echo "ok openapi-typescript generated schema.d.ts ($(wc -l <"$work/schema.d.ts") lines)"

(cd "$work" && "$bin/tsc" --noEmit --strict -p tsconfig.json) \
  || { echo "ts_client_flow: tsc --noEmit --strict found type errors (above) in ts_client_flow.ts against $doc" >&2; exit 1; }
echo "ok tsc --noEmit --strict: no type error"
(cd "$work" && "$bin/tsc" --strict -p tsconfig.json) \
  || { echo "ts_client_flow: tsc could not compile ts_client_flow.ts" >&2; exit 1; }

NODE_EXTRA_CA_CERTS="$ca" BASE_URL="$BASE_URL" ADMIN_TOKEN="$ADMIN_TOKEN" OPENAPI_FILE="$work/gatehouse.json" \
  node "$work/out/ts_client_flow.js"
