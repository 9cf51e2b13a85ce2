//! Address and number formatting that matches the C library conntrack uses.
//!
//! IPv6 text follows glibc's `inet_ntop` (it differs from Rust's `Display`
//! for IPv4-compatible addresses such as `::1.2.3.4`), and every writer
//! appends to a byte buffer without allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Appends an unsigned integer in decimal.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// Appends a signed integer in decimal.
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// Appends an unsigned integer in lower-case hex without leading zeros.
pub fn push_hex(out: &mut Vec<u8>, v: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 8];
    let mut n = v;
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends an IPv4 address in dotted quad form.
pub fn push_ipv4(out: &mut Vec<u8>, a: Ipv4Addr) {
    let o = a.octets();
    for (i, b) in o.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_u64(out, *b as u64);
    }
}

/// Appends an IPv6 address the way glibc's inet_ntop writes it.
pub fn push_ipv6(out: &mut Vec<u8>, a: Ipv6Addr) {
    let words = a.segments();
    // longest run of zero words (length >= 2), first one wins
    let (mut best_base, mut best_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        if words[i] == 0 {
            let start = i;
            while i < 8 && words[i] == 0 {
                i += 1;
            }
            let len = i - start;
            if len > best_len {
                best_base = start;
                best_len = len;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_base = usize::MAX;
    }
    let in_run = |i: usize| best_base != usize::MAX && i >= best_base && i < best_base + best_len;
    for i in 0..8 {
        if in_run(i) {
            if i == best_base {
                out.push(b':');
            }
            continue;
        }
        if i != 0 {
            out.push(b':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)) {
            let o = a.octets();
            push_ipv4(out, Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            return;
        }
        push_hex(out, words[i] as u32);
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        out.push(b':');
    }
}

/// Appends an address of either family.
pub fn push_ip(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => push_ipv4(out, v4),
        IpAddr::V6(v6) => push_ipv6(out, v6),
    }
}

/// An address as glibc-compatible text.
pub fn ip_to_string(a: IpAddr) -> String {
    let mut v = Vec::with_capacity(40);
    push_ip(&mut v, a);
    String::from_utf8(v).unwrap_or_default()
}

/// Appends `s` left-aligned in a field of `width` bytes (C's `%-Ns`).
pub fn push_padded(out: &mut Vec<u8>, s: &str, width: usize) {
    out.extend_from_slice(s.as_bytes());
    for _ in s.len()..width {
        out.push(b' ');
    }
}

/// Broken-down local time, from the C library (honours TZ and /etc/localtime).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalTime {
    /// Seconds 0-60.
    pub sec: i32,
    /// Minutes 0-59.
    pub min: i32,
    /// Hours 0-23.
    pub hour: i32,
    /// Day of month 1-31.
    pub mday: i32,
    /// Month 0-11.
    pub mon: i32,
    /// Years since 1900.
    pub year: i32,
    /// Day of week, 0 = Sunday.
    pub wday: i32,
}

/// Converts seconds since the epoch to local time with `localtime_r`.
pub fn local_time(secs: i64) -> LocalTime {
    // The libc crate marks `time_t` deprecated on musl targets (it will
    // follow musl 1.2's 64-bit time_t); it is still the type localtime_r
    // takes there, so use it as it is.
    #[allow(deprecated)]
    let t = secs as libc::time_t;
    // SAFETY: `tm` is a plain C struct for which all-zero bytes are valid;
    // localtime_r only writes into it and reads `t`, both live locals.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers point to valid, initialised locals.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return LocalTime::default();
    }
    LocalTime {
        sec: tm.tm_sec,
        min: tm.tm_min,
        hour: tm.tm_hour,
        mday: tm.tm_mday,
        mon: tm.tm_mon,
        year: tm.tm_year,
        wday: tm.tm_wday,
    }
}

/// Appends a time as C's `ctime()` writes it, without the newline:
/// `Wed Nov 25 01:11:35 2026`.
pub fn push_ctime(out: &mut Vec<u8>, secs: i64) {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let tm = local_time(secs);
    out.extend_from_slice(DAYS[(tm.wday.rem_euclid(7)) as usize].as_bytes());
    out.push(b' ');
    out.extend_from_slice(MONTHS[(tm.mon.rem_euclid(12)) as usize].as_bytes());
    out.push(b' ');
    // "%3d" for the day: right aligned in 3 columns including the space
    if tm.mday < 10 {
        out.push(b' ');
    }
    push_i64(out, tm.mday as i64);
    out.push(b' ');
    push_2digits(out, tm.hour);
    out.push(b':');
    push_2digits(out, tm.min);
    out.push(b':');
    push_2digits(out, tm.sec);
    out.push(b' ');
    push_i64(out, 1900 + tm.year as i64);
}

/// Appends a number zero-padded to two digits (`%02d`).
pub fn push_2digits(out: &mut Vec<u8>, v: i32) {
    if (0..10).contains(&v) {
        out.push(b'0');
    }
    push_i64(out, v as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> String {
        let mut v = Vec::new();
        push_ipv6(&mut v, s.parse().unwrap());
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn ipv6_text_matches_glibc() {
        assert_eq!(v6("::"), "::");
        assert_eq!(v6("::1"), "::1");
        assert_eq!(v6("2001:db8::1"), "2001:db8::1");
        assert_eq!(v6("fd09:1::2"), "fd09:1::2");
        assert_eq!(v6("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        // glibc keeps the embedded IPv4 form for IPv4-compatible addresses
        assert_eq!(v6("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(v6("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
        assert_eq!(v6("1:0:2:0:3:0:4:0"), "1:0:2:0:3:0:4:0");
        assert_eq!(v6("fe80::"), "fe80::");
        assert_eq!(v6("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
    }

    #[test]
    fn hex_and_padding() {
        let mut v = Vec::new();
        push_hex(&mut v, 0);
        v.push(b' ');
        push_hex(&mut v, 0x10ab);
        v.push(b' ');
        push_padded(&mut v, "tcp", 8);
        assert_eq!(v, b"0 10ab tcp     ");
    }

    #[test]
    fn ctime_shape() {
        // SAFETY-free check: format is fixed width except the year
        let mut v = Vec::new();
        push_ctime(&mut v, 0);
        assert_eq!(v.len(), 24);
    }
}
