#!/bin/sh
# Benchmark (not a test): ctrack as it ships -- the static musl binary of
# `make static` (scripts/static-build.sh, opt-level "z") -- against
# conntrack-tools in one run, on one machine, in private network
# namespaces. Every command is timed RUNS times (output to /dev/null); the
# medians of wall time, user CPU and kernel (sys) CPU are printed apart,
# beside the kernel's raw dump floor: a plain netlink dump that decodes
# nothing, whose sys time is the kernel's own cost of the dump.
#
# 1. Listing: N TCP flows (default 200000) loaded with `conntrack -R`
#    (accounting and timestamps on); -L in text, -o json and -o
#    extended,id, and filtered lists (a port: the kernel selects; a
#    prefix: ctrack selects), each beside conntrack; user CPU as a share
#    of the kernel's dump time.
# 2. Event burst: `ctrack -E -e NEW` and `conntrack -E -e NEW` listen while
#    the N flows are inserted again: events shown, overruns, CPU.
# 3. Updates: a -R file of UPDATES `-U` lines (default 2000) against
#    UPDATE_N flows (default 50000), in two forms (whole tuples; `-s`
#    filters), beside conntrack, which is stopped after UPDATE_LIMIT s.
# 4. With PROFILES="3 s" (say): the same -L timed for builds with ctrack's
#    own code at those opt-levels (Cargo profile override), and their sizes.
#
# Usage (root): bench/list.sh             N=50000 RUNS=3 bench/list.sh
# CTRACK=path/to/ctrack times another binary (default: built as shipped).
# N flows need net.netfilter.nf_conntrack_max (a global limit, counted per
# namespace) above N: raised for the run when it is not, and restored.
set -eu
cd "$(dirname "$0")/.."

N=${N:-200000}
RUNS=${RUNS:-5}
UPDATES=${UPDATES:-2000}
UPDATE_N=${UPDATE_N:-50000}
UPDATE_LIMIT=${UPDATE_LIMIT:-60}
PROFILES=${PROFILES:-}
TARGET=x86_64-unknown-linux-musl
if [ -z "${CTRACK:-}" ]; then
    ./scripts/static-build.sh "$TARGET" --quiet ||
        { echo "bench: the static build failed: run make static first" >&2; exit 1; }
    CTRACK=target/$TARGET/release/ctrack
fi
CTRACK=$(realpath "$CTRACK")
command -v conntrack >/dev/null || { echo "bench: conntrack not installed (apt-get install conntrack)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: GNU time not installed (apt-get install time)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench: needs root (network namespaces)" >&2; exit 1; }
modprobe nf_conntrack_netlink 2>/dev/null || true

NS=ctb-list-$$
NSU=ctb-upd-$$
TMP=$(mktemp -d)
PIDS=""
MAXFILE=/proc/sys/net/netfilter/nf_conntrack_max
OLDMAX=$(cat "$MAXFILE")
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    ip netns del "$NSU" 2>/dev/null || true
    [ "$(cat "$MAXFILE")" = "$OLDMAX" ] || echo "$OLDMAX" > "$MAXFILE"
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
need=$((N + 1000))
if [ "$OLDMAX" -lt "$need" ]; then
    echo "raising nf_conntrack_max from $OLDMAX to $need for the run"
    echo "$need" > "$MAXFILE"
fi
ip netns add "$NS"
inns() { ip netns exec "$NS" "$@"; }
# accounting and timestamps on: every entry then carries counters and a
# start time, as on a router (more attributes to decode and print)
inns sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1

# N distinct TCP flows: 10.(x).(y).(z):port -> 192.0.2.1:443
flows() {
    awk -v n="$1" 'BEGIN {
        for (i = 0; i < n; i++) {
            a = int(i / 65536) % 256; b = int(i / 256) % 256; c = i % 256;
            printf "-I -s 10.%d.%d.%d -d 192.0.2.1 -p tcp --sport %d --dport 443 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 86400\n", a, b, c, 1024 + i % 60000
        }
    }'
}
flows "$N" > "$TMP/flows.txt"

# a plain ctnetlink dump that decodes nothing: its sys time is the
# kernel's own cost of the dump (C, so nothing else runs)
cat > "$TMP/rawdump.c" <<'EOF'
#include <linux/netlink.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static char buf[1 << 20];
int main(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	/* nlmsghdr (IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP) + nfgenmsg */
	struct { struct nlmsghdr h; uint8_t nfgen[4]; } req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = (1 << 8) | 1,
		       .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1 },
	};
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(fd, &req, sizeof(req), 0) < 0)
		return 1;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			return 1;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n))
			if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR)
				return 0;
	}
}
EOF
cc -O2 -o "$TMP/rawdump" "$TMP/rawdump.c" ||
    { echo "bench: a C compiler is needed for the raw dump floor (apt-get install gcc)" >&2; exit 1; }

