# Web page and JSON API (issue 6).
# The browser test drives Debian's headless Chromium; curl is used by
# bench/web.sh.
TEST_PKGS += chromium curl bc

.PHONY: bench-web
bench-web: deps
	./bench/web.sh
