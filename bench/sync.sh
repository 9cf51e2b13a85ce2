#!/bin/bash
# Sync of a ctrackd pair against a conntrackd pair, in one run (root).
#
# For each pair: two namespaces (primary, standby) joined by a veth
# `sync0` (10.9.9.1 <-> 10.9.9.2), FTFW over UDP with the same settings on
# both daemons. N new flows (50k by default) are loaded into the
# primary's kernel with `conntrack -R`; measured:
#   - time from the start of the load until the standby's external cache
#     holds all N (polled with `-s` every 50 ms; the load alone is timed too);
#   - bytes on the wire per flow: the sync interface's tx_bytes counters,
#     primary->standby (the flows) and standby->primary (ACKs), over the
#     whole exchange;
#   - commit time of the N flows on the standby (`-c`): the daemon's own
#     "commit has taken" log line, and the client's wall time;
#   - the time the standby takes to answer `-s` while that commit runs
#     (asked 50 ms after `-c`; whether the commit was still running when
#     the answer came is counted);
#   - RSS of both daemons once synced.
# With LOSS="0 40" (percent, default 0) each run is repeated with that
# share of the sync datagrams dropped in each direction (an nft
# `numgen random` rule on both ends of the link); the loss table gives,
# per implementation, how many runs converged within LIMIT seconds
# (default 60) and their times. The first table is of the runs without
# loss (or of the lowest loss given).
#   usage: bench/sync.sh [flows]      (default 50000; RUNS=1 repeats)
#   e.g.   N=20000 LOSS="0 40" RUNS=5 bench/sync.sh 20000
set -eu
cd "$(dirname "$0")/.."
N=${1:-50000}
RUNS=${RUNS:-1}
LOSS=${LOSS:-0}
LIMIT=${LIMIT:-60}
BIN=$PWD/target/release/ctrack
DIR=$(mktemp -d /tmp/ctbench-s.XXXXXX)

# namespaces made (pair runs in a subshell: they are kept in a file)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    [ -f "$DIR/nss" ] && while read -r x y; do
        for ns in $x $y; do
            for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        done
    done < "$DIR/nss"
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

command -v conntrackd >/dev/null || { echo "conntrackd is not installed (apt-get install conntrackd)"; exit 1; }
command -v conntrack >/dev/null || { echo "conntrack is not installed (apt-get install conntrack)"; exit 1; }
[ -x "$BIN" ] || cargo build --release >/dev/null

awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++)
    printf "-I -p tcp -s 10.%d.%d.%d -d 10.200.0.1 --sport 40000 --dport 443 --state ESTABLISHED -t 86400 -u SEEN_REPLY,ASSURED\n",
        int(i / 65536), int(i / 256) % 256, i % 256 }' > "$DIR/flows.txt"

