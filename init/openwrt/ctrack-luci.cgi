#!/bin/sh
# ctrack's page behind LuCI's login: a CGI for OpenWrt's uhttpd (not
# installed by the package; see README, "Web page and JSON API").
#
#   cp ctrack-luci.cgi /www/cgi-bin/ctrack && chmod 755 /www/cgi-bin/ctrack
#   uci set ctrack.web.interface=loopback      # ctrackd on 127.0.0.1 only
#   uci commit ctrack && /etc/init.d/ctrack reload
#
# then log in to LuCI and open http://<router>/cgi-bin/ctrack/ (the slash
# at the end matters). Every request needs a valid LuCI session (its
# sysauth cookie, checked with ubus); it is relayed to ctrackd on
# 127.0.0.1 over HTTP/1.0 with busybox nc. The read token, if one is set,
# is added here; a kill still asks for the admin token in the page. The
# event stream is not relayed (it would hold one of uhttpd's few CGI
# slots): the page polls the counts instead, and says so.

CTRACK_ADDR=${CTRACK_ADDR:-127.0.0.1}
CTRACK_PORT=${CTRACK_PORT:-8088}
READ_TOKEN_FILE=${CTRACK_READ_TOKEN_FILE:-/etc/ctrack/web-read.token}

deny() {
	printf 'Status: %s\r\nContent-Type: text/plain\r\n\r\n%s\n' "$1" "$2"
	exit 0
}

# the LuCI session: sysauth_https, sysauth_http or (older LuCI) sysauth
sid=""
for c in $(printf '%s' "${HTTP_COOKIE:-}" | tr ';' ' '); do
	case "${c}" in
	sysauth_https=* | sysauth_http=* | sysauth=*) sid="${c#*=}" ;;
	*) ;;
	esac
done
case "${sid}" in
"" | *[!0-9a-f]*) deny "403 Forbidden" "log in to LuCI first (/cgi-bin/luci), then reload this page" ;;
*) ;;
esac
[ "${#sid}" -eq 32 ] || deny "403 Forbidden" "log in to LuCI first (/cgi-bin/luci), then reload this page"
ubus call session get "{\"ubus_rpc_session\":\"${sid}\"}" >/dev/null 2>&1 ||
	deny "403 Forbidden" "your LuCI session has ended: log in again (/cgi-bin/luci)"

# only what ctrackd serves, nothing that could break the request line
path="${PATH_INFO:-/}"
query="${QUERY_STRING:-}"
case "${path}" in
/api/v1/events*) deny "404 Not Found" "no event stream through LuCI: the page polls" ;;
*[!A-Za-z0-9/._-]*) deny "400 Bad Request" "bad path" ;;
*) ;;
esac
case "${query}" in
*[!A-Za-z0-9%=\&.,:/_+!-]*) deny "400 Bad Request" "bad query" ;;
*) ;;
esac
case "${REQUEST_METHOD:-GET}" in
GET | HEAD | DELETE) ;;
*) deny "405 Method Not Allowed" "GET, HEAD or DELETE" ;;
esac
auth="${HTTP_AUTHORIZATION:-}"
if [ -z "${auth}" ] && [ -r "${READ_TOKEN_FILE}" ]; then
	auth="Bearer $(cat "${READ_TOKEN_FILE}")"
fi
case "${auth}" in
*[!A-Za-z0-9\ ._~+/=-]*) auth="" ;;
*) ;;
esac

# HTTP/1.0: the reply is never chunked and ends with the connection;
# its status line becomes the CGI Status header
{
	printf '%s %s%s HTTP/1.0\r\nHost: %s\r\n' "${REQUEST_METHOD:-GET}" "${path}" "${query:+?${query}}" "${CTRACK_ADDR}"
	[ -n "${auth}" ] && printf 'Authorization: %s\r\n' "${auth}"
	printf '\r\n'
} | nc "${CTRACK_ADDR}" "${CTRACK_PORT}" | {
	IFS=' ' read -r _ code reason || deny "502 Bad Gateway" "ctrackd does not answer on ${CTRACK_ADDR}:${CTRACK_PORT}"
	printf 'Status: %s %s\r\n' "${code}" "${reason%?}"
	cat
}
