#!/bin/sh
# Experimental: static musl binaries for 32-bit router CPUs, linked here
# with Debian's cross gcc and Debian's musl for that architecture.
#
#   scripts/static-router.sh mipsel|armv7 [cargo build options]
#
# Rust has no prebuilt std for these targets here, so std is built from
# nightly's rust-src (-Zbuild-std). Debian's musl replaces the crt objects
# and libc.a Rust would ship. Packages (once; adds a dpkg architecture):
#   dpkg --add-architecture mipsel && apt-get update &&
#     apt-get install musl-dev:mipsel gcc-mipsel-linux-gnu qemu-user-static
#   dpkg --add-architecture armhf && apt-get update &&
#     apt-get install musl-dev:armhf gcc-arm-linux-gnueabihf qemu-user-static
# Afterwards remove the foreign architecture again (apt-get purge
# 'musl*:mipsel'; dpkg --remove-architecture mipsel): while it is there,
# a mirror half-synced for that architecture makes every `apt-get update`,
# and so `make deps`, fail.
#
# Limits, and why OpenWrt's SDK remains the way to build router packages:
# - panic = immediate-abort (a nightly panic strategy): no unwinder to link
#   against musl, and no panic message; a panic ends the process at once.
# - mipsel: Rust's target is soft-float, Debian's musl hard-float (the
#   linker warns; the kernel's FPU emulation runs musl's few float
#   instructions). No big-endian mips: Debian has no musl for it.
# The result runs under qemu-user (`ctrack version` is checked below).
set -eu
cd "$(dirname "$0")/.."
arch=${1:-}
[ $# -gt 0 ] && shift
case "$arch" in
	mipsel)
		triple=mipsel-unknown-linux-musl
		gcc=mipsel-linux-musl-gcc
		qemu="qemu-mipsel-static"
		# nothing needs an unwinder: an empty libunwind.a satisfies -lunwind
		unwind=""
		;;
	armv7)
		triple=armv7-unknown-linux-musleabihf
		gcc=arm-linux-musleabihf-gcc
		qemu="qemu-arm-static"
		# ARM's exception index tables name libgcc's personality routines
		unwind=/usr/lib/gcc-cross/arm-linux-gnueabihf/12/libgcc_eh.a
		;;
	*)
		echo "usage: $0 mipsel|armv7 [cargo build options]" >&2
		exit 2
		;;
esac
command -v "$gcc" >/dev/null || {
	echo "$0: $gcc not found: install Debian's musl-dev for $arch and its cross gcc (see the top of this script)" >&2
	exit 1
}
libdir="$PWD/target/static-router/$arch"
mkdir -p "$libdir"
rm -f "$libdir/libunwind.a"
if [ -n "$unwind" ]; then
	ln -s "$unwind" "$libdir/libunwind.a"
else
	ar rc "$libdir/libunwind.a"
fi
var=$(echo "$triple" | tr 'a-z-' 'A-Z_')
env "CARGO_TARGET_${var}_LINKER=$gcc" \
	"CARGO_TARGET_${var}_RUSTFLAGS=-C link-self-contained=no -C target-feature=+crt-static -L $libdir -Zunstable-options -Cpanic=immediate-abort" \
	cargo +nightly build --locked --release -Zbuild-std=std,panic_abort --target "$triple" "$@"
bin="target/$triple/release/ctrack"
if command -v "$qemu" >/dev/null; then
	"$qemu" "$bin" version
fi
printf '%s: %d bytes\n' "$bin" "$(wc -c <"$bin")"
