#!/usr/bin/env bash
# Token endpoint throughput and latency of Gatehouse against a peer, panva's npm `oidc-provider`,
# both on 127.0.0.1 over HTTPS, in one run on the same machine.
#
# Each server issues client_credentials access tokens as ES256-signed JWTs to one confidential
# client (client_secret_basic). oha drives each at concurrency 1, 16 and 64 for 10 s, peer and
# Gatehouse taking turns to go first; then Gatehouse's introspection endpoint runs at 64.
# Every response must be 2xx, or the script fails after printing the table.
#
# The two do different work per token: Gatehouse records and audits every token it issues in a
# durable raft write, while oidc-provider keeps nothing for a JWT access token (it only signs).
# The server CPU columns show how much of each run was CPU and how much waiting.
#
# Usage: benches/token_peer.sh
# Environment:
#   GATEHOUSE_BIN        the gatehouse binary (default ${CARGO_TARGET_DIR:-target}/release/gatehouse,
#                        built with `cargo build --release` when missing)
#   GATEHOUSE_TOOLS_DIR  cache for oha and the peer's node_modules (default /var/cache/gatehouse-tools)
#   BENCH_RESULTS_DIR    where the raw oha JSON, configs and report go
#                        (default ${TMPDIR:-/tmp}/gatehouse-bench/token_peer-<timestamp>)
#   BENCH_DURATION       length of each measured run (default 10s; shorter only for trying the script)
#
# Pinned tools, installed on first use: oha 1.16.0 (`cargo install`, about 10 min on 2 cores) and
# oidc-provider 9.13.3 from benches/peer/package-lock.json (`npm ci`). After that a run takes
# about 80 s.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${GATEHOUSE_TOOLS_DIR:-/var/cache/gatehouse-tools}"
DURATION="${BENCH_DURATION:-10s}"
WARMUP="2s"
LEVELS=(1 16 64)
INTROSPECT_C=64
RESOURCE="https://api.bench.test"
TOKEN_TTL=600 # Gatehouse's default access token lifetime; the peer is given the same
RESULTS="${BENCH_RESULTS_DIR:-${TMPDIR:-/tmp}/gatehouse-bench/token_peer-$(date +%Y%m%dT%H%M%S)}"