now_ms() { date +%s%3N; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
txb() { ip netns exec "$1" cat /sys/class/net/sync0/statistics/tx_bytes; }
txp() { ip netns exec "$1" cat /sys/class/net/sync0/statistics/tx_packets; }

# the config of one side: $1 = ctrackd|conntrackd, $2 = tag, $3 = own
# address, $4 = peer address
conf() {
    local extra=""
    [ "$1" = conntrackd ] && extra="  Syslog off
  Systemd off"
    cat <<EOF
General {
  HashSize 65536
  HashLimit 262144
  LockFile $DIR/$2.lock
  UNIX { Path $DIR/$2.ctl }
  LogFile $DIR/$2.log
  NetlinkBufferSize 8388608
  NetlinkBufferSizeMaxGrowth 67108864
$extra
  Filter From Userspace {
    Address Ignore {
      IPv4_address 127.0.0.1
      IPv4_address 10.9.9.0/24
    }
  }
}
Sync {
  Mode FTFW {
  }
  UDP Default {
    IPv4_address $3
    IPv4_Destination_Address $4
    Port 3780
    Interface sync0
    SndSocketBuffer 1249280
    RcvSocketBuffer 1249280
    Checksum on
  }
}
EOF
}

# client command of a side: $1 = ctrackd|conntrackd, $2 = tag, args...
cli() {
    local impl=$1 tag=$2
    shift 2
    if [ "$impl" = ctrackd ]; then
        "$BIN" daemon -C "$DIR/$tag.conf" "$@"
    else
        conntrackd -C "$DIR/$tag.conf" "$@"
    fi
}

external_count() { # impl tag
    cli "$1" "$2" -s 2>/dev/null | awk '/^cache external/ { ext = 1 } ext && /current active/ { gsub(/[^0-9]/, ""); print; exit }'
}

# one pair: prints "sync_ms load_ms ab_bytes ba_bytes commit_s commit_wall_ms
# rss_primary rss_standby ab_datagrams converged(0|1) stats_during_commit_ms
# answered_during"
pair() { # impl run loss(percent)
    local impl=$1 run=$2 loss=$3
    local a=ctbench-s-$$-$impl-$run-$loss-a b=ctbench-s-$$-$impl-$run-$loss-b
    ip netns add "$a"
    ip netns add "$b"
    echo "$a $b" >> "$DIR/nss"
    ip -n "$a" link set lo up
    ip -n "$b" link set lo up
    ip link add sbench$$ netns "$a" type veth peer name sbenchp$$ netns "$b"
    ip -n "$a" link set sbench$$ name sync0
    ip -n "$b" link set sbenchp$$ name sync0
    ip -n "$a" addr add 10.9.9.1/24 dev sync0
    ip -n "$b" addr add 10.9.9.2/24 dev sync0
    ip -n "$a" link set sync0 up
    ip -n "$b" link set sync0 up
    if [ "$loss" -gt 0 ]; then
        for ns in "$a" "$b"; do
            printf 'table inet loss {\n chain out { type filter hook output priority 0; oifname "sync0" udp dport 3780 numgen random mod 100 < %d counter drop; }\n}\n' "$loss" |
                ip netns exec "$ns" nft -f -
        done
    fi
    conf "$impl" "$impl-a" 10.9.9.1 10.9.9.2 > "$DIR/$impl-a.conf"
    conf "$impl" "$impl-b" 10.9.9.2 10.9.9.1 > "$DIR/$impl-b.conf"
    local pa pb
    if [ "$impl" = ctrackd ]; then
        ip netns exec "$a" "$BIN" daemon -C "$DIR/$impl-a.conf" >/dev/null 2>&1 &
        pa=$!
        ip netns exec "$b" "$BIN" daemon -C "$DIR/$impl-b.conf" >/dev/null 2>&1 &
        pb=$!
    else
        ip netns exec "$a" conntrackd -C "$DIR/$impl-a.conf" >/dev/null 2>&1 &
        pa=$!
        ip netns exec "$b" conntrackd -C "$DIR/$impl-b.conf" >/dev/null 2>&1 &
        pb=$!
    fi
    for _ in $(seq 1 200); do
        cli "$impl" "$impl-a" -s >/dev/null 2>&1 && cli "$impl" "$impl-b" -s >/dev/null 2>&1 && break
        sleep 0.05
    done
    sleep 2 # both sides past their HELLO
    local ab0 ba0 pk0 t0 t1 t2 n
    ab0=$(txb "$a")
    pk0=$(txp "$a")
    ba0=$(txb "$b")
    t0=$(now_ms)
    ip netns exec "$a" conntrack -R "$DIR/flows.txt" >/dev/null 2>&1
    t1=$(now_ms)
    n=0
    local converged=1
    while :; do
        n=$(external_count "$impl" "$impl-b" || echo 0)
        [ "${n:-0}" -ge "$N" ] && break
        if [ $(( $(now_ms) - t0 )) -gt $((LIMIT * 1000)) ]; then
            converged=0
            break
        fi
        sleep 0.05
    done
    t2=$(now_ms)
    if [ "$converged" = 0 ]; then
        echo "$impl at $loss% loss: the standby has $n of $N flows after $LIMIT s" >&2
    fi
    sleep 1.5 # the last ACKs
    local ab ba pk
    ab=$(( $(txb "$a") - ab0 ))
    pk=$(( $(txp "$a") - pk0 ))
    ba=$(( $(txb "$b") - ba0 ))
    local ra rb
    ra=$(rss_kb "$pa")
    rb=$(rss_kb "$pb")
    local c0 c1 commit s0 s1 cpid during
    c0=$(now_ms)
    (
        cli "$impl" "$impl-b" -c >/dev/null 2>&1 || echo "$impl: -c failed" >&2
        now_ms > "$DIR/c1"
    ) &
    cpid=$!
    sleep 0.05
    s0=$(now_ms)
    cli "$impl" "$impl-b" -s >/dev/null 2>&1 || echo "$impl: -s failed during the commit" >&2
    s1=$(now_ms)
    # answered while the commit was still running?
    if kill -0 "$cpid" 2>/dev/null; then during=1; else during=0; fi
    wait "$cpid"
    c1=$(cat "$DIR/c1")
    commit=$(grep -o 'commit has taken [0-9.]*' "$DIR/$impl-b.log" | tail -1 | awk '{ print $4 }')
    local committed
    committed=$(ip netns exec "$b" conntrack -C)
    [ "$committed" -ge "$N" ] || echo "$impl: $committed entries in the standby's table after -c" >&2
    kill "$pa" "$pb" 2>/dev/null || true
    wait "$pa" "$pb" 2>/dev/null || true
    for p in $(ip netns pids "$a") $(ip netns pids "$b"); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$a"
    ip netns del "$b"
    [ -n "${KEEP_LOGS:-}" ] && cat "$DIR/$impl-b.log" >&2
    rm -f "$DIR"/*.lock "$DIR"/*.ctl "$DIR"/*.log
    echo "$((t2 - t0)) $((t1 - t0)) $ab $ba ${commit:-0} $((c1 - c0)) $ra $rb $pk $converged $((s1 - s0)) $during"
}

echo "sync of $N new flows, FTFW over UDP, loaded with conntrack -R on the primary ($RUNS run(s), loss: $LOSS%)"
for run in $(seq 1 "$RUNS"); do
    # alternate the order so neither pair always runs first
    if [ $((run % 2)) -eq 1 ]; then order="ctrackd conntrackd"; else order="conntrackd ctrackd"; fi
    for loss in $LOSS; do
        for impl in $order; do
            read -r s l ab ba c cw ra rb pk ok sd dur < <(pair "$impl" "$run" "$loss")
            # impl s l ab ba c cw ra rb pk after-load loss converged -s-during answered-during
            echo "$impl $s $l $ab $ba $c $cw $ra $rb $pk $((s - l)) $loss $ok $sd $dur" >> "$DIR/results"
        done
    done
done

# medians per implementation, over the runs of the lowest loss given
# shellcheck disable=SC2086 # LOSS is a list of words
BASE=$(printf '%s\n' $LOSS | sort -n | head -1)
med() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
col() { awk -v i="$1" -v k="$2" -v b="$BASE" '$1 == i && $12 == b { print $k }' "$DIR/results" | med; }
printf '\n%-42s %12s %12s %8s\n' "" ctrackd conntrackd "ratio"
row() { # label column scale unit(printf fmt)
    local c d
    c=$(col ctrackd "$2")
    d=$(col conntrackd "$2")
    awk -v l="$1" -v c="$c" -v d="$d" -v s="$3" -v f="$4" 'BEGIN {
        cv = c / s; dv = d / s
        printf "%-42s " f " " f " %7.2fx\n", l, cv, dv, (cv > 0 ? dv / cv : 0) }'
}
row "all $N in the standby's cache (s)" 2 1000 "%12.2f"
row "  of which conntrack -R load (s)" 3 1000 "%12.2f"
row "  standby done after the load (ms)" 11 1 "%12.0f"
row "wire bytes/flow primary->standby" 4 "$N" "%12.1f"
row "wire bytes/flow standby->primary" 5 "$N" "%12.1f"
row "datagrams primary->standby per 1k flows" 10 "$(awk -v n="$N" 'BEGIN { print n / 1000 }')" "%12.1f"
row "commit of $N, daemon's log (s)" 6 1 "%12.3f"
row "commit of $N, client wall (s)" 7 1000 "%12.3f"
row "-s answered during that commit (ms)" 14 1 "%12.0f"
during() { awk -v i="$1" -v b="$BASE" '$1 == i && $12 == b { n++; d += $15 } END { printf "%d/%d", d, n }' "$DIR/results"; }
printf '%-42s %12s %12s\n' "  answers that came before the commit ended" "$(during ctrackd)" "$(during conntrackd)"
row "RSS primary (MB)" 8 1024 "%12.1f"
row "RSS standby (MB)" 9 1024 "%12.1f"
echo "(ratio: conntrackd / ctrackd; above 1 means ctrackd is faster or smaller; loss $BASE%)"

# convergence under loss: runs that converged within LIMIT, and their times
lossrow() { # impl loss
    awk -v i="$1" -v x="$2" -v lim="$LIMIT" '$1 == i && $12 == x {
            runs++; if ($13 == 1) { ok++; t[ok] = $2 / 1000 } }
        END {
            if (!runs) exit
            n = ok; for (a = 1; a <= n; a++) for (b = a + 1; b <= n; b++) if (t[b] < t[a]) { x = t[a]; t[a] = t[b]; t[b] = x }
            if (n) printf "%d/%d in %.1f-%.1f s, median %.1f s", ok, runs, t[1], t[n], t[int((n + 1) / 2)]
            else printf "0/%d (none within %d s)", runs, lim }' "$DIR/results"
}
printf '\n%-8s %-44s %-44s\n' loss ctrackd conntrackd
for loss in $LOSS; do
    printf '%-8s %-44s %-44s\n' "$loss%" "$(lossrow ctrackd "$loss")" "$(lossrow conntrackd "$loss")"
done
echo "(all $N flows in the standby's external cache, counted from the start of the load; each way loses that share of the sync datagrams)"
[ -n "${RESULTS:-}" ] && cp "$DIR/results" "$RESULTS"
exit 0
