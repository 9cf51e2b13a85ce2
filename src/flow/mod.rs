//! The flow data model: one conntrack entry as the kernel reports it, plus
//! the names, filters and output formats built on it.
//!
//! Pure data and formatting: nothing here does I/O, so every other module
//! (netlink, cli, daemon, sync, wan, web) can depend on it and its tests run
//! anywhere, on any endianness.

pub mod addr;
pub mod buf;
pub mod expect;
pub mod filter;
pub mod json;
pub mod labels;
pub mod names;
pub mod save;
pub mod text;
pub mod xml;

use std::net::{IpAddr, Ipv4Addr};

/// Address family number of IPv4 (`AF_INET`), as carried in nfgenmsg.
pub const AF_INET: u8 = 2;
/// Address family number of IPv6 (`AF_INET6`).
pub const AF_INET6: u8 = 10;

/// IP protocol numbers conntrack knows by name.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// DCCP.
    pub const DCCP: u8 = 33;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// UDP-Lite.
    pub const UDPLITE: u8 = 136;

    /// Protocols whose tuple carries source and destination ports.
    pub fn has_ports(p: u8) -> bool {
        matches!(p, TCP | UDP | UDPLITE | SCTP | DCCP)
    }

    /// Protocols whose tuple carries ICMP type, code and id.
    pub fn is_icmp(p: u8) -> bool {
        matches!(p, ICMP | ICMPV6)
    }
}

/// Conntrack status bits (`IPS_*` in the kernel's nf_conntrack_common.h).
pub mod status {
    /// Expected connection (created by a helper's expectation).
    pub const EXPECTED: u32 = 1 << 0;
    /// Packets seen in both directions.
    pub const SEEN_REPLY: u32 = 1 << 1;
    /// Will not be early-dropped.
    pub const ASSURED: u32 = 1 << 2;
    /// In the main table.
    pub const CONFIRMED: u32 = 1 << 3;
    /// Source NAT configured.
    pub const SRC_NAT: u32 = 1 << 4;
    /// Destination NAT configured.
    pub const DST_NAT: u32 = 1 << 5;
    /// Sequence numbers adjusted (helpers that rewrite payload).
    pub const SEQ_ADJUST: u32 = 1 << 6;
    /// Source NAT applied.
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    /// Destination NAT applied.
    pub const DST_NAT_DONE: u32 = 1 << 8;
    /// Being destroyed.
    pub const DYING: u32 = 1 << 9;
    /// Timeout never refreshed by traffic.
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    /// A template entry.
    pub const TEMPLATE: u32 = 1 << 11;
    /// Untracked.
    pub const UNTRACKED: u32 = 1 << 12;
    /// Has a helper attached.
    pub const HELPER: u32 = 1 << 13;
    /// Offloaded to the flowtable.
    pub const OFFLOAD: u32 = 1 << 14;
    /// Offloaded to hardware.
    pub const HW_OFFLOAD: u32 = 1 << 15;
}

/// One direction of a connection: addresses and layer-4 identity.
///
/// Ports hold GRE keys for GRE; ICMP fields are only meaningful for
/// ICMP/ICMPv6. Addresses are both IPv4 or both IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (host order) or GRE source key.
    pub sport: u16,
    /// Destination port (host order) or GRE destination key.
    pub dport: u16,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// ICMP identifier (host order).
    pub icmp_id: u16,
}

impl Default for Tuple {
    fn default() -> Self {
        Tuple {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            proto: 0,
            sport: 0,
            dport: 0,
            icmp_type: 0,
            icmp_code: 0,
            icmp_id: 0,
        }
    }
}

impl Tuple {
    /// The layer-4 identity as two numbers, for compact stores (caches
    /// that keep four `u16`s a flow): ports, or ICMP id and type<<8|code.
    pub fn l4_pack(&self) -> (u16, u16) {
        if proto::is_icmp(self.proto) {
            (
                self.icmp_id,
                ((self.icmp_type as u16) << 8) | self.icmp_code as u16,
            )
        } else {
            (self.sport, self.dport)
        }
    }

