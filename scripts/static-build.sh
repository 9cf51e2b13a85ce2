#!/bin/sh
# Builds a static, size-tuned ctrack for one musl target (make static).
#
# Stable std carries its backtrace printer (gimli, addr2line, ~200 KB) and
# unwind tables even with panic = "abort"; that alone would put the binary
# over the 1 MiB budget. So std is rebuilt from nightly's rust-src
# (-Zbuild-std) without its backtrace feature, without unwind tables and
# without panic file/line strings; opt-level "z", LTO, one codegen unit and
# panic = "abort" come from Cargo.toml. rust-lld links against the target's
# self-contained musl crt1.o and libc.a from the stable toolchain
# (-Zbuild-std's sysroot has none), as a non-PIE static executable.
# Panics still print their message.
#   usage: scripts/static-build.sh TARGET [cargo build args...]
set -eu
target=$1
shift
nightly=${NIGHTLY:-nightly}
sc=$(rustc --print sysroot)/lib/rustlib/$target/lib/self-contained
if [ ! -f "$sc/crt1.o" ]; then
	echo "static-build: $sc/crt1.o is missing: rustup target add $target" >&2
	exit 1
fi
RUSTFLAGS="-C link-self-contained=no -C link-arg=-L$sc -C link-arg=$sc/crt1.o \
-C relocation-model=static -C force-unwind-tables=no -Zlocation-detail=none"
export RUSTFLAGS
exec cargo "+$nightly" build --release --locked \
	-Zbuild-std=std,panic_abort -Zbuild-std-features= --target "$target" "$@"
