#!/bin/sh
# Size of the static x86_64 binary and where its bytes go, by crate.
#
#   scripts/size-report.sh [cargo build options, e.g. --no-default-features]
#
# Builds an unstripped copy (same release profile, symbols kept) in
# target/size-report and sums symbol sizes from `nm` by the crate that
# starts the symbol's demangled path (generic code is counted where its
# outermost path comes from, as cargo-bloat does). Sizes are before
# stripping: the shipped binary (make static) is smaller.
set -eu
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl
DIR=target/size-report
TOP=${TOP:-15}

cargo build --quiet --release --locked --target "$TARGET" --target-dir "$DIR" \
	--config profile.release.strip=false "$@"
bin="$DIR/$TARGET/release/ctrack"
stripped="$DIR/ctrack.stripped"
objcopy --strip-all "$bin" "$stripped"
size=$(wc -c <"$stripped")
printf 'ctrack (%s, %s): %d bytes stripped (%d KiB)\n' "$TARGET" "${*:-default features}" \
	"$size" $((size / 1024))
size -A "$stripped" | awk '$1 ~ /^\.(text|rodata|data|data\.rel\.ro|eh_frame|gcc_except_table)$/ {
	printf "  section %-18s %8d\n", $1, $2 }'
printf '\n  %-28s %9s %6s\n' "crate" "bytes" "share"
nm -S --size-sort -C -t d "$bin" | awk -v top="$TOP" '
	NF >= 4 && $3 !~ /^[bBuUvVwW]$/ {
		sz = $2 + 0
		name = $0
		sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", name)
		if (match(name, /[A-Za-z_][A-Za-z0-9_]*::/))
			crate = substr(name, RSTART, RLENGTH - 2)
		else
			crate = "[C: musl libc, compiler-rt]"
		tot[crate] += sz
		all += sz
	}
	END {
		for (c in tot)
			printf "%d|%s|%.1f\n", tot[c], c, 100 * tot[c] / all
		printf "%d|%s|%.1f\n", all, "(all symbols)", 100
	}' | sort -t'|' -k1,1rn | head -n "$((TOP + 1))" |
	awk -F'|' '{ printf "  %-28s %9d %5.1f%%\n", $2, $1, $3 }'
