#!/usr/bin/env bash
# Replicated writes and failover of a three-node Gatehouse cluster on 127.0.0.1, beside one
# node, in one run on the same machine: release binary, production defaults (TLS on both
# ports, durable raft log on every node, every change audited), peers over mutual TLS.
#
# 0. The engine: `cluster bench` on the single node and on the cluster's leader, at
#    concurrency 1, 16 and 64 for BENCH_DURATION: writers inside the node's process propose
#    probe entries (they change no state) through raft, each acknowledged once a quorum has it
#    on disk and the node applied it; no HTTP, no JSON bodies, no audit entries.
# 1. Admin-API writes over HTTPS (POST an organization, one raft entry each) at concurrency
#    1, 16 and 64 for BENCH_DURATION: on the single node, on the cluster's leader and through a
#    follower (which forwards to the leader and answers once it applied the write itself).
# 2. The token endpoint at concurrency 64 (each batch of audited tokens committed by a quorum)
#    on the single node, the leader and a follower.
# 3. Failover, BENCH_KILLS times: a writer sends one write after another to a follower; the
#    leader is SIGKILLed; the time from the kill to the acknowledgement of the first write sent
#    after it is recorded (curl per write: about 10 ms of resolution);
#    the killed node is restarted and the cluster waits for it before the next kill.
#
# Usage: benches/cluster.sh
# Environment:
#   GATEHOUSE_BIN        the gatehouse binary (default ${CARGO_TARGET_DIR:-target}/release/gatehouse)
#   GATEHOUSE_TOOLS_DIR  where oha 1.16.0 is cached (default /var/cache/gatehouse-tools; see token_peer.sh)
#   BENCH_RESULTS_DIR    where the raw oha JSON and the report go
#   BENCH_DURATION       length of each load run (default 10s)
#   BENCH_KILLS          leader kills in the failover part (default 20)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${GATEHOUSE_TOOLS_DIR:-/var/cache/gatehouse-tools}"
DURATION="${BENCH_DURATION:-10s}"
KILLS="${BENCH_KILLS:-20}"
RESULTS="${BENCH_RESULTS_DIR:-${TMPDIR:-/tmp}/gatehouse-bench/cluster-$(date +%Y%m%dT%H%M%S)}"
RESOURCE="https://api.bench.test"

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
[[ "$DURATION" =~ ^[0-9]+s$ ]] || die "BENCH_DURATION must be whole seconds such as 10s"
for tool in node curl timeout; do command -v "$tool" >/dev/null || die "missing tool: $tool"; done
OHA="$TOOLS/bin/oha"
[ -x "$OHA" ] || die "missing tool: oha 1.16.0 in $TOOLS/bin (benches/token_peer.sh installs it)"
BIN="${GATEHOUSE_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse}"
[ -x "$BIN" ] || die "no gatehouse binary at $BIN (cargo build --release)"

