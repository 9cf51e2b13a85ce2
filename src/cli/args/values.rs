//! conntrack's value parsers: addresses (inet_aton's forms, `/len`),
//! numbers, ports, the keyword lists of `-u`, `-e` and `-o`, NAT
//! `ADDR[:PORT]`, and protocol names (with /etc/protocols).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::command::Output;
use super::legality::has_proto_module;
use crate::cli::error::CliError;
use crate::flow::labels::parse_c_ulong;
use crate::flow::{names, status};

type Res<T> = Result<T, CliError>;

/// Parses an IPv4 address the way inet_aton does (`1.2.3.4`, `0x0a.1`,
/// `10.1`, `167772161`), which conntrack accepts.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() || s.ends_with('.') {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        if p.is_empty() || !p.as_bytes()[0].is_ascii_digit() {
            return None;
        }
        nums.push(parse_c_ulong(p)?);
    }
    let last = *nums.last()?;
    let mut v: u64 = 0;
    for (i, n) in nums[..nums.len() - 1].iter().enumerate() {
        if *n > 255 {
            return None;
        }
        v |= n << (24 - 8 * i);
    }
    let room = 32 - 8 * (nums.len() as u32 - 1);
    if room < 64 && last >= (1u64 << room) {
        return None;
    }
    Some(Ipv4Addr::from((v | last) as u32))
}

/// An address as conntrack parses it: inet_aton, then IPv6.
pub fn parse_inet(s: &str) -> Option<IpAddr> {
    if let Some(a) = inet_aton(s) {
        return Some(IpAddr::V4(a));
    }
    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// `addr[/len]` as conntrack's parse_addr: Ok((address, mask)) where mask
/// is None without a slash; Err(true) for an invalid netmask and Err(false)
/// for an invalid address.
pub(super) fn parse_addr_mask(s: &str) -> Result<(IpAddr, Option<u8>), bool> {
    // conntrack copies at most INET6_ADDRSTRLEN-1 bytes
    let s: String = s.chars().take(45).collect();
    let (a, m) = match s.split_once('/') {
        Some((a, m)) => (a.to_string(), Some(m.to_string())),
        None => (s.clone(), None),
    };
    let addr = parse_inet(&a).ok_or(false)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let mask = match m {
        None => None,
        Some(m) => {
            let v: i64 = m.parse().map_err(|_| true)?;
            if !(0..=max).contains(&v) {
                return Err(true);
            }
            Some(v as u8)
        }
    };
    Ok((addr, mask))
}

pub(super) fn parse_u32(v: &str, flag: &str, what: &str) -> Res<u32> {
    parse_c_ulong(v)
        .filter(|&n| n <= u32::MAX as u64)
        .map(|n| n as u32)
        .ok_or_else(|| CliError::ours(format!("invalid {what} '{v}' for {flag}")))
}

pub(super) fn parse_port(v: &str, flag: &str) -> Res<u16> {
    if !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = v.parse::<u16>() {
            return Ok(n);
        }
    }
    Err(CliError::ours(format!("invalid port '{v}' for {flag}")))
}

pub(super) fn parse_small(v: &str, flag: &str, what: &str, max: u32) -> Res<u32> {
    if !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = v.parse::<u32>()
        && n <= max
    {
        return Ok(n);
    }
    Err(CliError::ours(format!("invalid {what} '{v}' for {flag}")))
}

/// The position of `v` in a table of names (a state, a role), or the
/// error `unknown `v'` in conntrack's words `what`.
pub(super) fn parse_name(table: &[&str], v: &str, what: &str) -> Res<u8> {
    table
        .iter()
        .position(|&n| n == v)
        .map(|i| i as u8)
        .ok_or_else(|| CliError::param(format!("{what} `{v}'")))
}

/// conntrack's keyword matching: a case-insensitive prefix of a keyword,
/// with SRC_NAT/DST_NAT tried first (and ignored with a warning).
fn parse_keyword(word: &str, table: &[(&str, u32)], warnings: &mut Vec<String>) -> Option<u32> {
    let prefix_of = |k: &str| word.len() <= k.len() && k[..word.len()].eq_ignore_ascii_case(word);
    if prefix_of("SRC_NAT") {
        warnings.push("WARNING: ignoring SRC_NAT, use --src-nat instead".into());
        return Some(0);
    }
    if prefix_of("DST_NAT") {
        warnings.push("WARNING: ignoring DST_NAT, use --dst-nat instead".into());
        return Some(0);
    }
    table.iter().find(|(k, _)| prefix_of(k)).map(|&(_, v)| v)
}

pub(super) fn parse_list(arg: &str, table: &[(&str, u32)], warnings: &mut Vec<String>) -> Res<u32> {
    let mut v = 0;
    let mut rest = arg;
    loop {
        let (word, next) = match rest.find(',') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if word.is_empty() {
            return Err(CliError::param(format!("Bad parameter `{rest}'")));
        }
        match parse_keyword(word, table, warnings) {
            Some(bits) => v |= bits,
            None => return Err(CliError::param(format!("Bad parameter `{rest}'"))),
        }
        match next {
            Some(n) => rest = n,
            None => return Ok(v),
        }
    }
}

