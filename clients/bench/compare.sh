#!/usr/bin/env bash
# compare.sh: run the same bench scenarios against Mosquitto, a plain
# mochi-mqtt server, edgechat on one node and edgechat as a three-node
# cluster on this box, each broker pinned to CPU 0 and the generator to
# CPU 1 (and, for the durable closed loop once more, nothing pinned: what
# the whole box commits), and write docs/perf/README.md (ratio table, charts, every step,
# the exact commands). `make bench-compare` runs it; QUICK=1 is a short
# run (about 3 minutes) to try it, the full one takes about 10–15.
#
# Environment: QUICK=1, ONLY_EDGECHAT=1 (skip Mosquitto and mochi), EDGECHAT_BIN=path (an edgechat binary to measure
# instead of building this tree's: before/after comparisons), OUT=path/README.md (default docs/perf/README.md),
# NOTE="conditions of the run" (the load average is added), KEEP=1 keeps the work directory (results
# JSON, logs). Needs root only to install Mosquitto when it is missing.
#
# Ports are found free at run time (bench freeport binds 127.0.0.1:0);
# everything listens on 127.0.0.1 only. Only processes this script
# started are stopped, by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
QUICK=${QUICK:-0}
OUT=${OUT:-$ROOT/docs/perf/README.md}
W=$(mktemp -d /tmp/bench-compare.XXXXXX)
R=$W/results
mkdir -p "$R"
CMDS=$W/commands.sh
: >"$CMDS"
T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

log() { echo "== [$(($(date +%s) - T0))s] $*" >&2; }
# rec records a command (with the work directory as $W) for the report.
rec() { printf '%s\n' "$*" | sed "s|$W|\$W|g" >>"$CMDS"; }

if [ "$(nproc)" -lt 2 ]; then
  echo "compare.sh needs two CPUs (the broker on 0, the generator on 1)" >&2
  exit 1
fi

# Mosquitto, from the Debian package, when missing.
MOSQ=$(command -v mosquitto || true)
[ -z "$MOSQ" ] && [ -x /usr/sbin/mosquitto ] && MOSQ=/usr/sbin/mosquitto
if [ -z "$MOSQ" ]; then
  log "installing mosquitto"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi

log "building edgechat and bench"
(cd "$ROOT" && go build -o "$W/bench" ./clients/bench)
B=$W/bench
if [ -n "${EDGECHAT_BIN:-}" ]; then
  # Another build of edgechat (an earlier commit, for before/after).
  cp "$EDGECHAT_BIN" "$W/edgechat"
  rec "go build -o \$W/bench ./clients/bench  # edgechat: a given binary, $(basename "$EDGECHAT_BIN")"
else
  (cd "$ROOT" && go build -o "$W/edgechat" ./cmd/edgechat)
  rec "go build -o \$W/edgechat ./cmd/edgechat && go build -o \$W/bench ./clients/bench"
fi
E=$W/edgechat

# The broker and the generator need descriptors for every connection.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ "$QUICK" = 1 ]; then
  IDLE_N=1000; DUR=1500ms; WARM=500ms; DRAIN=2s; TPUT=3s
  DM0="2000,5000,10000,20000"; DM1="1000,2000,5000"; ROOMS10="500,2000,6000"; ROOMS100=""
  DURABLE="500,1000,2000"; HIST_N=3000; HIST_PAGES=20; HIST_REPEAT=50
else
  IDLE_N=5000; DUR=4s; WARM=1s; DRAIN=3s; TPUT=20s
  DM0="2000,5000,10000,20000,30000,40000,60000"; DM1="1000,2000,5000,10000,20000"
  ROOMS10="500,1000,2000,4000,6000,8000"; ROOMS100="50,100,200,400,600,800"
  DURABLE="500,1000,2000,5000,10000,20000,30000"; HIST_N=30000; HIST_PAGES=200; HIST_REPEAT=200
fi
# Every step of every sweep runs (--stop-after 99): the charts show the
# whole curve and the rates issue 10 quotes its figures at (20k, 60k
# deliveries/s, 1k and 10k durable) are always measured; the "highest
# rate" is still the highest that passed the bar.
STOPAFTER=99
GEN=(taskset -c 1 "$B")
STEP=(--duration "$DUR" --warmup "$WARM" --drain "$DRAIN" --p99-max 10ms --stop-after "$STOPAFTER" --progress 2s)

ports() { echo $("$B" freeport -n "$1"); } # one line, newline-terminated for read

