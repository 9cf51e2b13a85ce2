#!/bin/sh
# Benchmark (not a test): ctrack against conntrack-tools in one run, on
# one machine, in a private network namespace.
#
# 1. Listing: loads N TCP flows (default 200000) into a namespace with
#    `conntrack -R`, then times `ctrack -L`, `conntrack -L` and
#    `cat /proc/net/nf_conntrack` (the kernel's own formatting) inside it,
#    median of RUNS runs each (output to /dev/null), and prints the ratios.
# 2. Event burst: `ctrack -E -e NEW` and `conntrack -E -e NEW` listen while
#    the N flows are inserted again; prints events shown vs inserted and
#    ctrack's overrun warnings.
#
# Usage (root): bench/list.sh            N=50000 RUNS=3 bench/list.sh
# CTRACK=path/to/ctrack picks the binary (default: a release-fast build).
set -eu
cd "$(dirname "$0")/.."

N=${N:-200000}
RUNS=${RUNS:-5}
CTRACK=${CTRACK:-target/release-fast/ctrack}
if [ "${CTRACK}" = target/release-fast/ctrack ]; then
    cargo build --quiet --profile release-fast
fi
CTRACK=$(realpath "$CTRACK")
command -v conntrack >/dev/null || { echo "bench: conntrack not installed (apt-get install conntrack)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench: needs root (network namespaces)" >&2; exit 1; }
modprobe nf_conntrack_netlink 2>/dev/null || true

NS=ctb-list-$$
TMP=$(mktemp -d)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
inns() { ip netns exec "$NS" "$@"; }
# accounting and timestamps on: every entry then carries counters and a
# start time, as on a router (more attributes to decode and print)
inns sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1

# N distinct TCP flows: 10.(x).(y).(z):port -> 192.0.2.1:443
awk -v n="$N" 'BEGIN {
    for (i = 0; i < n; i++) {
        a = int(i / 65536) % 256; b = int(i / 256) % 256; c = i % 256;
        printf "-I -s 10.%d.%d.%d -d 192.0.2.1 -p tcp --sport %d --dport 443 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 86400\n", a, b, c, 1024 + i % 60000
    }
}' > "$TMP/flows.txt"

