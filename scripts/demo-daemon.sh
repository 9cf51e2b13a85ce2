# Sourced by scripts/demo.sh: start ctrackd (cache, WAN watch, web page) in
# the lab router and show it; with a terminal, keep it running until Ctrl-C.
DDIR=$(mktemp -d /tmp/ctdemo-d.XXXXXX)
WEBPORT=${CTRACK_DEMO_PORT:-8088}
cat > "$DDIR/ctrackd.conf" <<CONF
General {
  LockFile $DDIR/ctrackd.lock
  UNIX { Path $DDIR/ctrackd.ctl }
  LogFile $DDIR/ctrackd.log
  PidFile $DDIR/ctrackd.pid
}
# the router's LAN address, as on a home router
Web {
  Address 10.9.1.1
  Port $WEBPORT
}
WAN {
  Interface wan0
  Flush stale
}
CONF
say "ctrackd: the daemon keeps a cache of the router's flows from kernel events"
ip netns exec "$R" "$BIN" daemon -d -C "$DDIR/ctrackd.conf"
for _ in $(seq 1 50); do [ -S "$DDIR/ctrackd.ctl" ] && break; sleep 0.1; done
ip netns exec "$C" ping -c 1 -W 1 10.9.2.1 >/dev/null || true
sleep 0.3
run "$BIN" daemon -C "$DDIR/ctrackd.conf" -s
run "$BIN" daemon -C "$DDIR/ctrackd.conf" -i
say "the JSON API, from the LAN side"
run ip netns exec "$C" curl -s "http://10.9.1.1:$WEBPORT/api/v1/connections?limit=3&sort=-bytes"
echo
run ip netns exec "$C" curl -s "http://10.9.1.1:$WEBPORT/api/v1/stats"
echo

stop_daemon() {
    "$BIN" daemon -C "$DDIR/ctrackd.conf" -k >/dev/null 2>&1 || true
    [ -n "${FWD:-}" ] && kill "$FWD" 2>/dev/null
    rm -rf "$DDIR"
}

if [ -t 0 ] && [ -t 1 ] && command -v socat >/dev/null; then
    # the page lives on the router's LAN address inside the lab; forward a
    # port on this machine's loopback to it for the browser
    socat "TCP-LISTEN:$WEBPORT,bind=127.0.0.1,reuseaddr,fork" \
        "EXEC:ip netns exec $R socat STDIO TCP\:10.9.1.1\:$WEBPORT" &
    FWD=$!
    say "web page: http://127.0.0.1:$WEBPORT/  (in the lab: http://10.9.1.1:$WEBPORT/)"
    echo "The lab and ctrackd keep running with live traffic; press Ctrl-C to stop."
    trap 'stop_daemon; cleanup; exit 0' INT TERM
    while true; do
        ip netns exec "$C" ping -c 1 -W 1 10.9.2.2 >/dev/null 2>&1 || true
        ip netns exec "$C" sh -c 'echo q | nc -u -w 0 10.9.2.2 53' >/dev/null 2>&1 || true
        sleep 2
    done
else
    say "web page: http://10.9.1.1:$WEBPORT/ inside the lab (run make demo in a terminal to keep it up)"
fi
printf '\nctrackd log:\n'; cat "$DDIR/ctrackd.log"
stop_daemon