# pin PID...: every thread of the broker onto CPU 0 (threads started after
# the launch under taskset inherit it; this catches any that did not).
pin() {
  local p
  rec "taskset -a -p -c 0 PID # every thread of each broker process, once it is ready"
  for p in "$@"; do taskset -a -p -c 0 "$p" >/dev/null; done
}

# both_cpus lets the broker's threads run on every CPU again, for the
# closed-loop run that measures what the whole box commits (the
# generator, started without taskset, shares the CPUs with it).
both_cpus() {
  local p
  rec "taskset -a -p -c 0-$(($(nproc) - 1)) PID # then the same bench throughput without taskset, --out ...__throughput-both.json"
  for p in "$@"; do taskset -a -p -c "0-$(($(nproc) - 1))" "$p" >/dev/null; done
}

wait_tcp() { # host port
  local i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2
  return 1
}

wait_ready() { # http base URL
  local i
  for i in $(seq 1 300); do
    if curl -sf "$1/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$1 not ready" >&2
  return 1
}

stop() { # PID...: stop the brokers of one target before the next starts
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# plain TARGET MQTTADDR PIDS: the scenarios every broker runs.
plain() {
  local t=$1 m=$2 pid=$3
  local A=(--anon --mqtt "$m" --pid "$pid" --target "$t")
  local AR="--anon --mqtt 127.0.0.1:PORT --pid PID --target $t" # as recorded
  log "$t: idle ($IDLE_N connections)"
  rec "taskset -c 1 \$W/bench idle $AR -n $IDLE_N --settle 5s --out \$W/results/${t}__idle.json"
  "${GEN[@]}" idle "${A[@]}" -n "$IDLE_N" --settle 5s --progress 2s --out "$R/${t}__idle.json" >/dev/null
  log "$t: dm QoS 0"
  rec "taskset -c 1 \$W/bench dm $AR --qos 0 --pairs 50 --sweep $DM0 ${STEP[*]} --out \$W/results/${t}__dm-qos0.json"
  "${GEN[@]}" dm "${A[@]}" --qos 0 --pairs 50 --sweep "$DM0" "${STEP[@]}" --out "$R/${t}__dm-qos0.json"
  log "$t: dm QoS 1"
  rec "taskset -c 1 \$W/bench dm $AR --qos 1 --pairs 50 --sweep $DM1 ${STEP[*]} --out \$W/results/${t}__dm-qos1.json"
  "${GEN[@]}" dm "${A[@]}" --qos 1 --pairs 50 --sweep "$DM1" "${STEP[@]}" --out "$R/${t}__dm-qos1.json"
  log "$t: rooms of 10"
  rec "taskset -c 1 \$W/bench rooms $AR --qos 0 --topics 10 --subs 10 --sweep $ROOMS10 ${STEP[*]} --out \$W/results/${t}__rooms10.json"
  "${GEN[@]}" rooms "${A[@]}" --qos 0 --topics 10 --subs 10 --sweep "$ROOMS10" "${STEP[@]}" --out "$R/${t}__rooms10.json"
  if [ -n "$ROOMS100" ]; then
    log "$t: rooms of 100"
    rec "taskset -c 1 \$W/bench rooms $AR --qos 0 --topics 2 --subs 100 --sweep $ROOMS100 ${STEP[*]} --out \$W/results/${t}__rooms100.json"
    "${GEN[@]}" rooms "${A[@]}" --qos 0 --topics 2 --subs 100 --sweep "$ROOMS100" "${STEP[@]}" --out "$R/${t}__rooms100.json"
  fi
}

# Rate limits off: they are per-user protection, not what is measured.
NOLIMITS=(--mqtt-publish-rate off --mqtt-connect-rate off --http-rate all=off,auth=off,write=off,read=off,admin=off --log-level warn)

# --- Mosquitto ------------------------------------------------------------
if [ "${ONLY_EDGECHAT:-0}" != 1 ]; then
read -r MP _ < <(ports 1)
cat >"$W/mosquitto.conf" <<EOF
listener $MP 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest none
EOF
log "mosquitto on 127.0.0.1:$MP"
rec "# Mosquitto: $("$MOSQ" -h 2>/dev/null | head -1); config: listener PORT 127.0.0.1, allow_anonymous true, persistence false, max_connections -1, log_dest none"
rec "taskset -c 0 $MOSQ -c \$W/mosquitto.conf &"
taskset -c 0 "$MOSQ" -c "$W/mosquitto.conf" &
P=$!
pids+=("$P")
wait_tcp 127.0.0.1 "$MP"
pin "$P"
plain mosquitto "127.0.0.1:$MP" "$P"
stop "$P"

# --- plain mochi-mqtt -------------------------------------------------------
read -r RP _ < <(ports 1)
log "plain mochi-mqtt on 127.0.0.1:$RP"
rec "taskset -c 0 \$W/bench refserver --listen 127.0.0.1:PORT &"
taskset -c 0 "$B" refserver --listen "127.0.0.1:$RP" >"$W/refserver.log" 2>&1 &
P=$!
pids+=("$P")
wait_tcp 127.0.0.1 "$RP"
pin "$P"
plain mochi "127.0.0.1:$RP" "$P"
stop "$P"
fi

# --- edgechat, one node, --dev for the plain-MQTT scenarios ------------------
read -r H M C _ < <(ports 3)
log "edgechat --dev on 127.0.0.1:$M"
rec "taskset -c 0 \$W/edgechat serve --dev --data \$W/dev --http-addr 127.0.0.1:HTTP --mqtt-addr 127.0.0.1:MQTT --cluster-addr 127.0.0.1:CLUSTER ${NOLIMITS[*]} &"
taskset -c 0 "$E" serve --dev --data "$W/dev" --http-addr "127.0.0.1:$H" --mqtt-addr "127.0.0.1:$M" --cluster-addr "127.0.0.1:$C" "${NOLIMITS[@]}" >"$W/dev.log" 2>&1 &
P=$!
pids+=("$P")
wait_ready "http://127.0.0.1:$H"
pin "$P"
plain edgechat "127.0.0.1:$M" "$P"
stop "$P"

# --- edgechat, one node, durable and history ---------------------------------
read -r H M C _ < <(ports 3)
log "edgechat node on 127.0.0.1:$M (durable, history)"
rec "taskset -c 0 \$W/edgechat serve --data \$W/one --http-addr 127.0.0.1:HTTP --mqtt-addr 127.0.0.1:MQTT --cluster-addr 127.0.0.1:CLUSTER ${NOLIMITS[*]} &"
taskset -c 0 "$E" serve --data "$W/one" --http-addr "127.0.0.1:$H" --mqtt-addr "127.0.0.1:$M" --cluster-addr "127.0.0.1:$C" "${NOLIMITS[@]}" >"$W/one.log" 2>&1 &
P=$!
pids+=("$P")
wait_ready "http://127.0.0.1:$H"
pin "$P"
A=(--http "http://127.0.0.1:$H" --mqtt "127.0.0.1:$M" --data "$W/one" --pid "$P")
log "edgechat: durable"
rec "taskset -c 1 \$W/bench durable --http http://127.0.0.1:HTTP --mqtt 127.0.0.1:MQTT --data \$W/one --pid PID --target edgechat --senders 50 --receivers 10 --sweep $DURABLE ${STEP[*]} --out \$W/results/edgechat__durable.json"
"${GEN[@]}" durable "${A[@]}" --target edgechat --senders 50 --receivers 10 --sweep "$DURABLE" "${STEP[@]}" --out "$R/edgechat__durable.json"
log "edgechat: durable, closed loop"
rec "taskset -c 1 \$W/bench throughput --http http://127.0.0.1:HTTP --mqtt 127.0.0.1:MQTT --data \$W/one --pid PID --senders 200 --inflight 4 --duration $TPUT --warmup 1s --out \$W/results/edgechat__throughput.json"
"${GEN[@]}" throughput "${A[@]}" --senders 200 --inflight 4 --duration "$TPUT" --warmup 1s --progress 2s --out "$R/edgechat__throughput.json"
both_cpus "$P"
"$B" throughput "${A[@]}" --senders 200 --inflight 4 --duration "$TPUT" --warmup 1s --progress 2s --out "$R/edgechat__throughput-both.json"
pin "$P"
log "edgechat: history ($HIST_N messages)"
rec "taskset -c 1 \$W/bench history --http http://127.0.0.1:HTTP --mqtt 127.0.0.1:MQTT --data \$W/one --pid PID --target edgechat -n $HIST_N --pages $HIST_PAGES --repeat $HIST_REPEAT --out \$W/results/edgechat__history.json"
"${GEN[@]}" history "${A[@]}" --target edgechat -n "$HIST_N" --pages "$HIST_PAGES" --repeat "$HIST_REPEAT" --progress 2s --out "$R/edgechat__history.json"
stop "$P"

# --- edgechat, three nodes on this box ---------------------------------------
read -r H1 H2 H3 M1 M2 M3 C1 C2 C3 _ < <(ports 9)
HS=("$H1" "$H2" "$H3"); MS=("$M1" "$M2" "$M3"); CS=("$C1" "$C2" "$C3")
log "edgechat cluster of 3 on 127.0.0.1:$M1,$M2,$M3"
cpids=()
for i in 0 1 2; do
  join=""
  for j in 0 1 2; do [ "$j" != "$i" ] && join="$join,127.0.0.1:${CS[$j]}"; done
  rec "taskset -c 0 \$W/edgechat serve --node-id n$((i + 1)) --data \$W/c$((i + 1)) --cluster-addr 127.0.0.1:CLUSTER$((i + 1)) --bootstrap-expect 3 --join (the other two CLUSTER addresses) --http-addr 127.0.0.1:HTTP$((i + 1)) --mqtt-addr 127.0.0.1:MQTT$((i + 1)) ${NOLIMITS[*]} &"
  taskset -c 0 "$E" serve --node-id "n$((i + 1))" --data "$W/c$((i + 1))" --cluster-addr "127.0.0.1:${CS[$i]}" --bootstrap-expect 3 \
    --join "${join#,}" --http-addr "127.0.0.1:${HS[$i]}" --mqtt-addr "127.0.0.1:${MS[$i]}" "${NOLIMITS[@]}" >"$W/c$((i + 1)).log" 2>&1 &
  cpids+=($!)
  pids+=($!)
done
for i in 0 1 2; do wait_ready "http://127.0.0.1:${HS[$i]}"; done
pin "${cpids[@]}"
sleep 2 # every node's signing key published through Raft
CP=$(IFS=,; echo "${cpids[*]}")
log "edgechat cluster: durable"
rec "taskset -c 1 \$W/bench durable --http http://127.0.0.1:HTTP1 --mqtt 127.0.0.1:MQTT1,127.0.0.1:MQTT2,127.0.0.1:MQTT3 --data \$W/c1 --pid PID1,PID2,PID3 --target edgechat3 --senders 51 --receivers 12 --sweep $DURABLE ${STEP[*]} --out \$W/results/edgechat3__durable.json"
"${GEN[@]}" durable --http "http://127.0.0.1:$H1" --mqtt "127.0.0.1:$M1,127.0.0.1:$M2,127.0.0.1:$M3" --data "$W/c1" --pid "$CP" \
  --target edgechat3 --senders 51 --receivers 12 --sweep "$DURABLE" "${STEP[@]}" --out "$R/edgechat3__durable.json"
log "edgechat cluster: durable, closed loop"
rec "taskset -c 1 \$W/bench throughput --http http://127.0.0.1:HTTP1 --mqtt 127.0.0.1:MQTT1,127.0.0.1:MQTT2,127.0.0.1:MQTT3 --data \$W/c1 --pid PID1,PID2,PID3 --senders 200 --inflight 4 --duration $TPUT --warmup 1s --out \$W/results/edgechat3__throughput.json"
"${GEN[@]}" throughput --http "http://127.0.0.1:$H1" --mqtt "127.0.0.1:$M1,127.0.0.1:$M2,127.0.0.1:$M3" --data "$W/c1" --pid "$CP" \
  --senders 200 --inflight 4 --duration "$TPUT" --warmup 1s --progress 2s --out "$R/edgechat3__throughput.json"
both_cpus "${cpids[@]}"
"$B" throughput --http "http://127.0.0.1:$H1" --mqtt "127.0.0.1:$M1,127.0.0.1:$M2,127.0.0.1:$M3" --data "$W/c1" --pid "$CP" \
  --senders 200 --inflight 4 --duration "$TPUT" --warmup 1s --progress 2s --out "$R/edgechat3__throughput-both.json"
stop "${cpids[@]}"

{
  echo "Mosquitto: $("$MOSQ" -h 2>/dev/null | head -1)"
  echo "mochi-mqtt: $(cd "$ROOT" && go list -m -f '{{.Path}} {{.Version}}' github.com/mochi-mqtt/server/v2) (the tree's copy in third_party/, defaults, allow-all hook: bench refserver)"
  echo "edgechat: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "run: $([ "$QUICK" = 1 ] && echo 'QUICK=1 (short steps: figures are rough)' || echo full), $(($(date +%s) - T0)) s"
} >"$R/versions.txt"

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
NOTE="${NOTE:+$NOTE }Load average $LOAD0 at the start and $LOAD1 at the end (1, 5, 15 min; $(nproc) CPUs): with the load average above 1 the brokers' tails and the generator's late sends include other work; compare ratios, not absolutes."
log "writing $OUT"
"$B" report --dir "$R" --out "$OUT" --commands "$CMDS" --note "$NOTE"
log "done in $(($(date +%s) - T0)) s"