now_ns() { date +%s%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# times "$@" (inside the namespace) RUNS times; prints the median in ms
time_cmd() {
    i=0
    while [ "$i" -lt "$RUNS" ]; do
        t0=$(now_ns)
        inns "$@" >/dev/null 2>&1
        t1=$(now_ns)
        echo $(((t1 - t0) / 1000))
        i=$((i + 1))
    done | median | awk '{ printf "%.1f", $1 / 1000 }'
}

echo "loading $N TCP flows with conntrack -R ..."
t0=$(now_ns)
inns conntrack -R "$TMP/flows.txt"
t1=$(now_ns)
have=$(inns conntrack -C)
echo "loaded $have entries in $(((t1 - t0) / 1000000)) ms"

# the outputs agree (same table, same bytes) before anything is timed
# (timeouts and delta-time tick between the two runs: masked)
mask() { sed -E 's/^(tcp +6 )[0-9]+/\1T/; s/delta-time=[0-9]+/delta-time=D/' "$1"; }
inns "$CTRACK" -L >"$TMP/ours.txt" 2>/dev/null
inns conntrack -L >"$TMP/theirs.txt" 2>/dev/null
if [ "$(mask "$TMP/ours.txt" | md5sum)" = "$(mask "$TMP/theirs.txt" | md5sum)" ]; then same=yes; else same="NO (differs)"; fi

ours=$(time_cmd "$CTRACK" -L)
theirs=$(time_cmd conntrack -L)
proc=$(time_cmd cat /proc/net/nf_conntrack)
ours_x=$(time_cmd "$CTRACK" -L -o extended,id)
theirs_x=$(time_cmd conntrack -L -o extended,id)
ours_f=$(time_cmd "$CTRACK" -L -p tcp --sport 2000)
theirs_f=$(time_cmd conntrack -L -p tcp --sport 2000)

echo
echo "== listing $have flows (median of $RUNS runs, output to /dev/null)"
printf '%-34s %10s ms\n' "ctrack -L" "$ours" "conntrack -L" "$theirs" \
    "cat /proc/net/nf_conntrack" "$proc" "ctrack -L -o extended,id" "$ours_x" \
    "conntrack -L -o extended,id" "$theirs_x" "ctrack -L -p tcp --sport 2000" "$ours_f" \
    "conntrack -L -p tcp --sport 2000" "$theirs_f"
echo "identical output: $same"
# where the time goes: the kernel's dump (sys) is the same for every
# tool; what a tool adds is its user time (GNU time, if installed)
if [ -x /usr/bin/time ]; then
    for t in "$CTRACK" conntrack; do
        /usr/bin/time -f "%U %S" -o "$TMP/cpu" ip netns exec "$NS" "$t" -L >/dev/null 2>&1
        read -r usr sys < "$TMP/cpu"
        printf '%-34s user %ss sys %ss\n' "$(basename "$t") -L CPU" "$usr" "$sys"
    done
    /usr/bin/time -f "%U %S" -o "$TMP/cpu" ip netns exec "$NS" cat /proc/net/nf_conntrack >/dev/null 2>&1
    read -r usr sys < "$TMP/cpu"
    printf '%-34s user %ss sys %ss\n' "cat /proc/net/nf_conntrack CPU" "$usr" "$sys"
fi
awk -v o="$ours" -v t="$theirs" -v p="$proc" -v ox="$ours_x" -v tx="$theirs_x" -v of="$ours_f" -v tf="$theirs_f" 'BEGIN {
    printf "conntrack -L / ctrack -L:              %.2fx (target >= 3x)\n", t / o
    printf "ctrack -L / cat /proc/net/nf_conntrack: %.2fx (target <= 1.2x)\n", o / p
    printf "conntrack / ctrack, -o extended,id:     %.2fx\n", tx / ox
    printf "conntrack / ctrack, filtered:           %.2fx\n", tf / of
}'

echo
echo "== event burst: $N NEW events while conntrack -R inserts $N flows"
inns conntrack -F 2>/dev/null
ip netns exec "$NS" "$CTRACK" -E -e NEW >"$TMP/ev-ours.txt" 2>"$TMP/ev-ours.err" &
PIDS="$!"
ip netns exec "$NS" conntrack -E -e NEW >"$TMP/ev-theirs.txt" 2>"$TMP/ev-theirs.err" &
PIDS="$PIDS $!"
sleep 1
t0=$(now_ns)
inns conntrack -R "$TMP/flows.txt"
t1=$(now_ns)
# let both drain what is queued, then stop them as a person would
prev=-1
while :; do
    cur=$(cat "$TMP/ev-ours.txt" "$TMP/ev-theirs.txt" | wc -l)
    [ "$cur" = "$prev" ] && break
    prev=$cur
    sleep 1
done
for p in $PIDS; do kill -INT "$p" 2>/dev/null || true; done
for p in $PIDS; do wait "$p" 2>/dev/null || true; done
PIDS=""
shown_ours=$(wc -l <"$TMP/ev-ours.txt")
shown_theirs=$(wc -l <"$TMP/ev-theirs.txt")
overruns=$(grep -c 'overrun' "$TMP/ev-ours.err" || true)
last_warning=$(grep 'overrun' "$TMP/ev-ours.err" | tail -n 1 || true)
theirs_enobufs=$(grep -c 'ENOBUFS' "$TMP/ev-theirs.err" || true)
echo "inserted $N flows in $(((t1 - t0) / 1000000)) ms"
printf '%-26s %8s of %s events shown, %s overrun warnings\n' \
    "ctrack -E -e NEW" "$shown_ours" "$N" "$overruns" \
    "conntrack -E -e NEW" "$shown_theirs" "$N" "$theirs_enobufs"
[ -n "$last_warning" ] && echo "ctrack's last warning: $last_warning"
if [ "$shown_ours" -eq "$N" ] || [ "$overruns" -gt 0 ]; then
    echo "ctrack: every event shown or every overrun reported: yes"
else
    echo "ctrack: events lost without a warning: NO"
fi