now_ns() { date +%s%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# times "$@" in namespace $MNS RUNS times; sets WALL (ms), USR and SYS (s),
# each the median of its own column
MNS=$NS
measure() {
    : > "$TMP/times"
    i=0
    while [ "$i" -lt "$RUNS" ]; do
        /usr/bin/time -f "%e %U %S" -o "$TMP/t" ip netns exec "$MNS" "$@" >/dev/null 2>&1 || true
        # (GNU time puts "Command exited with non-zero status" first)
        tail -n 1 "$TMP/t" >> "$TMP/times"
        i=$((i + 1))
    done
    WALL=$(awk '{ print $1 * 1000 }' "$TMP/times" | median)
    USR=$(awk '{ print $2 }' "$TMP/times" | median)
    SYS=$(awk '{ print $3 }' "$TMP/times" | median)
}
row() { printf '%-40s %8s ms %7s s %7s s\n' "$1" "$WALL" "$USR" "$SYS"; }
header() { printf '%-40s %11s %9s %9s\n' "$1" "wall" "user" "sys"; }

echo "ctrack: $CTRACK ($(wc -c < "$CTRACK") bytes)"
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

echo
echo "== listing $have flows (medians of $RUNS runs, output to /dev/null)"
header ""
measure "$TMP/rawdump"; row "raw dump floor (kernel only)"; FLOOR=$SYS
measure cat /proc/net/nf_conntrack; row "cat /proc/net/nf_conntrack"
measure "$CTRACK" -L; row "ctrack -L"; L_USR=$USR; L_WALL=$WALL
measure conntrack -L; row "conntrack -L"; C_WALL=$WALL
measure "$CTRACK" -L -o json; row "ctrack -L -o json"; J_USR=$USR
measure "$CTRACK" -L -o extended,id; row "ctrack -L -o extended,id"; X_WALL=$WALL
measure conntrack -L -o extended,id; row "conntrack -L -o extended,id"; CX_WALL=$WALL
echo "identical output: $same"
echo
echo "== filtered lists of $have flows"
header ""
for f in "-p tcp --dport 22" "-p tcp --sport 2000" "-s 10.1.2.3" "-s 10.1.0.0/16"; do
    # shellcheck disable=SC2086
    measure "$CTRACK" -L $f; row "ctrack -L $f"; o=$WALL
    # shellcheck disable=SC2086
    measure conntrack -L $f; row "conntrack -L $f"; t=$WALL
    awk -v o="$o" -v t="$t" -v f="$f" 'BEGIN { printf "  conntrack / ctrack, -L %s: %.1fx\n", f, t / o }'
done
echo
awk -v lu="$L_USR" -v ju="$J_USR" -v fl="$FLOOR" -v lw="$L_WALL" -v cw="$C_WALL" -v xw="$X_WALL" -v cxw="$CX_WALL" 'BEGIN {
    printf "ctrack -L user CPU:         %5.1f%% of the kernel dump (goal <= 10%%)\n", 100 * lu / fl
    printf "ctrack -L -o json user CPU: %5.1f%% of the kernel dump (goal <= 10%%)\n", 100 * ju / fl
    printf "conntrack -L / ctrack -L wall: %.2fx; -o extended,id: %.2fx\n", cw / lw, cxw / xw
}'

echo
echo "== event burst: $N NEW events while conntrack -R inserts $N flows"
inns conntrack -F 2>/dev/null
/usr/bin/time -f "%U %S" -o "$TMP/ev-ours.cpu" ip netns exec "$NS" "$CTRACK" -E -e NEW >"$TMP/ev-ours.txt" 2>"$TMP/ev-ours.err" &
OURS_TIME=$!
/usr/bin/time -f "%U %S" -o "$TMP/ev-theirs.cpu" ip netns exec "$NS" conntrack -E -e NEW >"$TMP/ev-theirs.txt" 2>"$TMP/ev-theirs.err" &
THEIRS_TIME=$!
PIDS="$OURS_TIME $THEIRS_TIME"
sleep 1
t0=$(now_ns)
inns conntrack -R "$TMP/flows.txt"
t1=$(now_ns)
# let both drain what is queued, then stop them as a person would (SIGINT
# to the listeners themselves, the children of time)
prev=-1
while :; do
    cur=$(cat "$TMP/ev-ours.txt" "$TMP/ev-theirs.txt" | wc -l)
    [ "$cur" = "$prev" ] && break
    prev=$cur
    sleep 1
done
for p in $OURS_TIME $THEIRS_TIME; do
    for c in $(pgrep -P "$p" || true); do kill -INT "$c" 2>/dev/null || true; done
done
for p in $OURS_TIME $THEIRS_TIME; do wait "$p" 2>/dev/null || true; done
PIDS=""
shown_ours=$(wc -l <"$TMP/ev-ours.txt")
shown_theirs=$(wc -l <"$TMP/ev-theirs.txt")
overruns=$(grep -c 'overrun' "$TMP/ev-ours.err" || true)
theirs_enobufs=$(grep -c 'ENOBUFS' "$TMP/ev-theirs.err" || true)
read -r eu es < "$TMP/ev-ours.cpu"
read -r tu ts < "$TMP/ev-theirs.cpu"
echo "inserted $N flows in $(((t1 - t0) / 1000000)) ms"
printf '%-24s %8s of %s events shown, %s overrun warnings, user %s s, sys %s s\n' \
    "ctrack -E -e NEW" "$shown_ours" "$N" "$overruns" "$eu" "$es" \
    "conntrack -E -e NEW" "$shown_theirs" "$N" "$theirs_enobufs" "$tu" "$ts"
