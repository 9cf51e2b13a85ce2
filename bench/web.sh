#!/bin/bash
# bench/web.sh: ctrackd's web page and API on 65,536 flows in a lab
# namespace, on the shipped static musl binary (make static), in one run:
#   1. CPU of ctrackd (user + sys ticks from /proc/PID/stat) per page
#      refresh, 15 refreshes 2 s apart, the new way (one shared counter
#      snapshot per CounterInterval) against today's (a kernel dump per
#      request: CounterInterval 0, or OLD_BIN=<an older ctrack> to run
#      that one), and LuCI's approach (bench/luci_conntrack_list.py, what
#      `luci getConntrackList` does) per run;
#   2. peak RSS of ctrackd (VmHWM) while 10 hostile clients run
#      (bench/web_hostile.py: slow readers of the largest reply, HTTP/1.0
#      full lists, event-stream floods, connection floods, maximum-size
#      heads), and the page's latency meanwhile, from another address;
#   3. the API's timings (median of runs) and, with chromium, the page's.
# Run as root: make bench-web. FLOWS=, HOSTILE_SECONDS=, BIN=, OLD_BIN=,
# BROWSER=0 (no Chromium part).
set -eu
cd "$(dirname "$0")/.."
N=${FLOWS:-65536}
SECS=${HOSTILE_SECONDS:-60}
REFRESHES=15
NS=ctbench-web-$$
PORT=18077
TARGET=x86_64-unknown-linux-musl
BIN=${BIN:-target/$TARGET/release/ctrack}
OLD_BIN=${OLD_BIN:-}
DIR=$(mktemp -d /tmp/ctbench-web.XXXXXX)
PID=""
HZ=$(getconf CLK_TCK)
U=http://127.0.0.1:$PORT
PAGE="$U/api/v1/connections?limit=100&offset=0&sort=-bytes"

cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && [ -f "$DIR/log" ]; then
        echo "bench failed ($rc); ctrackd's log ends:" >&2
        tail -5 "$DIR/log" >&2
    fi
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

if [ "${BIN}" = "target/$TARGET/release/ctrack" ]; then
    echo "== building the static binary (make static: $TARGET)"
    ./scripts/static-build.sh "$TARGET" -q
fi
printf 'binary: %s (%s bytes)\n' "$BIN" "$(stat -c %s "$BIN")"

ip netns add "$NS"
ip -n "$NS" link set lo up
modprobe nf_conntrack_netlink 2>/dev/null || true
ip netns exec "$NS" sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1 2>/dev/null || true
# the bench's own HTTP traffic on lo is not tracked: the table stays at N
ip netns exec "$NS" nft -f - <<'EOF'
table inet bench {
    chain pre { type filter hook prerouting priority raw; iif lo notrack; }
    chain out { type filter hook output priority raw; oif lo notrack; }
}
EOF
max=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
if [ "$max" -lt $((N + 1000)) ]; then
    echo "nf_conntrack_max is $max, below $N flows: raise it (sysctl net.netfilter.nf_conntrack_max)" >&2
    exit 1
fi

echo "== loading $N flows (ctrack -R)"
python3 - "$N" > "$DIR/flows" <<'PY'
import sys
n = int(sys.argv[1])
for i in range(n):
    a, b = (i >> 8) & 0xff, i & 0xff
    if i % 4 == 3:
        print(f"-I -p udp -s 10.{50 + a % 50}.{a}.{b} -d 198.51.100.{i % 200 + 1} --sport {1024 + i % 60000} --dport 53 -t 86400 -m {i % 7}")
    else:
        st = ("ESTABLISHED", "TIME_WAIT", "SYN_SENT", "CLOSE_WAIT")[i % 4]
        print(f"-I -p tcp -s 10.{50 + a % 50}.{a}.{b} -d 203.0.113.{i % 250 + 1} --sport {1024 + i % 60000} --dport {(80, 443, 22, 8080)[i % 4]} --state {st} -u ASSURED -t 86400 -m {i % 7}")
PY
"$BIN" --netns "$NS" -R "$DIR/flows"
count=$(ip netns exec "$NS" conntrack -C)
echo "loaded $count flows"

# curl from the page's own address (the hostile clients have others)
page_curl() { ip netns exec "$NS" curl -s --interface 127.0.0.2 -o /dev/null -w '%{time_total} %{http_code} %{size_download}' "$@"; }

