#!/usr/bin/env bash
# before-after.sh BIN_BEFORE BIN_AFTER: issue 10's edgechat-only figures
# for two builds of edgechat, measured the same way one after the other
# (each scenario runs on "before", then on "after", with fresh data
# directories), unpinned (server and generator share the machine's
# cores, as the issue's first figures were taken). Prints one block per
# figure; make bench-compare gives the pinned side-by-side with
# Mosquitto and plain mochi.
#
#   git worktree add /tmp/before <commit> && (cd /tmp/before && make build BIN=/tmp/b) && make build
#   clients/bench/before-after.sh /tmp/b/edgechat bin/edgechat
#
# Environment: DUR (measured seconds per load step, default 10), IDLE_N
# (idle connections, default 5000), CLIENT (the generator's MQTT client:
# raw, the default since 2026-12-03, or paho as in the earlier runs). Ports are found free at run time;
# everything listens on 127.0.0.1; only processes it started are stopped.
set -euo pipefail
BEFORE=${1:?usage: before-after.sh BIN_BEFORE BIN_AFTER}
AFTER=${2:?usage: before-after.sh BIN_BEFORE BIN_AFTER}
DUR=${DUR:-10}
IDLE_N=${IDLE_N:-5000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d /tmp/before-after.XXXXXX)
(cd "$ROOT" && go build -o "$W/bench" ./clients/bench)
B=$W/bench
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOLIMITS=(--mqtt-publish-rate off --mqtt-connect-rate off --http-rate all=off,auth=off,write=off,read=off,admin=off --log-level warn)
hdr() { echo; echo "### $*"; }

wait_ready() { # URL: prints milliseconds waited
  local t0 i
  t0=$(date +%s%N)
  for i in $(seq 1 3000); do
    if curl -sf "$1/readyz" >/dev/null 2>&1; then echo $((($(date +%s%N) - t0) / 1000000)); return 0; fi
    sleep 0.01
  done
  echo "$1 not ready" >&2
  return 1
}

# one BIN DIR: start a single node; sets P, H, M.
one() {
  read -r H M C1 _ < <(echo $("$B" freeport -n 3))
  again "$@"
}

# again BIN DIR: start a single node on the ports of the last `one`
# (a restart on the same data directory); sets P.
again() {
  local bin=$1 dir=$2
  "$bin" serve --data "$dir" --http-addr "127.0.0.1:$H" --mqtt-addr "127.0.0.1:$M" --cluster-addr "127.0.0.1:$C1" "${NOLIMITS[@]}" >>"$dir.log" 2>&1 &
  P=$!
  pids+=("$P")
  READY_MS=$(wait_ready "http://127.0.0.1:$H")
}

# three BIN DIR: start a three-node cluster; sets CP (pids, comma), H1, MS (mqtt list).
three() {
  local bin=$1 dir=$2 i j join
  local ports
  read -r -a ports < <(echo $("$B" freeport -n 9))
  local cp=()
  for i in 0 1 2; do
    join=""
    for j in 0 1 2; do [ "$j" != "$i" ] && join="$join,127.0.0.1:${ports[$((6 + j))]}"; done
    "$bin" serve --node-id "n$((i + 1))" --data "$dir/n$((i + 1))" --cluster-addr "127.0.0.1:${ports[$((6 + i))]}" --bootstrap-expect 3 \
      --join "${join#,}" --http-addr "127.0.0.1:${ports[$i]}" --mqtt-addr "127.0.0.1:${ports[$((3 + i))]}" "${NOLIMITS[@]}" >"$dir.n$((i + 1)).log" 2>&1 &
    cp+=($!)
    pids+=($!)
  done
  for i in 0 1 2; do wait_ready "http://127.0.0.1:${ports[$i]}" >/dev/null; done
  sleep 2 # every node's signing key published through Raft
  CP=$(IFS=,; echo "${cp[*]}")
  H1=${ports[0]}
  MS="127.0.0.1:${ports[3]},127.0.0.1:${ports[4]},127.0.0.1:${ports[5]}"
}

stopall() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

summary() { grep -E 'committed rate|PUBACK|CPU per|Raft batch|RSS|per connection|sent / |^error' || true; }

