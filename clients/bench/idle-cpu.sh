#!/usr/bin/env bash
# idle-cpu.sh BINARY [SECONDS]: start a three-node edgechat cluster on
# 127.0.0.1 with no clients, let it settle, then print each node's CPU
# (utime+stime from /proc/PID/stat) over SECONDS as a percentage of one
# core, and which node leads. Extra serve flags: EXTRA="--raft-timeout 1s".
#
#   go build -o /tmp/edgechat ./cmd/edgechat && clients/bench/idle-cpu.sh /tmp/edgechat 60
set -euo pipefail
BIN=${1:?usage: idle-cpu.sh BINARY [SECONDS]}; SECS=${2:-30}
D=$(mktemp -d /tmp/idle.XXXX)
pids=()
base=$((20000 + RANDOM % 20000))
for i in 1 2 3; do
  join=""
  for j in 1 2 3; do [ "$j" != "$i" ] && join="$join,127.0.0.1:$((base+j))"; done
  # shellcheck disable=SC2086 # EXTRA is a list of flags
  "$BIN" serve --node-id "n$i" --data "$D/n$i" --cluster-addr "127.0.0.1:$((base+i))" --bootstrap-expect 3 \
    --join "${join#,}" --http-addr "127.0.0.1:$((base+10+i))" --mqtt-addr "127.0.0.1:$((base+20+i))" \
    --log-level warn ${EXTRA:-} > "$D/n$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 1 60); do
  ok=1
  for i in 1 2 3; do curl -sf "http://127.0.0.1:$((base+10+i))/readyz" >/dev/null || ok=0; done
  [ $ok = 1 ] && break
  sleep 0.5
done
sleep 5
hz=$(getconf CLK_TCK)
t0=()
for p in "${pids[@]}"; do t0+=("$(awk '{print $14+$15}' "/proc/$p/stat")"); done
sleep "$SECS"
for i in 0 1 2; do
  t1=$(awk '{print $14+$15}' "/proc/${pids[$i]}/stat")
  awk -v a="${t0[$i]}" -v b="$t1" -v hz="$hz" -v s="$SECS" -v n=$((i+1)) 'BEGIN {printf "n%d cpu %.2f%% of a core\n", n, (b-a)*100/hz/s}'
done
H='Content-Type: application/json'
curl -s -H "$H" -XPOST "127.0.0.1:$((base+11))/auth/register" -d '{"username":"admin","password":"correct-horse-battery","displayName":"Admin"}' >/dev/null
TOK=$(curl -s -H "$H" -XPOST "127.0.0.1:$((base+11))/auth/login" -d '{"username":"admin","password":"correct-horse-battery"}' | sed -n 's/.*"accessToken":"\([^"]*\)".*/\1/p')
echo "leader: $(curl -s -H "Authorization: Bearer $TOK" "127.0.0.1:$((base+11))/cluster/status" | sed -n 's/.*"leader":"\([^"]*\)".*/\1/p')"
