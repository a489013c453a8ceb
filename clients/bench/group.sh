#!/usr/bin/env bash
# group.sh: the 10,000-member group scenario of issue 10 against real
# processes, one node and then three: `bench seed` creates the accounts in
# the first node's data directory (cheap hashes, seconds instead of an
# hour of argon2id), `edgechat serve` starts on it (the others --join it),
# and `bench group` creates the group over HTTP, connects the online
# members and times send → last member's delivery. `make bench-group`
# runs it.
#
# Environment: EDGECHAT_BIN (default: build bin/edgechat), MEMBERS
# (10000), ONLINE (1000), MESSAGES (200), RATE (4), NODES ("1 3"),
# KEEP=1 keeps the work directory (JSON results, node logs).
# 200 messages (it was 60): with 60 the p99 was the worst message but
# one; at 4/s a run takes ~50 s per cluster size, and each fan-out
# (~15-25 ms) still starts on an idle node.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
W=$(mktemp -d /tmp/bench-group.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
E=${EDGECHAT_BIN:-}
if [ -z "$E" ]; then
  make build >/dev/null
  E=$ROOT/bin/edgechat
fi
go build -o "$W/bench" ./clients/bench
B=$W/bench
NOLIMITS=(--mqtt-publish-rate off --mqtt-connect-rate off --http-rate all=off,auth=off,write=off,read=off,admin=off --log-level warn)

ready() { # ready URL: wait up to 60 s for /readyz
  for _ in $(seq 600); do
    curl -sf "$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "group.sh: $1 not ready" >&2
  return 1
}

for n in ${NODES:-1 3}; do
  mapfile -t P < <("$B" freeport -n $((3 * n)))
  D=$W/n$n
  "$B" seed --data "$D-1" --cluster-addr "127.0.0.1:${P[2]}" --members "${MEMBERS:-10000}" --progress 30s
  mq=() pids=()
  for i in $(seq 1 "$n"); do
    H=${P[$((3 * (i - 1)))]} M=${P[$((3 * (i - 1) + 1))]} C=${P[$((3 * (i - 1) + 2))]}
    join=()
    [ "$i" -gt 1 ] && join=(--join "127.0.0.1:${P[2]}")
    "$E" serve --node-id "n$i" --data "$D-$i" --http-addr "127.0.0.1:$H" --mqtt-addr "127.0.0.1:$M" \
      --cluster-addr "127.0.0.1:$C" "${join[@]}" "${NOLIMITS[@]}" >"$D-$i.log" 2>&1 &
    PIDS+=($!) pids+=($!) mq+=("127.0.0.1:$M")
    ready "http://127.0.0.1:$H"
  done
  sleep 2 # the joiners' membership settles
  echo "== $n node(s)" >&2
  "$B" group --http "http://127.0.0.1:${P[0]}" --mqtt "$(IFS=,; echo "${mq[*]}")" --data "$D-1" \
    --pid "$(IFS=,; echo "${pids[*]}")" --members "${MEMBERS:-10000}" --online "${ONLINE:-1000}" \
    --messages "${MESSAGES:-200}" --rate "${RATE:-4}" --progress 10s --out "$W/group-$n.json"
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
done