hdr "binary size (bytes)"
for t in before after; do bin=$BEFORE; [ $t = after ] && bin=$AFTER; echo "$t: $(stat -c %s "$bin")"; done

hdr "ready time and idle RSS (one node, fresh data dir, 3 starts each; RSS 10 s after ready)"
for i in 1 2 3; do
  for t in before after; do
    bin=$BEFORE; [ $t = after ] && bin=$AFTER
    one "$bin" "$W/ready-$t-$i"
    sleep 10
    echo "$t: ready ${READY_MS} ms, idle RSS $(awk '/VmRSS/ {print $2}' "/proc/$P/status") kB"
    stopall "$P"
  done
done

hdr "RSS per idle authenticated connection ($IDLE_N connections)"
for t in before after; do
  bin=$BEFORE; [ $t = after ] && bin=$AFTER
  # The first run registers the bench users (argon2id: tens of MB the
  # node gives back to the OS later, which would hide the connections'
  # memory); the measured run is on a restarted node.
  one "$bin" "$W/idle-$t"
  "$B" idle --http "http://127.0.0.1:$H" --mqtt "127.0.0.1:$M" --data "$W/idle-$t" --pid "$P" -n 200 --settle 1s >/dev/null 2>&1 || true
  stopall "$P"
  again "$bin" "$W/idle-$t"
  sleep 5
  echo "$t:"
  "$B" idle --http "http://127.0.0.1:$H" --mqtt "127.0.0.1:$M" --data "$W/idle-$t" --pid "$P" -n "$IDLE_N" --settle 5s 2>/dev/null | summary
  stopall "$P"
done

for senders in 200 20; do
  hdr "durable, 1 node, closed loop: $senders senders x 32 in flight"
  for t in before after; do
    bin=$BEFORE; [ $t = after ] && bin=$AFTER
    one "$bin" "$W/tput$senders-$t"
    echo "$t:"
    "$B" throughput --client "${CLIENT:-raw}" --http "http://127.0.0.1:$H" --mqtt "127.0.0.1:$M" --data "$W/tput$senders-$t" --pid "$P" --senders "$senders" --inflight 32 --duration "${DUR}s" 2>/dev/null | summary
    stopall "$P"
  done
done

for rate in 1000 10000; do
  hdr "durable, 1 node, open loop at $rate msg/s (100 senders x 16 in flight)"
  for t in before after; do
    bin=$BEFORE; [ $t = after ] && bin=$AFTER
    one "$bin" "$W/lat$rate-$t"
    echo "$t:"
    "$B" latency --client "${CLIENT:-raw}" --http "http://127.0.0.1:$H" --mqtt "127.0.0.1:$M" --data "$W/lat$rate-$t" --pid "$P" --rate "$rate" --duration "${DUR}s" 2>/dev/null | summary
    stopall "$P"
  done
done

hdr "durable, 3 nodes, closed loop: 200 senders x 32 in flight, spread over the nodes"
for t in before after; do
  bin=$BEFORE; [ $t = after ] && bin=$AFTER
  mkdir -p "$W/c3-$t"
  three "$bin" "$W/c3-$t"
  echo "$t:"
  "$B" throughput --client "${CLIENT:-raw}" --http "http://127.0.0.1:$H1" --mqtt "$MS" --data "$W/c3-$t/n1" --pid "$CP" --senders 200 --inflight 32 --duration "${DUR}s" 2>/dev/null | summary
  IFS=, read -r -a cps <<<"$CP"
  stopall "${cps[@]}"
done

for rate in 1000 10000; do
  hdr "durable, 3 nodes, open loop at $rate msg/s"
  for t in before after; do
    bin=$BEFORE; [ $t = after ] && bin=$AFTER
    mkdir -p "$W/c3lat$rate-$t"
    three "$bin" "$W/c3lat$rate-$t"
    echo "$t:"
    "$B" latency --client "${CLIENT:-raw}" --http "http://127.0.0.1:$H1" --mqtt "$MS" --data "$W/c3lat$rate-$t/n1" --pid "$CP" --rate "$rate" --duration "${DUR}s" 2>/dev/null | summary
    IFS=, read -r -a cps <<<"$CP"
    stopall "${cps[@]}"
  done
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
