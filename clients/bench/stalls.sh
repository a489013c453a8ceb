#!/usr/bin/env bash
# stalls.sh EDGECHAT BENCH [SECONDS]: what a node is doing in the seconds
# its durable closed loop slows down. One node (every thread on CPU 0,
# the generator on CPU 1), 200 senders x 4 in flight for SECONDS (30),
# and every second: the messages committed, the node's CPU, and whether
# a goroutine dump (/debug/pprof/goroutine with an admin token) caught
# Badger compacting levels or flushing a memtable. Session 20 found this
# way that the slow seconds of a one-core node are its compactions
# (docs/perf/targets.md). The dumps stay in the printed directory.
#
#   go build -o /tmp/edgechat ./cmd/edgechat && go build -o /tmp/bench ./clients/bench
#   clients/bench/stalls.sh /tmp/edgechat /tmp/bench 30
set -euo pipefail
BIN=${1:?usage: stalls.sh EDGECHAT BENCH [SECONDS]}; B=${2:?usage: stalls.sh EDGECHAT BENCH [SECONDS]}; DUR=${3:-30}
W=$(mktemp -d /tmp/stalls.XXXX)
mkdir -p "$W/dumps"
read -r H M C < <(echo $("$B" freeport -n 3))
NOLIMITS=(--mqtt-publish-rate off --mqtt-connect-rate off --http-rate all=off,auth=off,write=off,read=off,admin=off --log-level warn)
taskset -c 0 "$BIN" serve --data "$W/n1" --http-addr "127.0.0.1:$H" --mqtt-addr "127.0.0.1:$M" --cluster-addr "127.0.0.1:$C" \
  "${NOLIMITS[@]}" >"$W/n1.log" 2>&1 &
P=$!
SAMPLER=
trap '[ -n "$SAMPLER" ] && kill $SAMPLER 2>/dev/null; kill $P 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$H/readyz" >/dev/null && break; sleep 0.1; done
S="http://127.0.0.1:$H"
head -c 24 /dev/urandom | base64 >"$W/pw"
"$BIN" user add stalls-admin --password-stdin --server "$S" <"$W/pw" >/dev/null
"$BIN" user grant stalls-admin admin --data "$W/n1" --server "$S" >/dev/null
TOK=$("$BIN" token stalls-admin --data "$W/n1" --server "$S")
TICKS=$(getconf CLK_TCK)

# One dump and one CPU reading a second, numbered from 1 as the bench's
# progress lines are (the warm-up's second included). A memtable flush
# lasts well under a second: the dumps catch some; compactions last
# seconds.
(
  prev=$(awk '{print $14+$15}' "/proc/$P/stat")
  for s in $(seq 1 $((DUR + 3))); do
    sleep 1
    curl -s -H "Authorization: Bearer $TOK" "$S/debug/pprof/goroutine?debug=1" >"$W/dumps/$s.txt" || true
    now=$(awk '{print $14+$15}' "/proc/$P/stat")
    echo "$s $(((now - prev) * 100 / TICKS))" >>"$W/cpu"
    prev=$now
  done
) &
SAMPLER=$!
taskset -c 1 "$B" throughput --http "$S" --mqtt "127.0.0.1:$M" --data "$W/n1" --pid "$P" \
  --senders 200 --inflight 4 --duration "${DUR}s" --progress 1s 2>&1 | grep -v '^#' >"$W/bench.txt"
wait $SAMPLER 2>/dev/null || true
SAMPLER=

printf '%-7s %-12s %-5s %-10s %s\n' second committed/s cpu% compacting flushing
grep -o '([0-9]* msg/s now)' "$W/bench.txt" | tr -d '(' | awk '{print NR, $1}' | while read -r s rate; do
  cpu=$(awk -v s="$s" '$1 == s {print $2}' "$W/cpu")
  d="$W/dumps/$s.txt"
  comp=no; flush=no
  [ -f "$d" ] && grep -q 'compactBuildTables\|subcompact' "$d" && comp=yes
  [ -f "$d" ] && grep -q 'handleMemTableFlush\|buildL0Table' "$d" && flush=yes
  printf '%-7s %-12s %-5s %-10s %s\n' "$s" "$rate" "${cpu:-?}" "$comp" "$flush"
done
grep -E '^throughput|committed' "$W/bench.txt" | tail -3
echo "dumps and logs: $W"
