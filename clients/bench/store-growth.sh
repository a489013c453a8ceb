#!/usr/bin/env bash
# store-growth.sh EDGECHAT BENCH [ROUNDS]: how the durable path's cost moves
# as the store grows. One node (all threads on CPU 0, the generator on
# CPU 1), then ROUNDS closed-loop rounds against that same node, each
# 200 senders x 16 in flight for 15 s (~250-350k messages a round): the
# committed rate and server CPU per message of each round, then the
# database's size. The first round is a fresh store, the last one holds
# every message the rounds before it stored. PROF=1 with a build that
# serves pprof on $EDGECHAT_PPROF saves CPU profiles of the first and
# the last round (./store-growth-r*.pb.gz).
#
#   go build -o /tmp/edgechat ./cmd/edgechat && go build -o /tmp/bench ./clients/bench
#   clients/bench/store-growth.sh /tmp/edgechat /tmp/bench 6
set -euo pipefail
BIN=${1:?usage: store-growth.sh EDGECHAT BENCH [ROUNDS]}; B=${2:?usage: store-growth.sh EDGECHAT BENCH [ROUNDS]}; ROUNDS=${3:-4}
W=$(mktemp -d /tmp/store-growth.XXXX)
read -r -a ports < <(echo $("$B" freeport -n 4))
NOLIMITS=(--mqtt-publish-rate off --mqtt-connect-rate off --http-rate all=off,auth=off,write=off,read=off,admin=off --log-level warn)
EDGECHAT_PPROF=127.0.0.1:${ports[3]} taskset -c 0 "$BIN" serve --data "$W/n1" --cluster-addr "127.0.0.1:${ports[2]}" \
  --http-addr "127.0.0.1:${ports[0]}" --mqtt-addr "127.0.0.1:${ports[1]}" "${NOLIMITS[@]}" >"$W/n1.log" 2>&1 &
P=$!
trap 'kill $P 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:${ports[0]}/readyz" >/dev/null && break; sleep 0.1; done
sleep 1
for r in $(seq 1 "$ROUNDS"); do
  if [ -n "${PROF:-}" ] && { [ "$r" = 1 ] || [ "$r" = "$ROUNDS" ]; }; then
    (sleep 7; curl -s -o "store-growth-r$r.pb.gz" "http://127.0.0.1:${ports[3]}/debug/pprof/profile?seconds=8") &
  fi
  printf 'round %d: ' "$r"
  taskset -c 1 "$B" throughput --http "http://127.0.0.1:${ports[0]}" --mqtt "127.0.0.1:${ports[1]}" --data "$W/n1" --pid "$P" \
    --senders 200 --inflight 16 --duration 15s --warmup 2s 2>/dev/null | grep -E 'committed rate|CPU per' | tr -s ' ' | tr '\n' ' '
  echo
done
du -sh "$W/n1/db" "$W/n1/raft"
