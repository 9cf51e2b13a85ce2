//! The request head parser of the web front: bytes in, a verdict out.
//!
//! [`parse_head`] checks a request head against the [`Limits`] (sizes,
//! header count, body rules, HTTP version, bytes allowed) and rebuilds it
//! from the checked fields for tiny_http. It is pure (no sockets, no
//! clock), unit-tested here and fuzzed by `fuzz/fuzz_targets/http_head.rs`;
//! the connection front (src/web/front.rs) feeds it what a client sent.

use super::Limits;

/// Largest request body accepted (DELETE only); tiny_http reads bodies up
/// to this size at once.
pub const MAX_BODY: usize = 1024;

/// Why a request head is refused: status and a constant message (never
/// request bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status code.
    pub status: u16,
    /// The `error` text of the JSON body.
    pub msg: &'static str,
}

const fn reject(status: u16, msg: &'static str) -> Reject {
    Reject { status, msg }
}

const BAD_LINE: Reject = reject(400, "malformed request line");
const BAD_HEADER: Reject = reject(400, "malformed request header");
const TOO_LONG: Reject = reject(414, "request target too long");
const TOO_BIG: Reject = reject(431, "request headers too large");
const NO_BODY: Reject = reject(413, "this API takes no request body");

/// Prefix of the header fields the front adds for the server (the
/// client's address, its connection number): a client's own fields with
/// this prefix are dropped, so only the front's reach the server.
pub const INTERNAL_PREFIX: &[u8] = b"x-ctrack-";

/// A complete, checked request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// What tiny_http gets: the request line and the kept header fields,
    /// rebuilt with CRLFs, ending in `Connection: close\r\n`; the caller
    /// appends its own fields and the empty line.
    pub forward: Vec<u8>,
    /// Bytes of the input the head took (a body starts here).
    pub len: usize,
    /// Body bytes that follow (`Content-Length`, DELETE only).
    pub body: usize,
    /// The `Host` field's value, if any.
    pub host: Option<Vec<u8>>,
    /// `Sec-Fetch-Site: cross-site`: a page of another site made the
    /// browser send this request.
    pub cross_site: bool,
    /// The request is HTTP/1.0.
    pub http10: bool,
}

/// Bytes of input that can hold a head within `l` (plus a DELETE body).
pub fn input_cap(l: &Limits) -> usize {
    l.max_url + l.max_header_bytes + 64 + MAX_BODY
}