/// `-u`'s keywords.
const STATUS_WORDS: &[(&str, u32)] = &[
    ("ASSURED", status::ASSURED),
    ("SEEN_REPLY", status::SEEN_REPLY),
    ("UNSET", 0),
    ("FIXED_TIMEOUT", status::FIXED_TIMEOUT),
    ("EXPECTED", status::EXPECTED),
    ("OFFLOAD", status::OFFLOAD),
    ("HW_OFFLOAD", status::HW_OFFLOAD),
];

/// `-e`'s keywords (event group bits).
pub(super) const EVENT_WORDS: &[(&str, u32)] =
    &[("ALL", 7), ("NEW", 1), ("UPDATES", 2), ("DESTROY", 4)];

const O_XML: u32 = 1;
const O_EXT: u32 = 2;
const O_TMS: u32 = 4;
const O_ID: u32 = 8;
const O_KTMS: u32 = 16;
const O_CL: u32 = 32;
const O_SAVE: u32 = 64;
const O_JSON: u32 = 128;

/// `-o`'s keywords.
const OUTPUT_WORDS: &[(&str, u32)] = &[
    ("xml", O_XML),
    ("extended", O_EXT),
    ("timestamp", O_TMS),
    ("id", O_ID),
    ("ktimestamp", O_KTMS),
    ("labels", O_CL),
    ("userspace", 0),
    ("save", O_SAVE),
    ("json", O_JSON),
];

/// `-o WORD[,...]`: adds the formats named to `out`.
pub(super) fn parse_output(arg: &str, out: &mut Output, warnings: &mut Vec<String>) -> Res<()> {
    let bits = parse_list(arg, OUTPUT_WORDS, warnings)?;
    out.xml |= bits & O_XML != 0;
    out.extended |= bits & O_EXT != 0;
    out.timestamp |= bits & O_TMS != 0;
    out.id |= bits & O_ID != 0;
    out.ktimestamp |= bits & O_KTMS != 0;
    out.labels |= bits & O_CL != 0;
    out.save |= bits & O_SAVE != 0;
    out.json |= bits & O_JSON != 0;
    Ok(())
}

/// `-u` with `!FLAG` negation and `UNREPLIED`: returns (value, mask).
pub(super) fn parse_status(
    arg: &str,
    value: &mut u32,
    mask: &mut u32,
    warnings: &mut Vec<String>,
) -> Res<()> {
    let mut rest = arg;
    loop {
        let (word, next) = match rest.find(',') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let bad = || CliError::param(format!("Bad parameter `{rest}'"));
        if word.is_empty() {
            return Err(bad());
        }
        let (negated, w) = match word.strip_prefix('!') {
            Some(w) => (true, w),
            None => (false, word),
        };
        if !negated && w.starts_with("UNREPLIED") {
            *mask |= status::SEEN_REPLY;
        } else {
            if w.is_empty() {
                return Err(bad());
            }
            let bits = parse_keyword(w, STATUS_WORDS, warnings).ok_or_else(bad)?;
            if negated {
                *mask |= bits;
            } else {
                *value |= bits;
            }
        }
        match next {
            Some(n) => rest = n,
            None => return Ok(()),
        }
    }
}

pub(super) fn split_nat_arg(arg: &str) -> Res<(String, Option<u16>)> {
    if let Some(start) = arg.find('[') {
        let inner = &arg[start + 1..];
        let Some(close) = inner.find(']') else {
            return Err(CliError::param("No closing ']' around IPv6 address"));
        };
        if close == 0 {
            return Err(CliError::param("No IPv6 address specified"));
        }
        let addr = &inner[..close];
        match inner[close..].find(':') {
            Some(i) => {
                let port = &inner[close + i + 1..];
                Ok((addr.to_string(), Some(nat_port(port)?)))
            }
            None => Ok((arg.to_string(), None)),
        }
    } else {
        match arg.find(':') {
            Some(i) if !arg[i + 1..].contains(':') => {
                Ok((arg[..i].to_string(), Some(nat_port(&arg[i + 1..])?)))
            }
            _ => Ok((arg.to_string(), None)),
        }
    }
}

fn nat_port(p: &str) -> Res<u16> {
    if p.is_empty() {
        return Err(CliError::param("No port specified after `:'"));
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u32>().map_or(true, |n| n > 65535) {
        return Err(CliError::param(format!("Invalid port `{p}'")));
    }
    Ok(p.parse().unwrap_or(0))
}

pub(super) fn find_proto(name: &str) -> Option<u8> {
    if let Some(p) = names::l4_by_name(name).filter(|p| has_proto_module(*p)) {
        return Some(p);
    }
    if let Some(p) = crate::protocols::number(name) {
        return Some(p);
    }
    if let Some(p) = names::l4_by_name(name) {
        return Some(p);
    }
    parse_c_ulong(name).filter(|&n| n <= 255).map(|n| n as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_aton_forms() {
        assert_eq!(inet_aton("1.2.3.4"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(inet_aton("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("0x0a.0.0.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("1.2.3.256"), None);
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("a.b"), None);
    }
}
