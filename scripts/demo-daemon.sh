# Sourced by scripts/demo.sh: start ctrackd in the lab router and show it.
DDIR=$(mktemp -d /tmp/ctdemo-d.XXXXXX)
cat > "$DDIR/ctrackd.conf" <<CONF
General {
  LockFile $DDIR/ctrackd.lock
  UNIX { Path $DDIR/ctrackd.ctl }
  LogFile $DDIR/ctrackd.log
  PidFile $DDIR/ctrackd.pid
}
CONF
say "ctrackd: the daemon keeps a cache of the router's flows from kernel events"
ip netns exec $R "$BIN" daemon -d -C "$DDIR/ctrackd.conf"
for _ in $(seq 1 50); do [ -S "$DDIR/ctrackd.ctl" ] && break; sleep 0.1; done
ip netns exec $C ping -c 1 -W 1 10.9.2.1 >/dev/null || true
sleep 0.3
run "$BIN" daemon -C "$DDIR/ctrackd.conf" -s
run "$BIN" daemon -C "$DDIR/ctrackd.conf" -i
run "$BIN" daemon -C "$DDIR/ctrackd.conf" -s runtime
printf '\nctrackd log:\n'; cat "$DDIR/ctrackd.log"
run "$BIN" daemon -C "$DDIR/ctrackd.conf" -k
rm -rf "$DDIR"