WORK="$(mktemp -d)"
mkdir -p "$RESULTS"
declare -A PID
cleanup() {
  for p in "${PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

GH_ENV=(env)
for var in $(compgen -e); do [[ "$var" == GATEHOUSE_* ]] && GH_ENV+=(-u "$var"); done
jget() { node -e '
  let v = JSON.parse(require("fs").readFileSync(0, "utf8"));
  for (const k of process.argv[1].split(".")) v = v?.[k];
  if (v === undefined) process.exit(1);
  process.stdout.write(typeof v === "string" ? v : JSON.stringify(v));' "$1"; }
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
now_ns() { date +%s%N; }

declare -A CPORT URL
gh() { "${GH_ENV[@]}" "$BIN" --data-dir "$WORK/$1" "${@:2}"; }

# start NAME [ARGS...]: serves (or joins, with ARGS) on a free port and waits for the banner.
start() {
  local name=$1
  shift
  [ -n "${CPORT[$name]:-}" ] || CPORT[$name]="$(free_port)"
  local cmd=(serve)
  [ $# -gt 0 ] && cmd=("$@")
  "${GH_ENV[@]}" GATEHOUSE_CLUSTER__LISTEN="127.0.0.1:${CPORT[$name]}" GATEHOUSE_MANAGEMENT__LISTEN=127.0.0.1:0 \
    "$BIN" --data-dir "$WORK/$name" "${cmd[@]}" --listen 127.0.0.1:0 --set log.level=error \
    >"$WORK/$name.out" 2>>"$WORK/$name.err" &
  PID[$name]=$!
  : >"$WORK/$name.out.seen"
  for _ in $(seq 600); do
    grep -q '^  issuer:' "$WORK/$name.out" 2>/dev/null && break
    kill -0 "${PID[$name]}" 2>/dev/null || { cat "$WORK/$name.err" >&2; die "$name exited during startup"; }
    sleep 0.05
  done
  URL[$name]="$(awk '/^  issuer:/ {print $2; exit}' "$WORK/$name.out")"
  [ -n "${URL[$name]}" ] || die "$name printed no issuer"
}

leader_name() {
  local id
  id="$(gh n1 cluster status --json 2>/dev/null | jget leader || gh n2 cluster status --json 2>/dev/null | jget leader ||
    gh n3 cluster status --json | jget leader)"
  for n in n1 n2 n3; do
    [ "$(cat "$WORK/$n/node.id")" = "$id" ] && { echo "$n"; return; }
  done
  die "no member has the leader's id $id"
}

# Waits until every member reports three voters and the same leader and term.
wait_agreement() {
  for _ in $(seq 300); do
    local views="" ok=1
    for n in n1 n2 n3; do
      local s
      s="$(gh "$n" cluster status --json 2>/dev/null)" || { ok=0; break; }
      local voters
      voters="$(jget members <<<"$s" | node -e 'const m=JSON.parse(require("fs").readFileSync(0));console.log(m.filter(x=>x.role=="voter"&&x.lag!==null&&x.lag<64).length)')"
      [ "$voters" = 3 ] || { ok=0; break; }
      views+="$(jget leader <<<"$s")/$(jget term <<<"$s") "
    done
    [ $ok = 1 ] && [ "$(tr ' ' '\n' <<<"$views" | sort -u | grep -c .)" = 1 ] && return
    sleep 0.2
  done
  die "the members did not agree on three voters within 60 s"
}

say "forming three nodes and one single node ($BIN)"
start single
start n1
gh n1 cluster init >/dev/null
start n2 cluster join --token "$(gh n1 cluster join-token)" --peer "${URL[n1]}"
start n3 cluster join --token "$(gh n1 cluster join-token)" --peer "${URL[n1]}"
wait_agreement
LEADER="$(leader_name)"
FOLLOWER=n1
[ "$LEADER" = n1 ] && FOLLOWER=n2

# ---------------------------------------------------------------------------------------------
ENGINE="$RESULTS/engine.tsv"
printf 'target\tconcurrency\twrites_per_s\tp50_us\tp99_us\tfailed\n' >"$ENGINE"
for target in single leader; do
  n=single
  [ "$target" = leader ] && n=$LEADER
  for c in 1 16 64; do
    say "engine: $target, concurrency $c, $DURATION"
    r="$(gh "$n" cluster bench --concurrency "$c" --seconds "${DURATION%s}")" || die "cluster bench failed on $n"
    echo "$r" >"$RESULTS/engine-$target-c$c.json"
    printf '%s\t%s\t%.0f\t%s\t%s\t%s\n' "$target" "$c" "$(jget per_second <<<"$r")" "$(jget p50_us <<<"$r")" \
      "$(jget p99_us <<<"$r")" "$(jget failed <<<"$r")" >>"$ENGINE"
  done
done
column -t -s $'\t' "$ENGINE"

SUMMARY="$RESULTS/summary.tsv"
printf 'target\tendpoint\tconcurrency\trps\tp50_ms\tp99_ms\tsuccess\n' >"$SUMMARY"
run() { # run NAME TARGET ENDPOINT C URL CA HEADER BODY CONTENT_TYPE
  local name=$1 target=$2 endpoint=$3 c=$4 url=$5 ca=$6 header=$7 body=$8 ctype=$9
  say "$name: $target $endpoint, concurrency $c, $DURATION"
  timeout --kill-after=5 $((${DURATION%s} + 30)) "$OHA" -z "$DURATION" -c "$c" --no-tui --output-format json \
    --cacert "$ca" -m POST -H "$header" -T "$ctype" -d "$body" "$url" >"$RESULTS/$name.json" || die "oha failed for $name"
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1]));
    const s = r.summary, p = r.latencyPercentiles, codes = r.statusCodeDistribution || {};
    const ok = Object.entries(codes).filter(([k]) => k.startsWith("2")).reduce((a, [, v]) => a + v, 0);
    const all = Object.values(codes).reduce((a, v) => a + v, 0);
    console.log([process.argv[2], process.argv[3], process.argv[4], (ok / s.total).toFixed(0),
      (p.p50 * 1000).toFixed(2), (p.p99 * 1000).toFixed(2), all ? (ok / all).toFixed(4) : "0"].join("\t"));
  ' "$RESULTS/$name.json" "$target" "$endpoint" "$c" >>"$SUMMARY"
}

