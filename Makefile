# ctrack: build, test and demo on a Debian machine (run as root).
#   make demo   builds, starts a router lab in network namespaces and shows ctrack
#   make test   installs what the tests need (apt-get) and runs every test

CARGO ?= cargo
# Debian packages the tests and the demo use: the lab (iproute2, nftables,
# netcat, ping, sysctl) and the reference tools ctrack is compared with.
TEST_PKGS := iproute2 nftables conntrack conntrackd netcat-openbsd iputils-ping procps kmod curl socat
EXTRA_TEST_PKGS ?=

.PHONY: all build release deps test lint unit integration demo clean bench

all: build

build:
	$(CARGO) build --release

release: build

deps:
	@command -v $(CARGO) >/dev/null || { echo "make: cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
	@missing=""; for p in $(TEST_PKGS) $(EXTRA_TEST_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@modprobe nf_conntrack_netlink 2>/dev/null || true

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --lib

# Namespace tests need root; with CI=true they fail (not skip) without it.
integration: deps
	CI=$${CI:-true} $(CARGO) test --all-targets

test: deps lint integration

demo: deps build
	./scripts/demo.sh

bench: deps
	./bench/list.sh

clean:
	$(CARGO) clean

# Each area adds its own test packages and targets here (TEST_PKGS += ...).
-include mk/*.mk
