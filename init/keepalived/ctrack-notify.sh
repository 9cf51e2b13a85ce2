#!/bin/sh
# keepalived notify script for ctrackd: what conntrackd's primary-backup.sh
# does, for ctrackd (or conntrackd: set CTRACKD=/usr/sbin/conntrackd).
#
#   notify_master "/etc/ctrack/ctrack-notify.sh primary"
#   notify_backup "/etc/ctrack/ctrack-notify.sh backup"
#   notify_fault  "/etc/ctrack/ctrack-notify.sh fault"
#
# Also works as a generic `notify` script (keepalived then passes
# TYPE NAME STATE: the third argument is used).
#
# primary: commit the external cache to the kernel (-c), flush the caches
#          (-f), resync the internal cache with the kernel (-R), send a bulk
#          update to the backup (-B).
# backup:  start ctrackd if it is not running, flush the kernel table after
#          PurgeTimeout (-t: removes entries left from being primary),
#          ask the new primary for a full resync (-n).
# fault:   -t.

CTRACKD=${CTRACKD:-/usr/sbin/ctrackd}
CONF=${CTRACKD_CONF:-/etc/ctrack/ctrackd.conf}
LOCK=${CTRACKD_LOCK:-/var/lock/ctrackd.lock}
# how to start the daemon when it is not running (OpenWrt: the init script)
START=${CTRACKD_START:-"$CTRACKD -C $CONF -d"}

log() {
	logger -t ctrack-notify "$*" 2>/dev/null || echo "ctrack-notify: $*" >&2
}

run() {
	if ! "$CTRACKD" -C "$CONF" "$@"; then
		log "ERROR: failed to invoke $CTRACKD $*"
	fi
}

state=$1
case "$1" in
	GROUP|INSTANCE) state=$3 ;;
esac

case "$state" in
	primary|master|MASTER)
		run -c
		run -f
		run -R
		run -B
		;;
	backup|BACKUP)
		if ! "$CTRACKD" -C "$CONF" -s >/dev/null 2>&1; then
			if [ -f "$LOCK" ]; then
				log "WARNING: ctrackd was not cleanly stopped, removing $LOCK"
				rm -f "$LOCK"
			fi
			if ! $START; then
				log "ERROR: failed to start ctrackd ($START)"
			fi
		fi
		run -t
		run -n
		;;
	fault|FAULT)
		run -t
		;;
	stop|STOP)
		;;
	*)
		echo "usage: $0 primary|backup|fault" >&2
		exit 1
		;;
esac
exit 0