/// Index of the first CRLF in `b` at or after `from`.
pub(super) fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks the request head at the start of `buf` against `l`: `Ok(None)`
/// while it is incomplete and within the limits, `Ok(Some(head))` once
/// complete and valid, `Err` as soon as it breaks a rule: 414 for a
/// request line over `max_url` (+ method and version), 431 for header
/// fields over `max_header_bytes` or `max_headers`, 413 for a body on
/// anything but DELETE or over [`MAX_BODY`] or chunked, 505 for an HTTP
/// version other than 1.0/1.1, 400 for anything malformed (bare CR or LF,
/// control or non-ASCII bytes, folded lines, a bad `Content-Length`).
pub fn parse_head(buf: &[u8], l: &Limits) -> Result<Option<Head>, Reject> {
    // empty lines before the request line are allowed (RFC 9112 2.2)
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
        if start > 8 {
            return Err(BAD_LINE);
        }
    }
    let line_max = l.max_url + 32;
    let Some(le) = find_crlf(buf, start) else {
        return if buf.len() - start > line_max {
            Err(TOO_LONG)
        } else {
            Ok(None)
        };
    };
    let line = &buf[start..le];
    if line.len() > line_max {
        return Err(TOO_LONG);
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD_LINE);
    };
    if method.is_empty() || method.len() > 16 || !method.iter().all(u8::is_ascii_uppercase) {
        return Err(BAD_LINE);
    }
    if target.first() != Some(&b'/') || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(BAD_LINE);
    }
    if target.len() > l.max_url {
        return Err(TOO_LONG);
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(if version.starts_with(b"HTTP/") {
            reject(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        } else {
            BAD_LINE
        });
    }
    let delete = method == b"DELETE";

    let hs = le + 2;
    let mut p = hs;
    let mut count = 0;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut kept: Vec<(&[u8], &[u8])> = Vec::new();
    let mut host: Option<&[u8]> = None;
    let mut cross = false;
    let end = loop {
        let Some(e) = find_crlf(buf, p) else {
            return if buf.len() - hs > l.max_header_bytes || buf.len() >= input_cap(l) {
                Err(TOO_BIG)
            } else {
                Ok(None)
            };
        };
        if e == p {
            break e + 2;
        }
        count += 1;
        if count > l.max_headers || e + 2 - hs > l.max_header_bytes {
            return Err(TOO_BIG);
        }
        let field = &buf[p..e];
        p = e + 2;
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            return Err(BAD_HEADER);
        };
        let (name, value) = (&field[..colon], &field[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(BAD_HEADER);
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return Err(BAD_HEADER);
        }
        let value = value.trim_ascii();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(reject(400, "invalid Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(reject(400, "invalid Content-Length"));
            }
            length = Some(n);
        } else if is("transfer-encoding") {
            chunked = true;
        } else if name.len() >= INTERNAL_PREFIX.len()
            && name[..INTERNAL_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_PREFIX)
        {
            // only the front sets these
        } else if is("host") {
            if host.is_some() {
                return Err(reject(400, "more than one Host field"));
            }
            host = Some(value);
            kept.push((name, value));
        } else if is("sec-fetch-site") {
            cross |= super::access::cross_site(value);
            kept.push((name, value));
        } else if is("connection")
            || is("keep-alive")
            || is("proxy-connection")
            || is("te")
            || is("upgrade")
            || is("expect")
            || is("http2-settings")
        {
            // hop-by-hop: tiny_http gets Connection: close and nothing else
        } else {
            kept.push((name, value));
        }
    };
    let body = length.unwrap_or(0);
    if chunked || body > 0 {
        if !delete {
            return Err(NO_BODY);
        }
        if chunked || body > MAX_BODY {
            return Err(reject(413, "request body too large (at most 1024 bytes)"));
        }
    }
    if host.is_none() && version == b"HTTP/1.1" {
        // RFC 9112 3.2: an HTTP/1.1 request without Host is a 400
        return Err(reject(400, "missing Host field"));
    }
    let mut forward = Vec::with_capacity(end - start + 32);
    forward.extend_from_slice(line);
    forward.extend_from_slice(b"\r\n");
    for (name, value) in kept {
        forward.extend_from_slice(name);
        forward.extend_from_slice(b": ");
        forward.extend_from_slice(value);
        forward.extend_from_slice(b"\r\n");
    }
    if body > 0 {
        forward.extend_from_slice(b"Content-Length: ");
        crate::flow::addr::push_u64(&mut forward, body as u64);
        forward.extend_from_slice(b"\r\n");
    }
    forward.extend_from_slice(b"Connection: close\r\n");
    Ok(Some(Head {
        forward,
        len: end,
        body,
        host: host.map(<[u8]>::to_vec),
        cross_site: cross,
        http10: version == b"HTTP/1.0",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    fn ok(b: &[u8]) -> Head {
        parse_head(b, &lim()).unwrap().unwrap()
    }

    fn status(b: &[u8]) -> u16 {
        parse_head(b, &lim()).unwrap_err().status
    }

    #[test]
    fn complete_heads_are_rebuilt_with_connection_close() {
        let h = ok(
            b"GET /api/v1/stats?x=1 HTTP/1.1\r\nHost: r\r\nConnection: keep-alive\r\n\
                     Accept:  */* \r\nTE: identity\r\nExpect: 100-continue\r\n\r\nrest",
        );
        assert_eq!(
            String::from_utf8(h.forward).unwrap(),
            "GET /api/v1/stats?x=1 HTTP/1.1\r\nHost: r\r\nAccept: */*\r\nConnection: close\r\n"
        );
        assert_eq!(h.host.as_deref(), Some(&b"r"[..]));
        assert!(!h.cross_site && !h.http10);
        assert_eq!(h.body, 0);
        assert_eq!(
            &b"GET /api/v1/stats?x=1 HTTP/1.1\r\nHost: r\r\nConnection: keep-alive\r\n\
                     Accept:  */* \r\nTE: identity\r\nExpect: 100-continue\r\n\r\nrest"[h.len..],
            b"rest"
        );
        // leading empty lines are skipped, HTTP/1.0 is fine
        let h = ok(b"\r\nGET / HTTP/1.0\r\n\r\n");
        assert!(h.forward.starts_with(b"GET / HTTP/1.0\r\n"));
        assert!(h.http10 && h.host.is_none());
    }

    #[test]
    fn host_fetch_site_and_internal_fields() {
        let h = ok(
            b"GET / HTTP/1.1\r\nhost: a:1\r\nSec-Fetch-Site: cross-site\r\n\
                     X-Ctrack-Peer: 1.2.3.4\r\nx-ctrack-conn: 9\r\n\r\n",
        );
        assert_eq!(h.host.as_deref(), Some(&b"a:1"[..]));
        assert!(h.cross_site);
        let fwd = String::from_utf8(h.forward).unwrap();
        assert!(!fwd.to_ascii_lowercase().contains("x-ctrack"), "{fwd}");
        assert!(fwd.contains("Sec-Fetch-Site: cross-site\r\n"));
        assert!(
            !ok(b"GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Site: same-origin\r\n\r\n").cross_site
        );
        // a short name that is not the prefix is kept
        let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nX-Ctrack: 1\r\n\r\n");
        assert!(
            String::from_utf8(h.forward)
                .unwrap()
                .contains("X-Ctrack: 1\r\n")
        );
        // HTTP/1.1 needs exactly one Host
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert!(ok(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").http10);
    }

    #[test]
    fn incomplete_heads_wait() {
        for b in [
            &b""[..],
            b"GE",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: x",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r",
        ] {
            assert_eq!(parse_head(b, &lim()), Ok(None), "{b:?}");
        }
    }

    #[test]
    fn sizes_are_capped() {
        let l = lim();
        // a request line that never ends: 414 once past the cap
        let mut b = b"GET /".to_vec();
        b.extend(std::iter::repeat_n(b'a', l.max_url + 40));
        assert_eq!(status(&b), 414);
        // a complete but long target
        let t = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(l.max_url));
        assert_eq!(status(t.as_bytes()), 414);
        // one endless header line
        let mut b = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        b.extend(std::iter::repeat_n(b'a', l.max_header_bytes));
        assert_eq!(status(&b), 431);
        // many small headers
        let mut b = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=l.max_headers {
            b.extend(format!("X-{i}: v\r\n").bytes());
        }
        assert_eq!(status(&b), 431);
        // exactly at the limit is fine
        let mut b = b"GET / HTTP/1.1\r\nHost: r\r\n".to_vec();
        for i in 1..l.max_headers {
            b.extend(format!("X-{i}: v\r\n").bytes());
        }
        b.extend(b"\r\n");
        assert!(parse_head(&b, &l).unwrap().is_some());
    }

    #[test]
    fn bodies_only_small_and_on_delete() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), 413);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"DELETE / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"DELETE / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            413
        );
        let h = ok(b"DELETE /a HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(h.body, 2);
        assert!(
            String::from_utf8(h.forward)
                .unwrap()
                .ends_with("Content-Length: 2\r\nConnection: close\r\n")
        );
        // zero is no body
        assert_eq!(
            ok(b"GET / HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n").body,
            0
        );
        for bad in [
            &b"DELETE / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"[..],
            b"DELETE / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            b"DELETE / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"DELETE / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n",
            b"DELETE / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{bad:?}");
        }
    }

    #[test]
    fn malformed_heads_are_400() {
        for bad in [
            &b"get / HTTP/1.1\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET /a\x01b HTTP/1.1\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\n: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rY: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
    }

    #[test]
    fn every_prefix_and_mutation_is_a_verdict_not_a_panic() {
        let good = b"DELETE /api/v1/connections?all=1 HTTP/1.1\r\nHost: r\r\n\
                     Authorization: Bearer 0123456789abcdef\r\nContent-Length: 2\r\n\r\n{}";
        for n in 0..=good.len() {
            let _ = parse_head(&good[..n], &lim());
        }
        for i in 0..good.len() {
            for b in [0u8, b'\r', b'\n', b' ', b':', 0xff] {
                let mut m = good.to_vec();
                m[i] = b;
                let _ = parse_head(&m, &lim());
            }
        }
    }
}
