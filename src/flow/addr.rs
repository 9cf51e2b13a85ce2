//! Address and number formatting that matches the C library conntrack uses.
//!
//! IPv6 text follows glibc's `inet_ntop` (it differs from Rust's `Display`
//! for IPv4-compatible addresses such as `::1.2.3.4`), and every writer
//! appends to a byte buffer without allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::buf::Out;

/// Appends an unsigned integer in decimal.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut o = Out::append(out);
    o.u64(v);
    o.finish();
}

/// Appends a signed integer in decimal.
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    let mut o = Out::append(out);
    o.i64(v);
    o.finish();
}

/// Appends an unsigned integer in lower-case hex without leading zeros.
pub fn push_hex(out: &mut Vec<u8>, v: u32) {
    let mut o = Out::append(out);
    o.hex(v);
    o.finish();
}

/// Every byte value in decimal followed by a dot, padded to four bytes
/// (`"7.\0\0"`, `"255."`): an octet is one 4-byte store.
static DOTTED: [[u8; 4]; 256] = dotted_table();

const fn dotted_table() -> [[u8; 4]; 256] {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        let (h, d, u) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        t[i] = if i >= 100 {
            [b'0' + h, b'0' + d, b'0' + u, b'.']
        } else if i >= 10 {
            [b'0' + d, b'0' + u, b'.', 0]
        } else {
            [b'0' + u, b'.', 0, 0]
        };
        i += 1;
    }
    t
}

/// Length of an octet with its dot.
#[inline(always)]
fn dotted_len(v: u8) -> usize {
    2 + (v >= 10) as usize + (v >= 100) as usize
}

/// Writes an IPv4 address in dotted quad form, in place: four stores of
/// dotted octets, the last dot then dropped.
pub fn write_ipv4(o: &mut Out, a: Ipv4Addr) {
    let [a, b, c, d] = a.octets();
    let Some(t) = o.slot::<16>() else {
        return;
    };
    let n = put_octet(t, 0, a);
    let n = put_octet(t, n, b);
    let n = put_octet(t, n, c);
    let n = put_octet(t, n, d);
    o.advance(n - 1);
}

/// Stores octet `v` and its dot at `t[n..]`; returns where the next goes.
#[inline(always)]
fn put_octet(t: &mut [u8; 16], n: usize, v: u8) -> usize {
    if let Some(at) = t.get_mut(n..).and_then(|x| x.first_chunk_mut::<4>()) {
        *at = DOTTED[v as usize];
    }
    n + dotted_len(v)
}

/// Appends an IPv4 address in dotted quad form.
pub fn push_ipv4(out: &mut Vec<u8>, a: Ipv4Addr) {
    let mut o = Out::append(out);
    write_ipv4(&mut o, a);
    o.finish();
}

/// Writes an IPv6 address the way glibc's inet_ntop writes it.
pub fn write_ipv6(o: &mut Out, a: Ipv6Addr) {
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
                o.byte(b':');
            }
            continue;
        }
        if i != 0 {
            o.byte(b':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)) {
            let b = a.octets();
            write_ipv4(o, Ipv4Addr::new(b[12], b[13], b[14], b[15]));
            return;
        }
        o.hex(words[i] as u32);
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        o.byte(b':');
    }
}

/// Appends an IPv6 address the way glibc's inet_ntop writes it.
pub fn push_ipv6(out: &mut Vec<u8>, a: Ipv6Addr) {
    let mut o = Out::append(out);
    write_ipv6(&mut o, a);
    o.finish();
}

/// Writes an address of either family.
#[inline]
pub fn write_ip(o: &mut Out, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => write_ipv4(o, v4),
        IpAddr::V6(v6) => write_ipv6(o, v6),
    }
}

/// Appends an address of either family.
pub fn push_ip(out: &mut Vec<u8>, a: IpAddr) {
    let mut o = Out::append(out);
    write_ip(&mut o, a);
    o.finish();
}

/// An address as glibc-compatible text.
pub fn ip_to_string(a: IpAddr) -> String {
    let mut v = Vec::with_capacity(40);
    push_ip(&mut v, a);
    String::from_utf8(v).unwrap_or_default()
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

/// Writes a time as C's `ctime()` writes it, without the newline:
/// `Wed Nov 25 01:11:35 2026`.
pub fn write_ctime(o: &mut Out, secs: i64) {
    const DAYS: [[u8; 4]; 7] = [
        *b"Sun ", *b"Mon ", *b"Tue ", *b"Wed ", *b"Thu ", *b"Fri ", *b"Sat ",
    ];
    const MONTHS: [[u8; 4]; 12] = [
        *b"Jan ", *b"Feb ", *b"Mar ", *b"Apr ", *b"May ", *b"Jun ", *b"Jul ", *b"Aug ", *b"Sep ",
        *b"Oct ", *b"Nov ", *b"Dec ",
    ];
    let tm = local_time(secs);
    o.lit(&DAYS[tm.wday.rem_euclid(7) as usize]);
    o.lit(&MONTHS[tm.mon.rem_euclid(12) as usize]);
    // "%2d" for the day
    if tm.mday < 10 {
        o.byte(b' ');
    }
    o.i64(tm.mday as i64);
    o.byte(b' ');
    write_2digits(o, tm.hour);
    o.byte(b':');
    write_2digits(o, tm.min);
    o.byte(b':');
    write_2digits(o, tm.sec);
    o.byte(b' ');
    o.i64(1900 + tm.year as i64);
}

/// Appends a time as C's `ctime()` writes it, without the newline.
pub fn push_ctime(out: &mut Vec<u8>, secs: i64) {
    let mut o = Out::append(out);
    write_ctime(&mut o, secs);
    o.finish();
}

/// Writes a number zero-padded to two digits (`%02d`).
pub fn write_2digits(o: &mut Out, v: i32) {
    match u8::try_from(v) {
        Ok(v) if v < 100 => o.two_digits(v),
        _ => o.i64(v as i64),
    }
}

/// Appends a number zero-padded to two digits (`%02d`).
pub fn push_2digits(out: &mut Vec<u8>, v: i32) {
    let mut o = Out::append(out);
    write_2digits(&mut o, v);
    o.finish();
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
    fn hex_and_ipv4() {
        let mut v = Vec::new();
        push_hex(&mut v, 0);
        v.push(b' ');
        push_hex(&mut v, 0x10ab);
        v.push(b' ');
        for a in ["0.0.0.0", "10.9.100.255", "255.255.255.255", "1.22.133.4"] {
            push_ipv4(&mut v, a.parse().unwrap());
            v.push(b' ');
        }
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "0 10ab 0.0.0.0 10.9.100.255 255.255.255.255 1.22.133.4 "
        );
        // every octet as Rust prints it
        for b in 0..=255u8 {
            let a = Ipv4Addr::new(b, 0, b, 9);
            let mut v = Vec::new();
            push_ipv4(&mut v, a);
            assert_eq!(String::from_utf8(v).unwrap(), a.to_string());
        }
    }

    #[test]
    fn ctime_shape() {
        // SAFETY-free check: format is fixed width except the year
        let mut v = Vec::new();
        push_ctime(&mut v, 0);
        assert_eq!(v.len(), 24);
        let mut v = Vec::new();
        push_2digits(&mut v, 5);
        push_2digits(&mut v, 59);
        push_2digits(&mut v, -1);
        assert_eq!(v, b"0559-1");
    }
}