    /// Sets the layer-4 identity from what [`Tuple::l4_pack`] made (the
    /// protocol must be set first).
    pub fn l4_unpack(&mut self, a: u16, b: u16) {
        if proto::is_icmp(self.proto) {
            self.icmp_id = a;
            self.icmp_type = (b >> 8) as u8;
            self.icmp_code = b as u8;
        } else {
            self.sport = a;
            self.dport = b;
        }
    }

    /// The tuple a reply to this one would carry, without NAT: addresses
    /// and ports swapped, ICMP requests turned into their replies.
    pub fn inverted(&self) -> Tuple {
        let mut t = Tuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            icmp_id: self.icmp_id,
        };
        if proto::is_icmp(self.proto) {
            t.sport = 0;
            t.dport = 0;
            t.icmp_type = names::icmp_reply_type(self.proto, self.icmp_type);
        }
        t
    }
}

/// Packet and byte counters of one direction (needs `nf_conntrack_acct=1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen.
    pub bytes: u64,
}

/// TCP protocol details.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// TCP conntrack state (`TCP_CONNTRACK_*`).
    pub state: Option<u8>,
    /// Window scale, original and reply direction.
    pub wscale: [Option<u8>; 2],
    /// TCP conntrack flags and mask, original and reply direction.
    pub flags: [Option<(u8, u8)>; 2],
}

/// Protocol-specific state carried in CTA_PROTOINFO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtoInfo {
    /// No protocol info.
    #[default]
    None,
    /// TCP state, window scales and flags.
    Tcp(TcpInfo),
    /// SCTP state and verification tags.
    Sctp {
        /// SCTP conntrack state.
        state: Option<u8>,
        /// Verification tag, original and reply direction.
        vtag: [Option<u32>; 2],
    },
    /// DCCP state and role.
    Dccp {
        /// DCCP conntrack state.
        state: Option<u8>,
        /// DCCP role.
        role: Option<u8>,
        /// Handshake sequence.
        handshake_seq: Option<u64>,
    },
}

impl ProtoInfo {
    /// TCP state, if this is TCP info carrying one.
    pub fn tcp_state(&self) -> Option<u8> {
        match self {
            ProtoInfo::Tcp(t) => t.state,
            _ => None,
        }
    }
}

/// NAT sequence adjustment of one direction (helpers that rewrite payload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqAdj {
    /// Correction position.
    pub correction_pos: u32,
    /// Offset before the position.
    pub offset_before: u32,
    /// Offset after the position.
    pub offset_after: u32,
}

/// SYN proxy state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synproxy {
    /// Initial sequence number.
    pub isn: u32,
    /// Initial timestamp.
    pub its: u32,
    /// Timestamp offset.
    pub tsoff: u32,
}

/// A short name from the kernel (a helper, an expectation function), kept
/// inline so decoding allocates nothing: at most `N - 1` bytes, as the
/// kernel's fixed buffers hold `N` with the NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name<const N: usize> {
    bytes: [u8; N],
    len: u8,
}

