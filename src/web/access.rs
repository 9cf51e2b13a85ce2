//! Who may use the page and the API, as pure checks (no sockets, no
//! files): the `Host` header against the listen address and configured
//! names (DNS rebinding), `Sec-Fetch-Site` (cross-site requests), bearer
//! tokens (scheme case-insensitive, compared in constant time), the
//! permissions of a token file, and the key per-client caps count by (an
//! IPv6 client owns a whole /64, so its temporary addresses are one
//! client).

use std::net::{IpAddr, Ipv6Addr};

/// The key a client's connections, requests and streams are counted by:
/// its IPv4 address, or the /64 of its IPv6 address (an IPv4-mapped
/// address counts as the IPv4 address).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The host part of a `Host` header value (`name`, `name:port`, `1.2.3.4`,
/// `[::1]:8077`), lower case, without a trailing dot; `None` when it is
/// malformed.
pub fn host_part(value: &[u8]) -> Option<String> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || port_ok(after.strip_prefix(':')?)) {
            return None;
        }
        inside
    } else {
        match v.rsplit_once(':') {
            Some((h, p)) if port_ok(p) => h,
            Some(_) => return None,
            None => v,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_%".contains(&b));
    ok.then(|| host.to_ascii_lowercase())
}

fn port_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// True when a request naming `host` (a `Host` header value) may be
/// served by a server listening on `listen` with the configured `names`:
/// the listen address itself (any address when it listens on all of
/// them), `localhost` on a loopback address, or one of `names`. Any other
/// name is how a DNS-rebinding page would reach us (421). The port does
/// not matter (a proxy or port forward may change it).
pub fn host_allowed(host: &[u8], listen: IpAddr, names: &[String]) -> bool {
    let Some(h) = host_part(host) else {
        return false;
    };
    if let Ok(ip) = h.parse::<IpAddr>() {
        return listen.is_unspecified() || ip == listen || canonical(ip) == canonical(listen);
    }
    if h == "localhost" && listen.is_loopback() {
        return true;
    }
    names.iter().any(|n| {
        let n = n.strip_suffix('.').unwrap_or(n);
        n.eq_ignore_ascii_case(&h)
    })
}

/// An IPv4-mapped IPv6 address as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True when a `Sec-Fetch-Site` value says the request comes from
/// another site (a page elsewhere making the browser call us: refused).
/// `same-origin`, `same-site` and `none` (typed in, bookmark) pass.
pub fn cross_site(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"cross-site")
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110 11.1), blanks around are ignored.
pub fn bearer(value: &str) -> Option<&str> {
    let v = value.trim();
    let (scheme, rest) = v.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = rest.trim();
    (!t.is_empty()).then_some(t)
}

/// Compares in time that depends only on the lengths, not on where the
/// first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u32;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= (x ^ y) as u32;
    }
    diff == 0
}

/// Why a token file's permission bits are refused: readable or writable
/// by others than its owner and group.
pub fn token_mode_problem(mode: u32) -> Option<String> {
    (mode & 0o007 != 0).then(|| {
        format!(
            "readable or writable by others (mode {:o}): chmod 600 it",
            mode & 0o777
        )
    })
}

/// What the token text of a file must be: one word of 16 or more
/// characters (surrounding blanks and the final newline are ignored).
pub fn token_text(text: &str) -> Result<&str, &'static str> {
    let t = text.trim();
    if t.len() < 16 {
        return Err("the token must be at least 16 characters");
    }
    if t.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("the token must be one word");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn client_keys_group_an_ipv6_client_by_its_64() {
        assert_eq!(client_key(ip("10.0.0.5")), ip("10.0.0.5"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:10.0.0.5")), ip("10.0.0.5"));
    }

    #[test]
    fn host_header_parts() {
        assert_eq!(host_part(b"Router.LAN.").as_deref(), Some("router.lan"));
        assert_eq!(host_part(b"10.0.0.1:8077").as_deref(), Some("10.0.0.1"));
        assert_eq!(host_part(b"[fd00::1]:80").as_deref(), Some("fd00::1"));
        assert_eq!(host_part(b"[fd00::1]").as_deref(), Some("fd00::1"));
        assert_eq!(host_part(b" r "), Some("r".into()));
        for bad in [
            &b""[..],
            b":80",
            b"r:http",
            b"r:123456",
            b"[fd00::1",
            b"[fd00::1]x",
            b"[fd00::1]:",
            b"a b",
            b"a/b",
            b"\xff",
            b".",
        ] {
            assert_eq!(host_part(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_the_listen_address_or_configured_names() {
        let lan = ip("192.168.1.1");
        let names = vec!["router.lan".to_string(), "openwrt.".to_string()];
        assert!(host_allowed(b"192.168.1.1", lan, &names));
        assert!(host_allowed(b"192.168.1.1:8088", lan, &names));
        assert!(host_allowed(b"ROUTER.lan:8088", lan, &names));
        assert!(host_allowed(b"openwrt", lan, &names));
        assert!(host_allowed(b"openwrt.", lan, &names));
        assert!(!host_allowed(b"attacker.example", lan, &names));
        assert!(!host_allowed(b"192.168.1.2", lan, &names));
        assert!(!host_allowed(b"localhost", lan, &names));
        assert!(!host_allowed(b"", lan, &names));
        assert!(!host_allowed(b"router.lan.evil", lan, &names));
        // loopback: localhost too
        let lo = ip("127.0.0.1");
        assert!(host_allowed(b"localhost:8077", lo, &[]));
        assert!(host_allowed(b"127.0.0.1", lo, &[]));
        assert!(host_allowed(b"[::ffff:127.0.0.1]", lo, &[]));
        assert!(!host_allowed(b"127.0.0.2", lo, &[]));
        // listening on every address: any address literal, still no names
        let any = ip("::");
        assert!(host_allowed(b"[fd00::1]:1", any, &[]));
        assert!(host_allowed(b"10.1.1.1", any, &[]));
        assert!(!host_allowed(b"localhost", any, &[]));
        assert!(!host_allowed(b"rebind.example", any, &[]));
        let v6 = ip("fd00::1");
        assert!(host_allowed(b"[FD00::1]:8077", v6, &[]));
        assert!(!host_allowed(b"[fd00::2]", v6, &[]));
    }

    #[test]
    fn only_cross_site_is_refused() {
        assert!(cross_site(b"cross-site"));
        assert!(cross_site(b" Cross-Site "));
        assert!(!cross_site(b"same-origin"));
        assert!(!cross_site(b"same-site"));
        assert!(!cross_site(b"none"));
        assert!(!cross_site(b""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER \t abc  "), Some("abc"));
        assert_eq!(bearer(" Bearer\tabc"), Some("abc"));
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer   "), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer(""), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(b"\x01", b"\x00"));
    }

    #[test]
    fn token_files_are_private_and_one_long_word() {
        assert_eq!(token_mode_problem(0o100600), None);
        assert_eq!(token_mode_problem(0o640), None);
        assert_eq!(token_mode_problem(0o400), None);
        for m in [0o644, 0o604, 0o602, 0o601, 0o666, 0o777] {
            let p = token_mode_problem(m).unwrap();
            assert!(p.contains(&format!("{:o}", m & 0o777)), "{p}");
        }
        assert_eq!(token_text(" 0123456789abcdef\n"), Ok("0123456789abcdef"));
        assert!(token_text("0123456789abcde").is_err());
        assert!(token_text("0123456789 abcdef").is_err());
        assert!(token_text("0123456789\x01abcdef").is_err());
        assert!(token_text("").is_err());
    }
}
