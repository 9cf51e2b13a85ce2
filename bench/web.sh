#!/bin/bash
# bench/web.sh: the web API and page on 65,536 flows in a lab namespace,
# with LuCI's approach (read /proc/net/nf_conntrack, build the whole JSON)
# timed in the same run for comparison. Run as root: make bench-web.
set -eu
cd "$(dirname "$0")/.."
N=${FLOWS:-65536}
NS=ctbench-web-$$
PORT=18077
BIN=target/release/ctrack
SRV=""

cleanup() {
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
    for pid in $(ip netns pids $NS 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del $NS 2>/dev/null || true
    rm -f /tmp/$NS.flows
}
trap cleanup EXIT INT TERM

echo "== building (release)"
cargo build --release -q
cargo test --release -q --test web_browser --no-run 2>/dev/null

ip netns add $NS
ip -n $NS link set lo up
modprobe nf_conntrack_netlink 2>/dev/null || true
ip netns exec $NS sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1 2>/dev/null || true
max=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
if [ "$max" -lt $((N + 1000)) ]; then
    echo "nf_conntrack_max is $max, below $N flows: raise it (sysctl net.netfilter.nf_conntrack_max)" >&2
    exit 1
fi

echo "== loading $N flows (ctrack -R)"
python3 - "$N" > /tmp/$NS.flows <<'PY'
import sys
n = int(sys.argv[1])
for i in range(n):
    a, b = (i >> 8) & 0xff, i & 0xff
    if i % 4 == 3:
        print(f"-I -p udp -s 10.{50 + a % 50}.{a}.{b} -d 198.51.100.{i % 200 + 1} --sport {1024 + i % 60000} --dport 53 -t 120 -m {i % 7}")
    else:
        st = ("ESTABLISHED", "TIME_WAIT", "SYN_SENT", "CLOSE_WAIT")[i % 4]
        print(f"-I -p tcp -s 10.{50 + a % 50}.{a}.{b} -d 203.0.113.{i % 250 + 1} --sport {1024 + i % 60000} --dport {(80, 443, 22, 8080)[i % 4]} --state {st} -u ASSURED -t 3600 -m {i % 7}")
PY
t0=$(date +%s.%N)
$BIN --netns $NS -R /tmp/$NS.flows
t1=$(date +%s.%N)
count=$(ip netns exec $NS conntrack -C)
printf 'loaded %s flows in %.2f s\n' "$count" "$(echo "$t1 - $t0" | bc)"

$BIN web --netns $NS --listen 127.0.0.1:$PORT >/dev/null &
SRV=$!
for _ in $(seq 50); do
    ip netns exec $NS curl -s -o /dev/null "http://127.0.0.1:$PORT/api/v1/stats" && break
    sleep 0.1
done

# median wall time (ms) and size of N runs of a GET inside the namespace
timeit() { # runs url
    local runs=$1 url=$2 times=() size=0
    for _ in $(seq "$runs"); do
        out=$(ip netns exec $NS curl -s -o /dev/null -w '%{time_total} %{size_download} %{http_code}' "$url")
        set -- $out
        [ "$3" = 200 ] || { echo "HTTP $3 from $url" >&2; exit 1; }
        times+=("$1"); size=$2
    done
    med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%8.1f ms  %9s bytes' "$(echo "$med * 1000" | bc)" "$size"
}
U=http://127.0.0.1:$PORT
echo
echo "== ctrack web API on $count flows (median of runs, curl inside the namespace)"
printf '%-58s %s\n' "first page, sorted: ?limit=100&sort=-bytes" "$(timeit 7 "$U/api/v1/connections?limit=100&sort=-bytes")"
printf '%-58s %s\n' "filtered+sorted page: ?proto=udp&q=10.51&sort=-timeout&limit=100" "$(timeit 7 "$U/api/v1/connections?proto=udp&q=10.51&sort=-timeout&limit=100")"
printf '%-58s %s\n' "page 300 of 656: ?sort=src&offset=29900&limit=100" "$(timeit 5 "$U/api/v1/connections?sort=src&offset=29900&limit=100")"
printf '%-58s %s\n' "full list, streamed in dump order" "$(timeit 3 "$U/api/v1/connections")"
printf '%-58s %s\n' "full list, sorted: ?sort=-bytes" "$(timeit 3 "$U/api/v1/connections?sort=-bytes")"
printf '%-58s %s\n' "per-host totals: /api/v1/hosts" "$(timeit 3 "$U/api/v1/hosts")"
printf '%-58s %s\n' "Prometheus: /metrics" "$(timeit 3 "$U/metrics")"
rss=$(awk '/VmHWM/ {print $2}' /proc/$SRV/status)
echo "server peak RSS: ${rss} KiB"

echo
echo "== LuCI's approach: /proc/net/nf_conntrack -> whole-table JSON (bench/luci_conntrack_list.py)"
if [ -r /proc/net/nf_conntrack ]; then
    times=()
    for _ in 1 2 3; do
        t0=$(date +%s.%N)
        bytes=$(ip netns exec $NS python3 bench/luci_conntrack_list.py | wc -c)
        t1=$(date +%s.%N)
        times+=("$(echo "($t1 - $t0) * 1000" | bc)")
    done
    med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
    printf '%-58s %8.1f ms  %9s bytes\n' "whole table (the page needs all of it for any view)" "$med" "$bytes"
else
    echo "/proc/net/nf_conntrack is absent (CONFIG_NF_CONNTRACK_PROCFS off): LuCI's page would be blank"
fi

echo
echo "== the page in headless Chromium (load until the first 100 rows show)"
if [ -x /usr/bin/chromium ]; then
    CTRACK_BENCH_URL="$U/" CTRACK_BENCH_NETNS=$NS \
        cargo test --release -q --test web_browser -- --ignored --nocapture bench_page_load 2>/dev/null |
        grep -E '^page_' || echo "(browser run failed)"
else
    echo "(chromium not installed: apt-get install chromium)"
fi
