# Sync (issue 4): conntrackd is already in TEST_PKGS (the sync tests pair
# with it); tcpdump regenerates the captures in tests/data/sync; shellcheck
# checks the keepalived scripts; python3-pyftpdlib is the FTP server of
# tests/sync_inject.rs (its client is Python's ftplib).
TEST_PKGS += tcpdump shellcheck python3-pyftpdlib

SYNC_SCRIPTS := init/keepalived/ctrack-notify.sh init/openwrt/keepalived.hotplug

.PHONY: sync-shellcheck sync-captures bench-sync

lint: sync-shellcheck

sync-shellcheck:
	shellcheck -s sh $(SYNC_SCRIPTS)
	shellcheck bench/sync.sh

# Regenerates tests/data/sync/*.pcap from live conntrackd pairs (root).
sync-captures: deps
	$(CARGO) test --test sync_capture -- --ignored --test-threads=1

# ctrackd pair vs conntrackd pair: sync time, wire bytes, commit, RSS (root).
bench-sync: deps
	cargo build --release
	./bench/sync.sh