for target in single leader follower; do
  case $target in single) n=single ;; leader) n=$LEADER ;; follower) n=$FOLLOWER ;; esac
  token="$(gh "$n" admin token)"
  for c in 1 16 64; do
    run "orgs-$target-c$c" "$target" "POST organizations" "$c" "${URL[$n]}/admin/v1/tenants/default/organizations" \
      "$WORK/$n/tls/ca.pem" "Authorization: Bearer $token" '{"name":"bench"}' application/json
  done
done

client="$(curl -fsS --cacert "$WORK/n1/tls/ca.pem" -H "Authorization: Bearer $(gh n1 admin token)" -H 'Content-Type: application/json' \
  -d "{\"name\":\"bench\",\"client_type\":\"confidential\",\"grant_types\":[\"client_credentials\"],\"audiences\":[\"$RESOURCE\"]}" \
  "${URL[n1]}/admin/v1/tenants/default/clients")"
single_client="$(curl -fsS --cacert "$WORK/single/tls/ca.pem" -H "Authorization: Bearer $(gh single admin token)" -H 'Content-Type: application/json' \
  -d "{\"name\":\"bench\",\"client_type\":\"confidential\",\"grant_types\":[\"client_credentials\"],\"audiences\":[\"$RESOURCE\"]}" \
  "${URL[single]}/admin/v1/tenants/default/clients")"
for target in single leader follower; do
  case $target in single) n=single c_json=$single_client ;; leader) n=$LEADER c_json=$client ;; follower) n=$FOLLOWER c_json=$client ;; esac
  basic="$(printf '%s:%s' "$(jget client_id <<<"$c_json")" "$(jget client_secret <<<"$c_json")" | base64 -w0)"
  run "token-$target-c64" "$target" "POST /oauth2/token" 64 "${URL[$n]}/oauth2/token" "$WORK/$n/tls/ca.pem" \
    "Authorization: Basic $basic" "grant_type=client_credentials" application/x-www-form-urlencoded
done

# ---------------------------------------------------------------------------------------------
say "failover: $KILLS leader kills"
FAILOVER="$RESULTS/failover.tsv"
printf 'kill\tleader\twriter_target\tms_to_next_ack\n' >"$FAILOVER"
for k in $(seq "$KILLS"); do
  LEADER="$(leader_name)"
  target=n1
  [ "$LEADER" = n1 ] && target=n2
  token="$(gh "$target" admin token)"
  acks="$WORK/acks-$k"
  : >"$acks"
  # Each acknowledged write as "sent acknowledged" (ns): only writes sent after the kill count.
  (
    while :; do
      sent="$(now_ns)"
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$WORK/$target/tls/ca.pem" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"name":"failover"}' \
        "${URL[$target]}/admin/v1/tenants/default/organizations" || true)"
      [ "$code" = 201 ] && echo "$sent $(now_ns)" >>"$acks"
    done
  ) &
  writer=$!
  for _ in $(seq 100); do [ -s "$acks" ] && break; sleep 0.05; done
  [ -s "$acks" ] || die "the writer got no write through before kill $k"
  sleep 0.5
  killed_at="$(now_ns)"
  kill -KILL "${PID[$LEADER]}"
  wait "${PID[$LEADER]}" 2>/dev/null || true
  unset "PID[$LEADER]"
  ms=""
  for _ in $(seq 400); do
    first="$(awk -v t="$killed_at" '$1 >= t {print $2; exit}' "$acks")"
    [ -n "$first" ] && { ms=$(((first - killed_at) / 1000000)); break; }
    sleep 0.025
  done
  kill "$writer" 2>/dev/null || true
  wait "$writer" 2>/dev/null || true
  [ -n "$ms" ] || die "no write acknowledged within 10 s of kill $k"
  printf '%s\t%s\t%s\t%s\n' "$k" "$LEADER" "$target" "$ms" >>"$FAILOVER"
  say "kill $k: leader $LEADER, next write acknowledged after $ms ms"
  start "$LEADER"
  wait_agreement
done

node -e '
  const fs = require("fs");
  const rows = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").slice(1).map((l) => +l.split("\t")[3]).sort((a, b) => a - b);
  const q = (p) => rows[Math.min(rows.length - 1, Math.ceil(p * rows.length) - 1)];
  console.log(`failover over ${rows.length} kills: min ${rows[0]} ms, p50 ${q(0.5)} ms, p90 ${q(0.9)} ms, p99 ${q(0.99)} ms, max ${rows[rows.length - 1]} ms`);
' "$FAILOVER" | tee "$RESULTS/failover.txt"
column -t -s $'\t' "$SUMMARY"
echo "results: $RESULTS"
