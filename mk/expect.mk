# Expectations (issue 13): the FTP lab of tests/cli_expect.rs and
# tests/expect_captures.rs runs Debian's pyftpdlib as the server (curl,
# the client, is in TEST_PKGS already).
TEST_PKGS += python3-pyftpdlib