impl<const N: usize> Default for Name<N> {
    fn default() -> Self {
        Name {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Name<N> {
    /// Builds a name from raw bytes, cut at the first NUL and at `N - 1`
    /// bytes.
    pub fn from_bytes(raw: &[u8]) -> Self {
        let end = raw
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.len())
            .min(N.saturating_sub(1))
            .min(u8::MAX as usize);
        let mut bytes = [0u8; N];
        bytes[..end].copy_from_slice(&raw[..end]);
        Name {
            bytes,
            len: end as u8,
        }
    }

    /// The name's bytes (no NUL).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The name as text, with invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

/// A helper name (at most 15 bytes plus NUL in the kernel).
pub type HelperName = Name<16>;

/// Connection labels: a bitmap of up to 128 labels, as host-order words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    /// Label bits; bit i of word w is label 32*w + i.
    pub words: [u32; 4],
    /// Number of words the kernel sent.
    pub len: u8,
}

impl Labels {
    /// True when label `bit` is set.
    pub fn test(&self, bit: usize) -> bool {
        bit < self.len as usize * 32 && self.words[bit / 32] & (1 << (bit % 32)) != 0
    }

    /// True when no label is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

/// What kind of event a flow message reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A new flow.
    New,
    /// A change to an existing flow.
    Update,
    /// A flow that is gone.
    Destroy,
}

/// One conntrack entry, as decoded from a ctnetlink message.
///
/// Every attribute the kernel may leave out is an `Option`, because the
/// output formats print a field only when the kernel sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Address family (AF_INET or AF_INET6) from the message header.
    pub family: u8,
    /// Original direction tuple.
    pub orig: Tuple,
    /// Reply direction tuple.
    pub reply: Tuple,
    /// Whether the message carried an original tuple.
    pub has_orig: bool,
    /// Whether the message carried a reply tuple.
    pub has_reply: bool,
    /// Zone of the original direction (CTA_TUPLE_ZONE).
    pub orig_zone: Option<u16>,
    /// Zone of the reply direction.
    pub reply_zone: Option<u16>,
    /// Master tuple of an expected connection.
    pub master: Option<Tuple>,
    /// Status bits.
    pub status: Option<u32>,
    /// Seconds until the entry expires.
    pub timeout: Option<u32>,
    /// Connection mark.
    pub mark: Option<u32>,
    /// SELinux secmark.
    pub secmark: Option<u32>,
    /// SELinux security context.
    pub secctx: Option<Box<str>>,
    /// Reference count.
    pub use_count: Option<u32>,
    /// Kernel-assigned id.
    pub id: Option<u32>,
    /// Conntrack zone.
    pub zone: Option<u16>,
    /// Protocol state.
    pub protoinfo: ProtoInfo,
    /// Counters of the original and reply direction.
    pub counters: [Option<Counters>; 2],
    /// Start time, nanoseconds since the epoch (`nf_conntrack_timestamp`).
    pub timestamp_start: Option<u64>,
    /// Stop time, nanoseconds since the epoch (destroy events).
    pub timestamp_stop: Option<u64>,
    /// Event time from CTA_TIMESTAMP_EVENT (recent kernels).
    pub timestamp_event: Option<u64>,
    /// Helper name.
    pub helper: Option<HelperName>,
    /// Connection labels.
    pub labels: Option<Labels>,
    /// NAT sequence adjustment, original and reply direction.
    pub seq_adj: [Option<SeqAdj>; 2],
    /// SYN proxy state.
    pub synproxy: Option<Synproxy>,
}

impl Flow {
    /// The layer-4 protocol number.
    pub fn proto(&self) -> u8 {
        self.orig.proto
    }

    /// True when status says the entry has seen no reply.
    pub fn is_unreplied(&self) -> bool {
        matches!(self.status, Some(s) if s & status::SEEN_REPLY == 0)
    }

    fn nat_done(&self, bit: u32) -> bool {
        self.status.is_none_or(|s| s & bit != 0)
    }

    /// Source NAT changed the address: the reply goes to another address
    /// than the original source (libnetfilter_conntrack's IS_SNAT).
    pub fn is_snat(&self) -> bool {
        self.nat_done(status::SRC_NAT_DONE) && self.reply.dst != self.orig.src
    }

    /// Destination NAT changed the address (IS_DNAT).
    pub fn is_dnat(&self) -> bool {
        self.nat_done(status::DST_NAT_DONE) && self.reply.src != self.orig.dst
    }

    /// Source NAT changed the port (IS_SPAT).
    pub fn is_spat(&self) -> bool {
        self.nat_done(status::SRC_NAT_DONE) && self.reply.dport != self.orig.sport
    }