# starts ctrackd with Web { CounterInterval $1 } (none: the binary's own
# default) from binary $2; sets PID once the web answers
start_daemon() {
    local interval=$1 bin=$2
    {
        printf 'General {\n  HashSize 65536\n  HashLimit 1048576\n  LockFile %s/lock\n  UNIX { Path %s/ctl }\n' "$DIR" "$DIR"
        printf '  LogFile %s/log\n  NetlinkBufferSize 8388608\n  NetlinkBufferSizeMaxGrowth 67108864\n}\n' "$DIR"
        printf 'Web {\n  Address 127.0.0.1\n  Port %s\n' "$PORT"
        [ -n "$interval" ] && printf '  CounterInterval %s\n' "$interval"
        printf '}\n'
    } > "$DIR/ctrackd.conf"
    rm -f "$DIR/lock" "$DIR/ctl"
    ip netns exec "$NS" "$bin" daemon -C "$DIR/ctrackd.conf" >/dev/null 2>&1 &
    PID=$!
    # ready: the web answers and the daemon's own startup dump is done
    local want
    want=$(ip netns exec "$NS" conntrack -C)
    for _ in $(seq 300); do
        if ip netns exec "$NS" curl -s -o /dev/null "$U/api/v1/stats"; then
            n=$("$bin" daemon -C "$DIR/ctrackd.conf" -s 2>/dev/null |
                awk -F'\t' '/current active/ { gsub(/ /, "", $2); print $2; exit }')
            [ "${n:-0}" -ge "$((want - 100))" ] && { sleep 1; return 0; }
        fi
        sleep 0.1
    done
    echo "ctrackd did not start: $(cat "$DIR/log" 2>/dev/null)" >&2
    exit 1
}
stop_daemon() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
# ticks of the snapshot refresher thread (the dumps): 0 when it has none
snap_ticks() {
    local t sum=0
    for t in /proc/"$PID"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = ctrack-websnap ] &&
            sum=$((sum + $(awk '{ print $14 + $15 }' "$t/stat")))
    done
    echo "$sum"
}
kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$PID/status"; }

# REFRESHES page refreshes 2 s apart on a page opened now; prints the CPU
# per refresh (ms) and the median latency (ms)
refreshes() {
    local t0 t1 s0 s1 start times=() i t code
    t0=$(cpu_ticks)
    s0=$(snap_ticks)
    for i in $(seq "$REFRESHES"); do
        start=$(date +%s.%N)
        read -r t code _ < <(page_curl "$PAGE")
        [ "$code" = 200 ] || { echo "HTTP $code from the page" >&2; exit 1; }
        times+=("$t")
        [ "$i" -lt "$REFRESHES" ] && sleep "$(echo "2 - ($(date +%s.%N) - $start)" | bc | sed 's/^-.*/0/')"
    done
    t1=$(cpu_ticks)
    s1=$(snap_ticks)
    med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] * 1000 }')
    awk -v d=$((t1 - t0)) -v s=$((s1 - s0)) -v hz="$HZ" -v n="$REFRESHES" -v m="$med" \
        'BEGIN { printf "%6.1f ms CPU/refresh (dumps %5.1f)  %6.0f ms median latency", d * 1000 / hz / n, s * 1000 / hz / n, m }'
}

