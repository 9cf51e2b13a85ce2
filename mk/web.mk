# Web page and JSON API (issues 6 and 11).
# The browser test drives Debian's headless Chromium; tests/web_api.rs
# checks /metrics with promtool (Debian's prometheus package); curl is
# used by bench/web.sh.
TEST_PKGS += chromium curl bc prometheus

.PHONY: bench-web
bench-web: deps
	./bench/web.sh