    /// Destination NAT changed the port (IS_DPAT).
    pub fn is_dpat(&self) -> bool {
        self.nat_done(status::DST_NAT_DONE) && self.reply.sport != self.orig.dport
    }

    /// Sum of both directions' counters, when accounting is on.
    pub fn total_counters(&self) -> Option<Counters> {
        match self.counters {
            [None, None] => None,
            [a, b] => {
                let a = a.unwrap_or_default();
                let b = b.unwrap_or_default();
                Some(Counters {
                    packets: a.packets.saturating_add(b.packets),
                    bytes: a.bytes.saturating_add(b.bytes),
                })
            }
        }
    }
}

/// Seconds since the epoch from the wall clock (0 if the clock is before 1970).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A TCP IPv4 flow like the ones in conntrack's documentation.
    pub fn tcp4() -> Flow {
        Flow {
            family: AF_INET,
            orig: Tuple {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                proto: proto::TCP,
                sport: 1234,
                dport: 80,
                ..Tuple::default()
            },
            reply: Tuple {
                src: "10.0.0.2".parse().unwrap(),
                dst: "10.0.0.1".parse().unwrap(),
                proto: proto::TCP,
                sport: 80,
                dport: 1234,
                ..Tuple::default()
            },
            has_orig: true,
            has_reply: true,
            status: Some(status::SEEN_REPLY | status::ASSURED | status::CONFIRMED),
            timeout: Some(119),
            mark: Some(5),
            use_count: Some(1),
            id: Some(3597683064),
            protoinfo: ProtoInfo::Tcp(TcpInfo {
                state: Some(3),
                ..TcpInfo::default()
            }),
            ..Flow::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l4_identity_packs_and_unpacks() {
        let t = testutil::tcp4().orig;
        let (a, b) = t.l4_pack();
        assert_eq!((a, b), (1234, 80));
        let mut back = Tuple {
            proto: t.proto,
            ..Tuple::default()
        };
        back.l4_unpack(a, b);
        assert_eq!((back.sport, back.dport), (1234, 80));
        let icmp = Tuple {
            proto: proto::ICMP,
            icmp_type: 8,
            icmp_code: 3,
            icmp_id: 77,
            ..Tuple::default()
        };
        assert_eq!(icmp.l4_pack(), (77, 0x0803));
        let mut back = Tuple {
            proto: proto::ICMP,
            ..Tuple::default()
        };
        back.l4_unpack(77, 0x0803);
        assert_eq!(back, icmp);
    }

    #[test]
    fn nat_predicates_follow_reply_tuple() {
        let mut f = testutil::tcp4();
        assert!(!f.is_snat() && !f.is_dnat() && !f.is_spat() && !f.is_dpat());
        f.reply.dst = "100.64.0.5".parse().unwrap();
        f.reply.dport = 6000;
        // status without SRC_NAT_DONE: not NAT, as libnetfilter_conntrack says
        assert!(!f.is_snat());
        f.status = Some(f.status.unwrap() | status::SRC_NAT_DONE);
        assert!(f.is_snat() && f.is_spat() && !f.is_dnat());
    }

    #[test]
    fn inverted_icmp_echo_becomes_reply() {
        let t = Tuple {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.9".parse().unwrap(),
            proto: proto::ICMP,
            icmp_type: 8,
            icmp_id: 77,
            ..Tuple::default()
        };
        let r = t.inverted();
        assert_eq!(r.icmp_type, 0);
        assert_eq!(r.icmp_id, 77);
        assert_eq!(r.src, t.dst);
    }

    #[test]
    fn helper_name_is_cut_at_nul_and_15_bytes() {
        assert_eq!(HelperName::from_bytes(b"ftp\0junk").as_bytes(), b"ftp");
        assert_eq!(HelperName::from_bytes(&[b'a'; 40]).as_bytes().len(), 15);
    }
}
