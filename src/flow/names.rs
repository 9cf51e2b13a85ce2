//! Names conntrack prints and parses: protocols, states, status bits.
//!
//! Tables follow libnetfilter_conntrack so that text output is identical.

use super::{AF_INET, AF_INET6, proto};

/// Layer-3 name as conntrack prints it (`ipv4`, `ipv6`, else `unknown`).
pub const fn l3_name(family: u8) -> &'static str {
    match family {
        AF_INET => "ipv4",
        AF_INET6 => "ipv6",
        _ => "unknown",
    }
}

/// Layer-4 name as conntrack prints it (`unknown` for protocols it lacks).
pub const fn l4_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::UDPLITE => "udplite",
        proto::ICMP => "icmp",
        proto::ICMPV6 => "icmpv6",
        proto::SCTP => "sctp",
        proto::GRE => "gre",
        proto::DCCP => "dccp",
        _ => "unknown",
    }
}

/// Protocol number for a name conntrack accepts with `-p` (case-insensitive),
/// or a few names from /etc/protocols that routers commonly carry.
pub fn l4_by_name(name: &str) -> Option<u8> {
    let known: &[(&str, u8)] = &[
        ("tcp", proto::TCP),
        ("udp", proto::UDP),
        ("udplite", proto::UDPLITE),
        ("icmp", proto::ICMP),
        ("icmpv6", proto::ICMPV6),
        ("ipv6-icmp", proto::ICMPV6),
        ("sctp", proto::SCTP),
        ("gre", proto::GRE),
        ("dccp", proto::DCCP),
        ("esp", 50),
        ("ah", 51),
        ("igmp", 2),
        ("ipip", 4),
        ("ipv6", 41),
        ("ospf", 89),
        ("pim", 103),
        ("vrrp", 112),
        ("l2tp", 115),
    ];
    known
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, p)| p)
}

/// TCP conntrack states by kernel number.
pub const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

/// SCTP conntrack states by kernel number.
pub const SCTP_STATES: [&str; 10] = [
    "NONE",
    "CLOSED",
    "COOKIE_WAIT",
    "COOKIE_ECHOED",
    "ESTABLISHED",
    "SHUTDOWN_SENT",
    "SHUTDOWN_RECD",
    "SHUTDOWN_ACK_SENT",
    "HEARTBEAT_SENT",
    "HEARTBEAT_ACKED",
];

/// DCCP conntrack states by kernel number.
pub const DCCP_STATES: [&str; 10] = [
    "NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT", "IGNORE",
    "INVALID",
];

/// DCCP roles by kernel number.
pub const DCCP_ROLES: [&str; 2] = ["client", "server"];

/// Name of a TCP state; out-of-range values print as `NONE` like conntrack.
pub fn tcp_state_name(s: u8) -> &'static str {
    TCP_STATES.get(s as usize).copied().unwrap_or(TCP_STATES[0])
}

/// Name of an SCTP state (`NONE` when out of range).
pub fn sctp_state_name(s: u8) -> &'static str {
    SCTP_STATES
        .get(s as usize)
        .copied()
        .unwrap_or(SCTP_STATES[0])
}

/// Name of a DCCP state (`NONE` when out of range).
pub fn dccp_state_name(s: u8) -> &'static str {
    DCCP_STATES
        .get(s as usize)
        .copied()
        .unwrap_or(DCCP_STATES[0])
}

/// TCP state number for a name given to `--state` (exact, upper case;
/// `LISTEN` is the pre-2.6.31 name of SYN_SENT2).
pub fn tcp_state_by_name(name: &str) -> Option<u8> {
    if name == "LISTEN" {
        return Some(9);
    }
    TCP_STATES.iter().position(|&s| s == name).map(|p| p as u8)
}

/// The ICMP type a reply carries for a request type, as the kernel pairs
/// them (echo 8 -> 0, timestamp 13 -> 14, ...); 255 when there is none.
pub fn icmp_reply_type(l4: u8, t: u8) -> u8 {
    let pairs: &[(u8, u8)] = if l4 == proto::ICMPV6 {
        &[(128, 129), (129, 128), (139, 140), (140, 139)]
    } else {
        &[
            (8, 0),
            (0, 8),
            (13, 14),
            (14, 13),
            (15, 16),
            (16, 15),
            (17, 18),
            (18, 17),
        ]
    };
    pairs
        .iter()
        .find(|(a, _)| *a == t)
        .map(|&(_, b)| b)
        .unwrap_or(255)
}

/// Status bits conntrack prints in `-o save` (`-u`), in bit order.
pub const SAVE_STATUS_NAMES: [(u32, &str); 4] = [
    (super::status::EXPECTED, "EXPECTED"),
    (super::status::SEEN_REPLY, "SEEN_REPLY"),
    (super::status::ASSURED, "ASSURED"),
    (super::status::FIXED_TIMEOUT, "FIXED_TIMEOUT"),
];

/// Every status bit with a name, for JSON output.
pub const STATUS_NAMES: [(u32, &str); 16] = [
    (1 << 0, "EXPECTED"),
    (1 << 1, "SEEN_REPLY"),
    (1 << 2, "ASSURED"),
    (1 << 3, "CONFIRMED"),
    (1 << 4, "SRC_NAT"),
    (1 << 5, "DST_NAT"),
    (1 << 6, "SEQ_ADJUST"),
    (1 << 7, "SRC_NAT_DONE"),
    (1 << 8, "DST_NAT_DONE"),
    (1 << 9, "DYING"),
    (1 << 10, "FIXED_TIMEOUT"),
    (1 << 11, "TEMPLATE"),
    (1 << 12, "UNTRACKED"),
    (1 << 13, "HELPER"),
    (1 << 14, "OFFLOAD"),
    (1 << 15, "HW_OFFLOAD"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_conntrack_tables() {
        assert_eq!(l4_name(6), "tcp");
        assert_eq!(l4_name(50), "unknown");
        assert_eq!(tcp_state_name(3), "ESTABLISHED");
        assert_eq!(tcp_state_name(200), "NONE");
        assert_eq!(tcp_state_by_name("LISTEN"), Some(9));
        assert_eq!(tcp_state_by_name("established"), None);
        assert_eq!(l4_by_name("TCP"), Some(6));
        assert_eq!(icmp_reply_type(proto::ICMP, 8), 0);
        assert_eq!(icmp_reply_type(proto::ICMPV6, 128), 129);
        assert_eq!(icmp_reply_type(proto::ICMP, 3), 255);
    }
}