echo
echo "== CPU of ctrackd per page refresh ($REFRESHES refreshes 2 s apart of ?limit=100&sort=-bytes, $count flows, ${HZ} ticks/s)"
start_daemon "" "$BIN"
new=$(refreshes)
snap=$(ip netns exec "$NS" curl -s "$U/api/v1/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin)["web"]["snapshot"]; print(s["dumps"], s["counter_interval"])')
stop_daemon
# shellcheck disable=SC2086 # snap holds two words: dumps and the interval
printf '%-58s %s  (%s dumps, CounterInterval %s s)\n' "new: shared counter snapshot, lists from the table" "$new" $snap
if [ -n "$OLD_BIN" ]; then
    start_daemon "" "$OLD_BIN"
    old_label="today's way: $OLD_BIN"
else
    start_daemon 0 "$BIN"
    old_label="today's way: a kernel dump per request (CounterInterval 0)"
fi
old=$(refreshes)
stop_daemon
printf '%-58s %s\n' "$old_label" "$old"
if [ -r /proc/net/nf_conntrack ]; then
    cpu=0 bytes=0
    for _ in $(seq "$REFRESHES"); do
        ut=$( { /usr/bin/time -f '%U %S' ip netns exec "$NS" python3 bench/luci_conntrack_list.py > "$DIR/luci.json"; } 2>&1 | tail -1)
        cpu=$(echo "$cpu + $(echo "$ut" | awk '{ print $1 + $2 }')" | bc)
        bytes=$(stat -c %s "$DIR/luci.json")
    done
    printf '%-58s %6.1f ms CPU/refresh   (%s bytes of JSON, whole table)\n' \
        "LuCI's approach: /proc/net/nf_conntrack -> JSON" "$(echo "$cpu * 1000 / $REFRESHES" | bc -l)" "$bytes"
else
    echo "LuCI's approach: /proc/net/nf_conntrack is absent (CONFIG_NF_CONNTRACK_PROCFS off)"
fi

echo
echo "== the hostile mix: 10 clients for ${SECS} s (bench/web_hostile.py), the page polled from 127.0.0.2"
start_daemon "" "$BIN"
page_curl "$PAGE" >/dev/null
before=$(kib VmHWM)
ip netns exec "$NS" python3 bench/web_hostile.py 127.0.0.1 "$PORT" "$SECS" > "$DIR/hostile.txt" &
HOSTILE=$!
sleep 3
lat_page=() lat_list=() bad=0
end=$(( $(date +%s) + SECS - 5 ))
while [ "$(date +%s)" -lt "$end" ]; do
    read -r t code _ < <(page_curl "$U/" || true) || true
    [ "${code:-}" = 200 ] || bad=$((bad + 1))
    lat_page+=("${t:-99}")
    read -r t code _ < <(page_curl "$PAGE" || true) || true
    [ "${code:-}" = 200 ] || bad=$((bad + 1))
    lat_list+=("${t:-99}")
    sleep 1
done
wait "$HOSTILE" || true
kill -0 "$PID" 2>/dev/null || { echo "ctrackd died during the mix" >&2; exit 1; }
stats() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 * 1000 } END { printf "median %4.0f ms, max %5.0f ms (%d requests)", a[int((NR + 1) / 2)], a[NR], NR }'; }
peak=$(kib VmHWM)
rss=$(kib VmRSS)
threads=$(find "/proc/$PID/task" -mindepth 1 -maxdepth 1 | wc -l)
web=$(ip netns exec "$NS" curl -s "$U/api/v1/stats" | python3 -c 'import json,sys; w=json.load(sys.stdin)["web"]; print(" ".join("%s=%s" % (k, w[k]) for k in ("requests","busy","rate_limited","refused","evicted","too_large","slow_replies","send_timeouts","head_timeouts")))')
stop_daemon
sed 's/^/  hostile: /' "$DIR/hostile.txt"
echo "  server: $web"
printf '%-58s %s\n' "the page (GET /) during the mix" "$(stats "${lat_page[@]}")"
printf '%-58s %s\n' "a page of flows (?limit=100&sort=-bytes) during the mix" "$(stats "${lat_list[@]}")"
echo "  requests of the page that failed: $bad"
printf '%-58s %s KiB (%s MB) [before the mix: %s KiB; RSS after: %s KiB; %s threads]\n' \
    "peak RSS of ctrackd (VmHWM) under the hostile mix" "$peak" "$(echo "scale=1; $peak / 1024" | bc)" "$before" "$rss" "$threads"

echo
echo "== the API on $count flows (median of runs, one client, ctrackd with the default CounterInterval)"
start_daemon "" "$BIN"
timeit() { # runs url
    local runs=$1 url=$2 times=() size=0 t code
    for _ in $(seq "$runs"); do
        read -r t code size < <(page_curl "$url")
        [ "$code" = 200 ] || { echo "HTTP $code from $url" >&2; exit 1; }
        times+=("$t")
    done
    med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    printf '%8.1f ms  %9s bytes' "$(echo "$med * 1000" | bc)" "$size"
}
page_curl "$PAGE" >/dev/null
printf '%-58s %s\n' "first page, sorted: ?limit=100&sort=-bytes" "$(timeit 7 "$PAGE")"
printf '%-58s %s\n' "filtered+sorted: ?proto=udp&q=10.51&sort=-timeout&limit=100" "$(timeit 7 "$U/api/v1/connections?proto=udp&q=10.51&sort=-timeout&limit=100")"
printf '%-58s %s\n' "page 300 of 656: ?sort=src&offset=29900&limit=100" "$(timeit 5 "$U/api/v1/connections?sort=src&offset=29900&limit=100")"
printf '%-58s %s\n' "full list, unsorted" "$(timeit 3 "$U/api/v1/connections")"
printf '%-58s %s\n' "full list, sorted: ?sort=-bytes" "$(timeit 3 "$U/api/v1/connections?sort=-bytes")"
printf '%-58s %s\n' "CSV of the whole table: ?format=csv&sort=src" "$(timeit 3 "$U/api/v1/connections?format=csv&sort=src")"
printf '%-58s %s\n' "per-host totals: /api/v1/hosts" "$(timeit 3 "$U/api/v1/hosts")"
printf '%-58s %s\n' "Prometheus: /metrics" "$(timeit 3 "$U/metrics")"
printf 'peak RSS of ctrackd after these: %s KiB\n' "$(kib VmHWM)"

if [ "${BROWSER:-1}" = 1 ] && [ -x /usr/bin/chromium ]; then
    echo
    echo "== the page in headless Chromium (load until the first 100 rows show)"
    CTRACK_BENCH_URL="$U/" CTRACK_BENCH_NETNS=$NS \
        cargo test --release -q --test web_browser -- --ignored --nocapture bench_page_load 2>/dev/null |
        grep -E '^page_' || echo "(browser run failed)"
fi
stop_daemon
