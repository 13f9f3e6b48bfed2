#!/usr/bin/env bash
# Delivery check from outside (issue #6's acceptance): an 8-partition topic
# with 5000 prompts on `sluice devkafka`, `sluice mockapi` answering in
# 300 ms, one member killed with SIGKILL and restarted five times, two more
# members joining and leaving mid-run. Results are read back with kcat
# (read_committed under exactly-once) and counted per custom_id.
#
#   deploy/dev/delivery-run.sh at-least-once|exactly-once [kafka port] [api port]
#
# Needs kcat and python3. Prints results, unique, lost and duplicates.
set -u
mode=${1:?at-least-once or exactly-once}; port=${2:-19092}; apiport=${3:-18001}
dir=$(mktemp -d); B=$dir/sluice
go build -o "$B" ./cmd/sluice || exit 1
"$B" devkafka --port "$port" --partitions 8 >"$dir/kafka.log" 2>&1 & KPID=$!
"$B" mockapi --addr "127.0.0.1:$apiport" --latency 300ms >"$dir/api.log" 2>&1 & APID=$!
trap 'kill $KPID $APID 2>/dev/null' EXIT
sleep 2
python3 -c 'for i in range(5000): print(f"k{i}|{{\"custom_id\":\"c-{i}\",\"prompt\":\"question {i}\"}}")' >"$dir/in.txt"
kcat -P -b "127.0.0.1:$port" -t prompts -K '|' -l "$dir/in.txt"
start() { # name; sets pid
  env SLUICE_BROKERS="127.0.0.1:$port" SLUICE_API_BASE_URL="http://127.0.0.1:$apiport/v1" SLUICE_API_KEY=x \
    SLUICE_SESSION_TIMEOUT=6s SLUICE_COMMIT_INTERVAL=500ms SLUICE_DELIVERY="$mode" SLUICE_MAX_IN_FLIGHT=128 \
    SLUICE_MAX_BUFFERED_BYTES=64MiB SLUICE_LOG_LEVEL=warn SLUICE_HTTP_ADDR=127.0.0.1:0 SLUICE_TRANSACTIONAL_ID="run-$1" \
    "$B" consume >>"$dir/$1.log" 2>&1 &
  pid=$!
}
start a; A=$pid
for round in 1 2 3 4 5; do
  sleep 4
  if [ "$round" = 2 ]; then start b; Bp=$pid; start c; Cp=$pid; fi
  if [ "$round" = 4 ]; then kill -TERM "$Bp" "$Cp"; wait "$Bp" "$Cp"; fi
  kill -9 "$A"; wait "$A" 2>/dev/null
  start a; A=$pid
done
iso=read_uncommitted; [ "$mode" = exactly-once ] && iso=read_committed
read_results() { kcat -C -b "127.0.0.1:$port" -t completions -X isolation.level=$iso -e -q -o beginning -f '%s\n' 2>/dev/null; }
for _ in $(seq 1 150); do
  n=$(read_results | python3 -c 'import sys,json; print(len({json.loads(l)["custom_id"] for l in sys.stdin if l.strip()}))')
  [ "$n" -ge 5000 ] && break
  sleep 2
done
kill -TERM "$A"; wait "$A"
read_results | python3 -c '
import sys,json,collections
c=collections.Counter(json.loads(l)["custom_id"] for l in sys.stdin if l.strip())
lost=sum(1 for i in range(5000) if c[f"c-{i}"]==0)
print(f"'"$mode"': results={sum(c.values())} unique={len(c)} lost={lost} duplicates={sum(v-1 for v in c.values())}")'
echo "API calls: $(curl -s "127.0.0.1:$apiport/stats" | python3 -c 'import sys,json; print(json.load(sys.stdin)["requests"])')"
echo "logs: $dir"
