# WAN address change flush (issue 5): the OpenWrt hotplug hook is
# shellchecked and run under BusyBox ash and dash by tests/wan_hotplug.rs.
TEST_PKGS += shellcheck busybox dash

.PHONY: test-wan
# Only the WAN tests: unit tests of src/wan and the namespace tests.
test-wan: deps
	$(CARGO) test --lib wan::
	CI=$${CI:-true} $(CARGO) test --test wan_rtnl --test wan_flush --test wan_watch --test wan_hotplug
