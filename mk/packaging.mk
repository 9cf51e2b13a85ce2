# Packaging: static musl binaries, cross checks, tests under qemu-user,
# dist. See README, "Packaging: static builds, OpenWrt, Buildroot".
#
#   make static         x86_64/aarch64/i686 static musl binaries (rust-lld, no C cross compiler)
#   make static-min     the same without the web, sync and wan features
#   make dist           both into target/dist/ with SHA256SUMS
#   make sizes          size table of those binaries
#   make size-report    where the x86_64 binary's bytes go, by crate
#   make check-targets  nightly -Zbuild-std check for mipsel, mips (big-endian), armv7
#   make cross-test     lib unit tests under qemu-user: aarch64, 32-bit big-endian powerpc and mips
#   make static-router  experimental static mipsel/armv7 binaries (Debian's musl; see the script)
#   make features-test  lib tests and clippy without default features
#
# `make test` runs all of these checks: tests/packaging_binary.rs and
# tests/packaging_scripts.rs (run by `cargo test`) need the static binaries,
# so `integration` builds them first.

# shellcheck, busybox (init script test), qemu-user and the powerpc and
# mips linkers (cross-test)
TEST_PKGS += shellcheck busybox qemu-user-static gcc-powerpc-linux-gnu gcc-mips-linux-gnu binutils

PKG_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
STATIC_TARGETS ?= x86_64-unknown-linux-musl aarch64-unknown-linux-musl i686-unknown-linux-musl
CHECK_TARGETS ?= mipsel-unknown-linux-musl mips-unknown-linux-musl armv7-unknown-linux-musleabihf
CROSS_TEST_TARGETS ?= aarch64-unknown-linux-musl powerpc-unknown-linux-gnu
# no rustup std: built from nightly's rust-src
CROSS_TEST_NIGHTLY_TARGETS ?= mips-unknown-linux-gnu
NIGHTLY ?= nightly
DIST := target/dist
MIN_DIR := target/min

.PHONY: rust-targets static static-min static-router dist sizes size-report check-targets cross-test features-test

# rustup's std for the targets and nightly's rust-src for -Zbuild-std
# (a few MB each, once per machine).
rust-targets:
	@command -v rustup >/dev/null || { echo "make: rustup not found: the cross targets need it" >&2; exit 1; }
	@have=$$(rustup target list --installed); \
	for t in $(STATIC_TARGETS) $(CROSS_TEST_TARGETS); do \
	  echo "$$have" | grep -qx "$$t" || rustup target add "$$t" || exit 1; \
	done
	@rustup component list --toolchain $(NIGHTLY) --installed 2>/dev/null | grep -q '^rust-src' || \
	  rustup component add rust-src --toolchain $(NIGHTLY)

# nightly -Zbuild-std: std without its backtrace printer and unwind
# tables, which stable's std would add to every binary (scripts/static-build.sh)
static: rust-targets
	@for t in $(STATIC_TARGETS); do \
	  echo "static: $$t"; \
	  NIGHTLY=$(NIGHTLY) ./scripts/static-build.sh $$t || exit 1; \
	done

static-min: rust-targets
	@for t in $(STATIC_TARGETS); do \
	  echo "static-min: $$t"; \
	  NIGHTLY=$(NIGHTLY) ./scripts/static-build.sh $$t --no-default-features --target-dir $(MIN_DIR) || exit 1; \
	done

dist: static static-min
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@for t in $(STATIC_TARGETS); do \
	  cp target/$$t/release/ctrack $(DIST)/ctrack-$(PKG_VERSION)-$$t; \
	  cp $(MIN_DIR)/$$t/release/ctrack $(DIST)/ctrack-min-$(PKG_VERSION)-$$t; \
	done
	@cd $(DIST) && sha256sum ctrack-* > SHA256SUMS && cat SHA256SUMS

sizes: static static-min
	@printf '%-34s %10s %10s %10s\n' target "features" "no-default" "gzip -9"
	@for t in $(STATIC_TARGETS); do \
	  f=target/$$t/release/ctrack; m=$(MIN_DIR)/$$t/release/ctrack; \
	  printf '%-34s %10d %10d %10d\n' $$t $$(wc -c <$$f) $$(wc -c <$$m) $$(gzip -9c <$$f | wc -c); \
	done

size-report:
	./scripts/size-report.sh

# MIPS (tier 3: no rustup std) and 32-bit ARM: std is built from nightly's
# rust-src. Catches 64-bit atomics, usize assumptions and endianness-gated
# code for the routers' CPUs (every feature: all the code; the feature
# subsets are checked on the host by features-test). Linking needs OpenWrt's
# SDK or scripts/static-router.sh (README).
check-targets: rust-targets
	@for t in $(CHECK_TARGETS); do \
	  echo "check-targets: $$t"; \
	  $(CARGO) +$(NIGHTLY) check --locked -Zbuild-std=std,panic_abort --target $$t --bins --lib --all-features || exit 1; \
	done

# qemu-user cannot open ctnetlink sockets: only the library's unit tests.
# Runners and linkers come from .cargo/config.toml.
cross-test: deps rust-targets
	@for t in $(CROSS_TEST_TARGETS); do \
	  echo "cross-test: $$t"; \
	  $(CARGO) test --locked --lib --target $$t || exit 1; \
	done
	@for t in $(CROSS_TEST_NIGHTLY_TARGETS); do \
	  echo "cross-test: $$t (nightly -Zbuild-std)"; \
	  $(CARGO) +$(NIGHTLY) test --locked --lib -Zbuild-std --target $$t || exit 1; \
	done

# Not part of `make test`: needs Debian's musl of a foreign architecture.
static-router: rust-targets
	./scripts/static-router.sh mipsel
	./scripts/static-router.sh armv7

features-test:
	$(CARGO) test --locked --lib --no-default-features
	$(CARGO) clippy --locked --no-default-features --all-targets -- -D warnings

integration: static
test: features-test cross-test check-targets