die() { echo "token_peer.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
[[ "$DURATION" =~ ^[0-9]+s$ ]] || die "BENCH_DURATION must be whole seconds such as 10s, not $DURATION"

need() { command -v "$1" >/dev/null || die "missing tool: $1 ($2)"; }
need node "runs the peer and reads JSON"
need npm "installs the peer"
need openssl "makes the peer's certificate"
need curl "sets up the Gatehouse client"
need timeout "bounds each load run (coreutils)"

# ---------------------------------------------------------------------------------------------
# Tools: oha and the peer's node_modules, cached outside the repository.
mkdir -p "$TOOLS"
OHA="$TOOLS/bin/oha"
if ! { [ -x "$OHA" ] && "$OHA" --version 2>/dev/null | grep -q ' 1\.16\.0$'; }; then
  command -v cargo >/dev/null || die "missing tool: cargo (needed once to install oha 1.16.0 into $TOOLS)"
  say "installing oha 1.16.0 into $TOOLS (about 10 minutes on 2 cores, once)"
  # One job, lowest priority and a target dir of its own: the build must not starve or lock
  # anything else being compiled on the machine.
  CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" CARGO_TARGET_DIR="$TOOLS/oha-build" \
    nice -n 19 cargo install oha --version 1.16.0 --locked --root "$TOOLS"
  rm -rf "$TOOLS/oha-build" # about 600 MB, of no use once the binary is installed
fi

# The cache entry is named after the lockfile's hash, so a changed lockfile gets a fresh install.
lock_hash="$(sha256sum "$REPO/benches/peer/package-lock.json" | cut -c1-16)"
PEER_MODULES="$TOOLS/oidc-provider-$lock_hash/node_modules"
if [ ! -f "$PEER_MODULES/oidc-provider/package.json" ]; then
  say "installing the peer (npm ci) into $TOOLS/oidc-provider-$lock_hash"
  staging="$(mktemp -d "$TOOLS/.oidc-provider-XXXXXX")"
  cp "$REPO/benches/peer/package.json" "$REPO/benches/peer/package-lock.json" "$staging/"
  (cd "$staging" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  rm -rf "$TOOLS/oidc-provider-$lock_hash"
  mv "$staging" "$TOOLS/oidc-provider-$lock_hash" # whole or not at all
fi

if [ -n "${GATEHOUSE_BIN:-}" ]; then
  BIN="$GATEHOUSE_BIN"
  [ -x "$BIN" ] || die "GATEHOUSE_BIN=$BIN is not an executable file"
else
  BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse"
  if [ ! -x "$BIN" ]; then
    command -v cargo >/dev/null || die "missing tool: cargo (no release binary at $BIN)"
    say "building the release binary"
    (cd "$REPO" && cargo build --release --locked)
  fi
fi

# ---------------------------------------------------------------------------------------------
# Scratch space and cleanup.
WORK="$(mktemp -d)"
mkdir -p "$RESULTS"
GH_PID="" PEER_PID=""
cleanup() {
  for pid in $PEER_PID $GH_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $PEER_PID $GH_PID; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Reads JSON on stdin and prints the value at a dotted path, e.g. `jget client_id`.
jget() { node -e '
  let v = JSON.parse(require("fs").readFileSync(0, "utf8"));
  for (const k of process.argv[1].split(".")) v = v?.[k];
  if (v === undefined) process.exit(1);
  process.stdout.write(typeof v === "string" ? v : JSON.stringify(v));' "$1"; }

# Prints the JOSE header and the claim names of a JWT (never the signature).
jwt_shape() { node -e '
  const [h, p] = process.argv[1].split(".").slice(0, 2).map((s) => JSON.parse(Buffer.from(s, "base64url")));
  process.stdout.write(JSON.stringify({ header: h, claims: Object.keys(p) }));' "$1"; }

# TLS version and cipher suite a client negotiates with HOST:PORT.
tls_shape() {
  openssl s_client -brief -connect "$1" -CAfile "$2" </dev/null 2>&1 |
    awk -F': ' '/^Protocol version|^Ciphersuite|^Verification/ {printf "%s%s", sep, $2; sep=", "}'
}

# CPU time a process has used so far, in clock ticks: user + system time of all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK="$(getconf CLK_TCK)"

# The gatehouse binary runs with no GATEHOUSE_* variables in its environment: Gatehouse reads
# every GATEHOUSE_* variable as a config key and refuses unknown ones, so this script's own
# GATEHOUSE_BIN and GATEHOUSE_TOOLS_DIR would stop it, and the run is meant to use the defaults.
# (A plain command rather than a function, so that `... &` gives the server's own PID.)
GH_ENV=(env)
for var in $(compgen -e); do [[ "$var" == GATEHOUSE_* ]] && GH_ENV+=(-u "$var"); done

hostport() { local u="${1#https://}"; echo "${u%%/*}"; }

# ---------------------------------------------------------------------------------------------
# Gatehouse: release binary, production defaults, fresh data dir.
GH_DATA="$WORK/gatehouse-data"
GH_ARGS=(--data-dir "$GH_DATA" serve --listen 127.0.0.1:0 --set log.level=warn)
say "starting Gatehouse ($BIN)"
"${GH_ENV[@]}" "$BIN" "${GH_ARGS[@]}" >"$WORK/gatehouse.out" 2>"$WORK/gatehouse.err" &
GH_PID=$!
for _ in $(seq 300); do
  grep -q '^  issuer:' "$WORK/gatehouse.out" 2>/dev/null && break
  kill -0 "$GH_PID" 2>/dev/null || { cat "$WORK/gatehouse.err" >&2; die "Gatehouse exited during startup"; }
  sleep 0.1
done
GH_URL="$(awk '/^  issuer:/ {print $2; exit}' "$WORK/gatehouse.out")"
[ -n "$GH_URL" ] || { cat "$WORK/gatehouse.err" >&2; die "Gatehouse did not print its issuer within 30 s"; }
GH_CA="$GH_DATA/tls/ca.pem"

ADMIN_TOKEN="$("${GH_ENV[@]}" "$BIN" --data-dir "$GH_DATA" admin token)"
curl -fsS --cacert "$GH_CA" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"name\":\"bench\",\"client_type\":\"confidential\",\"grant_types\":[\"client_credentials\"],\"audiences\":[\"$RESOURCE\"]}" \
  "$GH_URL/admin/v1/tenants/default/clients" >"$WORK/gatehouse-client.json" ||
  die "creating the Gatehouse client failed"
GH_ID="$(jget client_id <"$WORK/gatehouse-client.json")"
GH_SECRET="$(jget client_secret <"$WORK/gatehouse-client.json")"

# ---------------------------------------------------------------------------------------------
# Peer: throwaway CA and P-256 server certificate (the same key type as Gatehouse's), then
# oidc-provider in one Node process.
PKI="$WORK/peer-pki"
mkdir -p "$PKI"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=token_peer bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
  -keyout "$PKI/ca.key" -out "$PKI/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$PKI/server.key" -out "$PKI/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$PKI/ext.cnf"
openssl x509 -req -days 1 -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
  -extfile "$PKI/ext.cnf" -out "$PKI/server.pem" 2>/dev/null
PEER_CA="$PKI/ca.pem"

# Node resolves `import 'oidc-provider'` from the script's own directory, not from NODE_PATH, so
# the script runs from a scratch copy next to a symlink to the cached node_modules.
mkdir -p "$WORK/peer"
cp "$REPO/benches/peer/provider.mjs" "$WORK/peer/"
ln -s "$PEER_MODULES" "$WORK/peer/node_modules"
PEER_ID="bench"
PEER_SECRET="$(openssl rand -hex 24)"
say "starting the peer (oidc-provider)"
PEER_TLS_KEY="$PKI/server.key" PEER_TLS_CERT="$PKI/server.pem" PEER_CLIENT_ID="$PEER_ID" \
  PEER_CLIENT_SECRET="$PEER_SECRET" PEER_RESOURCE="$RESOURCE" PEER_TOKEN_TTL_SECS="$TOKEN_TTL" \
  node "$WORK/peer/provider.mjs" >"$WORK/peer.out" 2>"$WORK/peer.err" &
PEER_PID=$!
for _ in $(seq 300); do
  grep -q '^ready ' "$WORK/peer.out" 2>/dev/null && break
  kill -0 "$PEER_PID" 2>/dev/null || { cat "$WORK/peer.err" >&2; die "the peer exited during startup"; }
  sleep 0.1
done
PEER_URL="$(awk '/^ready / {print $2; exit}' "$WORK/peer.out")"
[ -n "$PEER_URL" ] || { cat "$WORK/peer.err" >&2; die "the peer did not start within 30 s"; }

# ---------------------------------------------------------------------------------------------
# One token from each by curl: both must answer with an ES256 JWT before anything is measured.
GH_TOKEN_URL="$GH_URL/oauth2/token"
PEER_TOKEN_URL="$PEER_URL/token" # oidc-provider's default route; see its discovery document
GH_AT="$(curl -fsS --cacert "$GH_CA" -u "$GH_ID:$GH_SECRET" -d grant_type=client_credentials "$GH_TOKEN_URL" | jget access_token)" ||
  die "Gatehouse did not issue a token"
PEER_AT="$(curl -fsS --cacert "$PEER_CA" -u "$PEER_ID:$PEER_SECRET" -d grant_type=client_credentials "$PEER_TOKEN_URL" | jget access_token)" ||
  die "the peer did not issue a token"
GH_SHAPE="$(jwt_shape "$GH_AT")"
PEER_SHAPE="$(jwt_shape "$PEER_AT")"
for shape in "$GH_SHAPE" "$PEER_SHAPE"; do
  [ "$(jget header.alg <<<"$shape")" = ES256 ] || die "not an ES256 JWT: $shape"
done
# Introspection of a token the server does not know still answers 200 (active:false), so check
# that this one is active or the run would measure the wrong path.
GH_INTROSPECT_URL="$GH_URL/oauth2/introspect"
[ "$(curl -fsS --cacert "$GH_CA" -u "$GH_ID:$GH_SECRET" -d "token=$GH_AT" "$GH_INTROSPECT_URL" | jget active)" = true ] ||
  die "Gatehouse introspection does not report the token as active"

# ---------------------------------------------------------------------------------------------
# Effective configuration of both servers, kept with the results and quoted in the report.
CFG_GH_VERSION="$("${GH_ENV[@]}" "$BIN" --version)" CFG_GH_COMMAND="$BIN ${GH_ARGS[*]}" \
  CFG_GH_BANNER="$(cat "$WORK/gatehouse.out")" CFG_GH_CLIENT="$(cat "$WORK/gatehouse-client.json")" \
  CFG_GH_TLS="$(tls_shape "$(hostport "$GH_URL")" "$GH_CA")" CFG_GH_TOKEN="$GH_SHAPE" \
  CFG_PEER="$(sed -n 2p "$WORK/peer.out")" CFG_PEER_TLS="$(tls_shape "$(hostport "$PEER_URL")" "$PEER_CA")" \
  CFG_PEER_TOKEN="$PEER_SHAPE" CFG_OHA="$("$OHA" --version)" CFG_DURATION="$DURATION" \
  node -e '
    const os = require("os");
    const e = process.env;
    const client = JSON.parse(e.CFG_GH_CLIENT);
    delete client.client_secret;
    const config = {
      machine: { cpus: os.cpus().length, cpu: os.cpus()[0].model, kernel: os.release() },
      load: { tool: e.CFG_OHA, duration: e.CFG_DURATION, http: "HTTP/1.1, keep-alive, one connection per concurrent worker" },
      gatehouse: {
        version: e.CFG_GH_VERSION,
        command: e.CFG_GH_COMMAND,
        config: "defaults (packaging/gatehouse.example.toml) except listen and log.level: public URL derived from the bound port, KEK from the data dir, one node, durable raft log, every issued token recorded and audited",
        banner: e.CFG_GH_BANNER.split("\n").filter((l) => /^  (issuer|CA certificate|listening on):/.test(l)).map((l) => l.trim()),
        client,
        tls_negotiated: e.CFG_GH_TLS,
        access_token: JSON.parse(e.CFG_GH_TOKEN),
      },
      peer: { ...JSON.parse(e.CFG_PEER), tls_negotiated: e.CFG_PEER_TLS, access_token: JSON.parse(e.CFG_PEER_TOKEN) },
    };
    process.stdout.write(JSON.stringify(config, null, 2) + "\n");
  ' >"$RESULTS/config.json"

# ---------------------------------------------------------------------------------------------
# The runs.
SUMMARY="$RESULTS/summary.tsv"
printf 'target\tendpoint\tconcurrency\trps\tp50_ms\tp99_ms\tsuccess\tok\tcount\tcpu_s\twall_s\tproblems\n' >"$SUMMARY"

# bench NAME TARGET ENDPOINT PID CONCURRENCY DURATION URL CA ID:SECRET BODY [record]
# Runs oha, keeps its JSON as $RESULTS/NAME.json and, with `record`, adds a line to the summary.
bench() {
  local name=$1 target=$2 endpoint=$3 pid=$4 c=$5 dur=$6 url=$7 ca=$8 auth=$9 body=${10} record=${11:-}
  kill -0 "$pid" 2>/dev/null || die "$target is no longer running (before $name)"
  say "$name: $target $endpoint, concurrency $c, $dur"
  local ticks0 ticks1
  ticks0="$(cpu_ticks "$pid")"
  # The hard limit only matters if oha hangs; oha itself stops at the deadline. --foreground
  # keeps oha in this terminal's process group, so Ctrl-C reaches it at once.
  timeout --foreground --kill-after=5 $((${dur%s} + 30)) \
    "$OHA" -z "$dur" -c "$c" --no-tui --output-format json --cacert "$ca" \
    -m POST -a "$auth" -T application/x-www-form-urlencoded -d "$body" "$url" >"$RESULTS/$name.json" ||
    die "oha failed or hung for $name"
  ticks1="$(cpu_ticks "$pid")"
  kill -0 "$pid" 2>/dev/null || die "$target exited during $name"
  [ -n "$record" ] || return 0
  # oha's own successRate counts any HTTP answer (even a 500) as a success, and its requestsPerSec
  # counts failures and the requests cut off at the deadline; recompute both from the 2xx count.
  node -e '
    const [file, target, endpoint, c, cpu] = process.argv.slice(1);
    const r = JSON.parse(require("fs").readFileSync(file, "utf8"));
    const codes = r.statusCodeDistribution || {};
    const errors = r.errorDistribution || {};
    const sum = (o, keep) => Object.entries(o).filter(([k]) => keep(k)).reduce((a, [, v]) => a + v, 0);
    const ok = sum(codes, (k) => +k >= 200 && +k < 300);
    const failed = sum(codes, (k) => !(+k >= 200 && +k < 300));
    // Requests still in flight at the deadline are cut off by oha, not failed by the server.
    const errored = sum(errors, (k) => k !== "aborted due to deadline");
    const count = ok + failed + errored;
    const problems = [
      ...Object.entries(codes).filter(([k]) => !(+k >= 200 && +k < 300)).map(([k, v]) => `HTTP ${k} x${v}`),
      ...Object.entries(errors).filter(([k]) => k !== "aborted due to deadline").map(([k, v]) => `${k} x${v}`),
    ].join("; ") || "-";
    const wall = r.summary.total;
    const row = [target, endpoint, c, (ok / wall).toFixed(1), r.metrics.latency_ms.p50.toFixed(2),
      r.metrics.latency_ms.p99.toFixed(2),
      // Rounded down, so that 99.999 % does not show as 100.
      ok === count && count > 0 ? "100" : count ? (Math.floor(10000 * ok / count) / 100).toFixed(2) : "0", ok, count,
      cpu, wall.toFixed(3), problems];
    process.stdout.write(row.join("\t") + "\n");
  ' "$RESULTS/$name.json" "$target" "$endpoint" "$c" "$(awk -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')" >>"$SUMMARY"
}

FORM='grant_type=client_credentials'
peer_token() { bench "$1" peer token "$PEER_PID" "$2" "$3" "$PEER_TOKEN_URL" "$PEER_CA" "$PEER_ID:$PEER_SECRET" "$FORM" "${4:-}"; }
gh_token() { bench "$1" gatehouse token "$GH_PID" "$2" "$3" "$GH_TOKEN_URL" "$GH_CA" "$GH_ID:$GH_SECRET" "$FORM" "${4:-}"; }

# The machine's load average before and after, in the report: other work on the machine (a
# compile, say) shows up here, and hits Gatehouse's durable writes harder than the in-memory peer.
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# Warm-up, not reported: Node's JIT and both servers' first connections.
peer_token warmup-peer 16 "$WARMUP"
gh_token warmup-gatehouse 16 "$WARMUP"

# Peer and Gatehouse take turns to go first, so drift on the shared machine hits both.
turn=0
for c in "${LEVELS[@]}"; do
  if ((turn % 2 == 0)); then
    peer_token "token-peer-c$c" "$c" "$DURATION" record
    gh_token "token-gatehouse-c$c" "$c" "$DURATION" record
  else
    gh_token "token-gatehouse-c$c" "$c" "$DURATION" record
    peer_token "token-peer-c$c" "$c" "$DURATION" record
  fi
  turn=$((turn + 1))
done
bench "introspect-gatehouse-c$INTROSPECT_C" gatehouse introspect "$GH_PID" "$INTROSPECT_C" "$DURATION" \
  "$GH_INTROSPECT_URL" "$GH_CA" "$GH_ID:$GH_SECRET" "token=$GH_AT" record

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------------
# Report: markdown on stdout and in the results dir; fails when any response was not 2xx.
LOAD_BEFORE="$LOAD_BEFORE" LOAD_AFTER="$LOAD_AFTER" node -e '
  const fs = require("fs");
  const [summaryFile, configFile, resultsDir] = process.argv.slice(1);
  const [head, ...lines] = fs.readFileSync(summaryFile, "utf8").trim().split("\n");
  const keys = head.split("\t");
  const rows = lines.map((l) => Object.fromEntries(l.split("\t").map((v, i) => [keys[i], v])));
  const cfg = JSON.parse(fs.readFileSync(configFile, "utf8"));
  const peerRps = (c) => Number(rows.find((r) => r.target === "peer" && r.concurrency === c)?.rps);
  const out = [];
  out.push("| target | endpoint | concurrency | requests/s (2xx) | p50 ms | p99 ms | success | Gatehouse/peer | server CPU (cores) | server CPU µs/req |");
  out.push("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  const order = (r) => (r.endpoint === "token" ? 0 : 1) * 1e6 + Number(r.concurrency) * 10 + (r.target === "peer" ? 0 : 1);
  for (const r of [...rows].sort((a, b) => order(a) - order(b))) {
    const ratio = r.target === "gatehouse" && r.endpoint === "token" && peerRps(r.concurrency) > 0
      ? (Number(r.rps) / peerRps(r.concurrency)).toFixed(2) + "×" : "";
    const cores = (Number(r.cpu_s) / Number(r.wall_s)).toFixed(2);
    const perReq = Number(r.ok) ? (1e6 * Number(r.cpu_s) / Number(r.ok)).toFixed(0) : "";
    out.push(`| ${r.target} | ${r.endpoint} | ${r.concurrency} | ${r.rps} | ${r.p50_ms} | ${r.p99_ms} | ${r.success} % | ${ratio} | ${cores} | ${perReq} |`);
  }
  const g = cfg.gatehouse, p = cfg.peer;
  out.push("", "Effective configuration:");
  out.push(`- machine: ${cfg.machine.cpus} CPUs (${cfg.machine.cpu}), shared by the load tool and the server under test, load average ${process.env.LOAD_BEFORE} before the runs and ${process.env.LOAD_AFTER} after; ${cfg.load.tool}, ${cfg.load.http}, ${cfg.load.duration} per run`);
  out.push(`- Gatehouse (${g.version}): \`${g.command}\`; ${g.config}; client ${g.client.token_endpoint_auth_method}, token lifetime ${g.client.access_token_lifetime_secs} s; TLS ${g.tls_negotiated}; token header ${JSON.stringify(g.access_token.header)}, claims ${g.access_token.claims.join(",")}`);
  out.push(`- peer oidc-provider ${p["oidc-provider"]} on Node ${p.node}: ${p.process}, ${p.adapter}; client ${p.client.token_endpoint_auth_method}; resource ${p.features.resourceIndicators.defaultResource} with accessTokenFormat ${p.features.resourceIndicators.resourceServer.accessTokenFormat}, TTL ${p.ttl.ClientCredentials} s; TLS ${p.tls_negotiated}; token header ${JSON.stringify(p.access_token.header)}, claims ${p.access_token.claims.join(",")}`);
  out.push(`- raw oha JSON, summary.tsv and config.json: ${resultsDir}`);
  const bad = rows.filter((r) => r.ok !== r.count || Number(r.ok) === 0);
  if (bad.length) {
    out.push("", "FAILED: not every response was 2xx:");
    for (const r of bad) out.push(`- ${r.target} ${r.endpoint} c=${r.concurrency}: ${r.success} % (${r.ok}/${r.count}); ${r.problems}`);
  }
  const text = out.join("\n") + "\n";
  fs.writeFileSync(resultsDir + "/report.md", text);
  process.stdout.write(text);
  process.exit(bad.length ? 1 : 0);
' "$SUMMARY" "$RESULTS/config.json" "$RESULTS" || die "some responses were not 2xx (see the table above)"
