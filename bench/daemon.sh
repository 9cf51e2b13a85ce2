#!/bin/bash
# Memory and startup of ctrackd vs conntrackd on the same table, in one run.
#
# For 50k and 200k TCP flows loaded into a private network namespace, this
# starts each daemon (same Filter; conntrackd in Stats mode, its cache
# without sync, and in FTFW sync mode towards an unreachable peer), waits
# until its cache holds the whole table (startup = dump into cache), and
# reads its RSS. Bytes per flow = (RSS with flows - RSS idle) / flows.
#   usage: bench/daemon.sh [flows...]     (default: 50000 200000)
set -eu
cd "$(dirname "$0")/.."
FLOWS=${*:-50000 200000}
NS=ctbench-d-$$
DIR=$(mktemp -d /tmp/ctbench-d.XXXXXX)
BIN=$PWD/target/release/ctrack

cleanup() {
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

command -v conntrackd >/dev/null || { echo "conntrackd is not installed (apt-get install conntrackd)"; exit 1; }
[ -x "$BIN" ] || cargo build --release >/dev/null
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add dummy0 type veth peer name dummy1
ip -n "$NS" link set dummy1 up
ip -n "$NS" addr add 192.0.2.1/24 dev dummy0
ip -n "$NS" link set dummy0 up

FILTER='  Filter From Userspace {
    Address Ignore { IPv4_address 127.0.0.1 }
  }'
cat > "$DIR/ctrackd.conf" <<EOF
General {
  HashSize 65536
  HashLimit 1048576
  LockFile $DIR/ctrackd.lock
  UNIX { Path $DIR/ctrackd.ctl }
  NetlinkBufferSize 8388608
  NetlinkBufferSizeMaxGrowth 67108864
$FILTER
}
EOF
conntrackd_conf() { # $1 = stats|ftfw
    cat <<EOF
General {
  HashSize 65536
  HashLimit 1048576
  LockFile $DIR/conntrackd.lock
  UNIX { Path $DIR/conntrackd.ctl }
  NetlinkBufferSize 8388608
  NetlinkBufferSizeMaxGrowth 67108864
  Syslog off
  LogFile off
$FILTER
}
EOF
    if [ "$1" = stats ]; then
        printf 'Stats {\n  LogFile off\n}\n'
    else
        printf 'Sync {\n  Mode FTFW {\n  }\n  UDP {\n    IPv4_address 192.0.2.1\n    IPv4_Destination_Address 192.0.2.2\n    Port 3780\n    Interface dummy0\n  }\n}\n'
    fi
}
conntrackd_conf stats > "$DIR/cd-stats.conf"
conntrackd_conf ftfw > "$DIR/cd-ftfw.conf"

load() { # $1 = flows
    ip netns exec "$NS" conntrack -F 2>/dev/null || true
    awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++)
        printf "-I -p tcp -s 10.%d.%d.%d -d 10.200.0.1 --sport 40000 --dport 443 --state ESTABLISHED -t 86400 -u SEEN_REPLY,ASSURED\n",
            int(i / 65536), int(i / 256) % 256, i % 256 }' > "$DIR/flows.txt"
    "$BIN" --netns "$NS" -R "$DIR/flows.txt"
}

now_ms() { date +%s%3N; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# start a daemon, wait until `$count` reports $1 flows; prints "pid ms"
run_daemon() { # name want cmd...
    local name=$1 want=$2; shift 2
    local t0 t1
    t0=$(now_ms)
    ip netns exec "$NS" "$@" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do
        local n
        n=$(count_"$name" 2>/dev/null || echo -1)
        [ "$n" = "$want" ] && break
        sleep 0.05
    done
    t1=$(now_ms)
    echo "$pid $((t1 - t0))"
}
count_ctrackd() { "$BIN" daemon -C "$DIR/ctrackd.conf" -s | awk -F'\t' '/current active/ { gsub(/ /, "", $2); print $2; exit }'; }
count_cdstats() { conntrackd -C "$DIR/cd-stats.conf" -s | awk -F'\t' '/current active/ { gsub(/ /, "", $2); print $2; exit }'; }
count_cdftfw() { conntrackd -C "$DIR/cd-ftfw.conf" -s | awk -F'\t' '/current active/ { gsub(/ /, "", $2); print $2; exit }'; }
stop() { kill "$1" 2>/dev/null || true; for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done; kill -9 "$1" 2>/dev/null || true; rm -f "$DIR"/*.lock "$DIR"/*.ctl; }

measure() { # name flows cmd...
    local name=$1 flows=$2; shift 2
    local pid ms idle rss
    ip netns exec "$NS" conntrack -F 2>/dev/null || true
    read -r pid ms < <(run_daemon "$name" 0 "$@")
    sleep 0.5
    idle=$(rss_kb "$pid")
    stop "$pid"
    load "$flows"
    read -r pid ms < <(run_daemon "$name" "$flows" "$@")
    sleep 0.5
    rss=$(rss_kb "$pid")
    stop "$pid"
    printf '%-22s %8d %10d %10d %10d %10d\n' "$name" "$flows" "$idle" "$rss" \
        $(( (rss - idle) * 1024 / flows )) "$ms"
}

printf '%-22s %8s %10s %10s %10s %10s\n' daemon flows idle_kB rss_kB bytes/flow startup_ms
for n in $FLOWS; do
    measure ctrackd "$n" "$BIN" daemon -C "$DIR/ctrackd.conf"
    measure cdstats "$n" conntrackd -C "$DIR/cd-stats.conf"
    measure cdftfw "$n" conntrackd -C "$DIR/cd-ftfw.conf"
done
echo "(cdstats: conntrackd in Stats mode; cdftfw: conntrackd with FTFW sync to an absent peer)"