awk -v u="$eu" -v fl="$FLOOR" 'BEGIN { printf "ctrack -E user CPU: %.1f%% of the kernel dump of as many flows (goal <= 10%%)\n", 100 * u / fl }'
if [ "$shown_ours" -eq "$N" ] || [ "$overruns" -gt 0 ]; then
    echo "ctrack: every event shown or every overrun reported: yes"
else
    echo "ctrack: events lost without a warning: NO"
fi

if [ -n "$PROFILES" ]; then
    echo
    echo "== ctrack's own code at other opt-levels (Cargo profile override; std and the other crates stay at \"z\")"
    header ""
    measure "$CTRACK" -L; row "opt-level z (shipped), $(wc -c < "$CTRACK") bytes"
    for lvl in $PROFILES; do
        case $lvl in [0-9]) v=$lvl ;; *) v="\"$lvl\"" ;; esac
        ./scripts/static-build.sh "$TARGET" --quiet --target-dir "target/bench-opt-$lvl" \
            --config "profile.release.package.ctrack.opt-level=$v"
        b=$(realpath "target/bench-opt-$lvl/$TARGET/release/ctrack")
        measure "$b" -L; row "opt-level $lvl, $(wc -c < "$b") bytes"
    done
fi

ip netns del "$NS"
echo
echo "== updates: a -R file of $UPDATES -U lines against $UPDATE_N flows"
ip netns add "$NSU"
MNS=$NSU
flows "$UPDATE_N" > "$TMP/upd-flows.txt"
ip netns exec "$NSU" conntrack -R "$TMP/upd-flows.txt"
step=$((UPDATE_N / UPDATES))
[ "$step" -ge 1 ] || step=1
awk -v s="$step" -v n="$UPDATES" '(NR - 1) % s == 0 && k < n { k++; print "-U " $2 " " $3 " " $4 " " $5 " -p tcp --sport " $9 " --dport 443 -m " (k % 7 + 1) }' \
    "$TMP/upd-flows.txt" > "$TMP/upd-tuple.txt"
awk -v s="$step" -v n="$UPDATES" '(NR - 1) % s == 0 && k < n { k++; print "-U " $2 " " $3 " -m " (k % 5 + 10) }' \
    "$TMP/upd-flows.txt" > "$TMP/upd-src.txt"
# conntrack's runs set other marks, so its lines change entries too
sed -E 's/-m [0-9]+$/-m 30/' "$TMP/upd-tuple.txt" | head -n 200 > "$TMP/upd-tuple-200.txt"
sed -E 's/-m [0-9]+$/-m 40/' "$TMP/upd-tuple.txt" > "$TMP/upd-tuple-theirs.txt"
header ""
for form in tuple src; do
    case $form in tuple) what="whole tuples" ;; *) what="-s ADDRESS" ;; esac
    RUNS_SAVED=$RUNS; RUNS=1
    measure "$CTRACK" -R "$TMP/upd-$form.txt"; row "ctrack -R, $UPDATES lines, $what"
    RUNS=$RUNS_SAVED
done
# conntrack 1.4.7 dumps the whole table for each -U line, and in a -R run
# many of its -U lines fail with "Operation failed: Protocol error" (it
# reuses one sequence number): count those, and the entries it updated
for f in 200 theirs; do
    [ "$f" = 200 ] && lines=200 || lines=$UPDATES
    [ "$f" = 200 ] && mark=30 || mark=40
    if /usr/bin/time -f "%e %U %S" -o "$TMP/t" timeout "$UPDATE_LIMIT" \
        ip netns exec "$NSU" conntrack -R "$TMP/upd-tuple-$f.txt" >/dev/null 2>"$TMP/c.err"; then rc=0; else rc=$?; fi
    if [ "$rc" = 124 ]; then
        echo "conntrack -R, $lines lines, whole tuples: not finished after $UPDATE_LIMIT s (stopped)"
        continue
    fi
    read -r w u s <<EOT
$(tail -n 1 "$TMP/t")
EOT
    failed=$(grep -c 'Operation failed' "$TMP/c.err" || true)
    updated=$(ip netns exec "$NSU" conntrack -L -m "$mark" 2>&1 >/dev/null | sed -n 's/.*: \([0-9]*\) flow entries.*/\1/p')
    printf '%-40s %8s ms %7s s %7s s  (exit %s, %s lines failed, %s entries updated)\n' \
        "conntrack -R, $lines lines, whole tuples" "$(awk -v w="$w" 'BEGIN { print w * 1000 }')" "$u" "$s" \
        "$rc" "$failed" "$updated"
done
