# CLI verification, captures and benchmark (issue 2): GNU time for the
# CPU split in bench/list.sh; tcpdump is handy to look at captures.
TEST_PKGS += time
