#!/bin/bash
# make demo: a router lab in network namespaces with live traffic, and ctrack on it.
#   client (10.9.1.2) -- router (NAT: masquerade + port forward) -- server (10.9.2.2)
# Everything lives in namespaces named ctdemo-*; they are removed on exit.
set -eu
BIN=${CTRACK:-$(cd "$(dirname "$0")/.." && pwd)/target/release/ctrack}
P=ctdemo
C=$P-c R=$P-r S=$P-s

cleanup() {
    for n in $C $R $S; do
        for pid in $(ip netns pids $n 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del $n 2>/dev/null || true
    done
}
trap cleanup EXIT INT TERM
cleanup

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || true; }

for n in $C $R $S; do ip netns add $n; ip -n $n link set lo up; done
ip link add c0 netns $C type veth peer name lan0 netns $R
ip link add s0 netns $S type veth peer name wan0 netns $R
ip -n $C addr add 10.9.1.2/24 dev c0; ip -n $C addr add fd09:1::2/64 dev c0 nodad
ip -n $R addr add 10.9.1.1/24 dev lan0; ip -n $R addr add fd09:1::1/64 dev lan0 nodad
ip -n $R addr add 10.9.2.1/24 dev wan0; ip -n $R addr add fd09:2::1/64 dev wan0 nodad
ip -n $S addr add 10.9.2.2/24 dev s0; ip -n $S addr add fd09:2::2/64 dev s0 nodad
for l in "$C c0" "$R lan0" "$R wan0" "$S s0"; do set -- $l; ip -n $1 link set $2 up; done
ip -n $C route add default via 10.9.1.1; ip -n $C -6 route add default via fd09:1::1
ip -n $S route add default via 10.9.2.1; ip -n $S -6 route add default via fd09:2::1
ip netns exec $R sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1
ip netns exec $R nft -f - <<'NFT'
table inet lab {
  chain forward_filter { type filter hook forward priority 0; policy accept; ct state invalid drop; }
  chain postnat { type nat hook postrouting priority 100; oifname "wan0" masquerade; }
  chain prenat { type nat hook prerouting priority -100; iifname "wan0" tcp dport 2222 dnat ip to 10.9.1.2:22; }
}
NFT

say "traffic: pings (v4, v6), a long TCP session, UDP, a port forward"
ip netns exec $S sh -c 'while true; do nc -l -p 8080 >/dev/null 2>&1; done' & disown 2>/dev/null || true
ip netns exec $C sh -c 'while true; do nc -l -p 22 >/dev/null 2>&1; done' & disown 2>/dev/null || true
sleep 0.3
ip netns exec $C ping -c 2 -i 0.2 10.9.2.2 >/dev/null
ip netns exec $C ping -c 2 -i 0.2 fd09:2::2 >/dev/null
ip netns exec $C sh -c '(echo hello; sleep 600) | nc 10.9.2.2 8080 >/dev/null 2>&1' & disown 2>/dev/null || true
ip netns exec $C sh -c 'for i in 1 2 3; do echo q | nc -u -w 0 10.9.2.2 53; done' >/dev/null 2>&1 || true
ip netns exec $S sh -c '(echo ssh; sleep 600) | nc 10.9.2.1 2222 >/dev/null 2>&1' & disown 2>/dev/null || true
sleep 1

say "ctrack -L: the router's table (same text as conntrack -L)"
run "$BIN" --netns $R -L
say "filters: TCP only, NATed flows, IPv6, by port"
run "$BIN" --netns $R -L -p tcp
run "$BIN" --netns $R -L -j
run "$BIN" --netns $R -L -f ipv6
run "$BIN" --netns $R -L -p tcp --dport 8080 -o extended,id
say "JSON (one object per flow), for scripts and web UIs"
run "$BIN" --netns $R -L -p tcp -o json
say "count and per-CPU statistics"
run "$BIN" --netns $R -C
run "$BIN" --netns $R -S
say "same table through Debian's conntrack, for comparison"
run ip netns exec $R conntrack -L

if [ -f "$(dirname "$0")/demo-daemon.sh" ]; then
    . "$(dirname "$0")/demo-daemon.sh"
fi
say "done: removing the lab"
