//! Flow selection: what conntrack's `-s -d -r -q -p --sport ... -m -u
//! --state -n -g -j -w -l` pick from a table, with conntrack's semantics
//! (libnetfilter_conntrack's `nfct_filter` + `nfct_cmp(ALL|MASK)`).
//!
//! The same [`Filter`] serves as the template of `-I`/`-U` (what to set),
//! and the daemon, web API and WAN flush use it to select flows.

use std::net::IpAddr;

use super::{Flow, Labels, ProtoInfo, proto};

/// An address prefix (`10.0.0.0/8`, `fd00::/64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The network address (host bits may be set; they are masked).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// True when `a` is inside this prefix (same family only).
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len.min(32) as u32)
                };
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len.min(128) as u32)
                };
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }

    /// Parses `addr[/len]`; a missing length means a host prefix.
    pub fn parse(s: &str) -> Option<Prefix> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse::<u8>().ok().filter(|&n| n <= max)?
            }
            Some(_) => return None,
            None => max,
        };
        Some(Prefix { addr, len })
    }
}

/// A NAT selector: "is source (or destination) NATed [to this address
/// [and port]]".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatMatch {
    /// The NAT address to match, if given.
    pub addr: Option<IpAddr>,
    /// The NAT port to match, if given.
    pub port: Option<u16>,
}

/// Which NAT selectors a command line gave (`-n`, `-g`, `-j`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatFilter {
    /// `-n/--src-nat [ip[:port]]`.
    pub src: Option<NatMatch>,
    /// `-g/--dst-nat [ip[:port]]`.
    pub dst: Option<NatMatch>,
    /// `-j/--any-nat [ip[:port]]`.
    pub any: Option<NatMatch>,
}

/// The fields of a conntrack command line that select or set flows.
/// `None` means "not given".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Address family (from `-f` or from an address).
    pub family: Option<u8>,
    /// `-s` exact original source.
    pub orig_src: Option<IpAddr>,
    /// `-d` exact original destination.
    pub orig_dst: Option<IpAddr>,
    /// `-r` reply source.
    pub reply_src: Option<IpAddr>,
    /// `-q` reply destination.
    pub reply_dst: Option<IpAddr>,
    /// `-s a/n`: original source prefix.
    pub src_prefix: Option<Prefix>,
    /// `-d a/n`: original destination prefix.
    pub dst_prefix: Option<Prefix>,
    /// `-p`: layer-4 protocol.
    pub proto: Option<u8>,
    /// `--sport`.
    pub orig_sport: Option<u16>,
    /// `--dport`.
    pub orig_dport: Option<u16>,
    /// `--reply-port-src`.
    pub reply_sport: Option<u16>,
    /// `--reply-port-dst`.
    pub reply_dport: Option<u16>,
    /// `--icmp-type`.
    pub icmp_type: Option<u8>,
    /// `--icmp-code`.
    pub icmp_code: Option<u8>,
    /// `--icmp-id`.
    pub icmp_id: Option<u16>,
    /// `--state` (TCP, SCTP or DCCP state number per `proto`).
    pub state: Option<u8>,
    /// `-t`: timeout.
    pub timeout: Option<u32>,
    /// `-u`: status bits that must be set.
    pub status: Option<u32>,
    /// `-u`: status bits that are compared (`!FLAG` and `UNREPLIED` add
    /// bits that must be clear).
    pub status_mask: u32,
    /// `-m value[/mask]`.
    pub mark: Option<(u32, u32)>,
    /// `-c`.
    pub secmark: Option<u32>,
    /// `-i` (deprecated): the entry id.
    pub id: Option<u32>,
    /// `-w`.
    pub zone: Option<u16>,
    /// `--orig-zone`.
    pub orig_zone: Option<u16>,
    /// `--reply-zone`.
    pub reply_zone: Option<u16>,
    /// `-n -g -j`.
    pub nat: NatFilter,
    /// `-l`: labels that must all be set.
    pub labels: Option<Labels>,
}

fn eq_opt<T: PartialEq>(want: Option<T>, have: T) -> bool {
    want.is_none_or(|w| w == have)
}

fn nat_src(m: &NatMatch, f: &Flow) -> bool {
    let spat = f.is_spat();
    let addr_ok = m.addr.map(|a| f.is_snat() && a == f.reply.dst);
    let port_ok = m.port.map(|p| spat && p == f.reply.dport);
    match (addr_ok, port_ok) {
        (Some(a), Some(p)) => a && p,
        (Some(a), None) => a,
        (None, Some(p)) => p,
        (None, None) => f.is_snat() || spat,
    }
}

fn nat_dst(m: &NatMatch, f: &Flow) -> bool {
    let dpat = f.is_dpat();
    let addr_ok = m.addr.map(|a| f.is_dnat() && a == f.reply.src);
    let port_ok = m.port.map(|p| dpat && p == f.reply.sport);
    match (addr_ok, port_ok) {
        (Some(a), Some(p)) => a && p,
        (Some(a), None) => a,
        (None, Some(p)) => p,
        (None, None) => f.is_dnat() || dpat,
    }
}

impl Filter {
    /// True when nothing is selected (every flow matches).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// True when the NAT selectors accept the flow.
    pub fn matches_nat(&self, f: &Flow) -> bool {
        let n = &self.nat;
        if let Some(any) = &n.any {
            return nat_src(any, f) || nat_dst(any, f);
        }
        match (&n.src, &n.dst) {
            (Some(s), Some(d)) => nat_src(s, f) && nat_dst(d, f),
            (Some(s), None) => nat_src(s, f),
            (None, Some(d)) => nat_dst(d, f),
            (None, None) => true,
        }
    }

    /// True when the prefixes (`-s a/n`, `-d a/n`) accept the flow.
    pub fn matches_prefixes(&self, f: &Flow) -> bool {
        self.src_prefix.is_none_or(|p| p.contains(f.orig.src))
            && self.dst_prefix.is_none_or(|p| p.contains(f.orig.dst))
    }

    /// True when the labels filter accepts the flow.
    pub fn matches_labels(&self, f: &Flow) -> bool {
        let Some(want) = &self.labels else {
            return true;
        };
        let Some(have) = &f.labels else {
            return false;
        };
        (0..128).all(|b| !want.test(b) || have.test(b))
    }

    /// True when the tuple fields (addresses, protocol, ports, ICMP
    /// fields, zones of the tuples) match.
    pub fn matches_tuples(&self, f: &Flow) -> bool {
        if let Some(fam) = self.family
            && fam != f.family
            && (self.orig_src.is_some()
                || self.orig_dst.is_some()
                || self.reply_src.is_some()
                || self.reply_dst.is_some()
                || self.src_prefix.is_some()
                || self.dst_prefix.is_some())
        {
            return false;
        }
        if !(eq_opt(self.orig_src, f.orig.src)
            && eq_opt(self.orig_dst, f.orig.dst)
            && eq_opt(self.reply_src, f.reply.src)
            && eq_opt(self.reply_dst, f.reply.dst))
        {
            return false;
        }
        if let Some(p) = self.proto {
            if p != f.orig.proto {
                return false;
            }
            if proto::has_ports(p)
                && !(eq_opt(self.orig_sport, f.orig.sport)
                    && eq_opt(self.orig_dport, f.orig.dport)
                    && eq_opt(self.reply_sport, f.reply.sport)
                    && eq_opt(self.reply_dport, f.reply.dport))
            {
                return false;
            }
            if proto::is_icmp(p)
                && !(eq_opt(self.icmp_type, f.orig.icmp_type)
                    && eq_opt(self.icmp_code, f.orig.icmp_code)
                    && eq_opt(self.icmp_id, f.orig.icmp_id))
            {
                return false;
            }
        }
        eq_opt(self.orig_zone, f.orig_zone.unwrap_or(0))
            && eq_opt(self.reply_zone, f.reply_zone.unwrap_or(0))
    }

    /// True when the status selector accepts the flow.
    pub fn matches_status(&self, f: &Flow) -> bool {
        match self.status {
            None => true,
            Some(v) => {
                let mask = if self.status_mask == 0 {
                    v
                } else {
                    self.status_mask | v
                };
                f.status.is_some_and(|s| s & mask == v)
            }
        }
    }

    /// True when every field of the filter accepts the flow: conntrack's
    /// selection for `-L`, `-D`, `-E`.
    pub fn matches(&self, f: &Flow) -> bool {
        if !self.matches_nat(f) || !self.matches_prefixes(f) || !self.matches_labels(f) {
            return false;
        }
        if let Some((v, m)) = self.mark
            && f.mark.is_none_or(|mark| mark & m != v)
        {
            return false;
        }
        if !self.matches_tuples(f) || !self.matches_status(f) {
            return false;
        }
        if let Some(st) = self.state {
            let have = match f.protoinfo {
                ProtoInfo::Tcp(t) => t.state,
                ProtoInfo::Sctp { state, .. } => state,
                ProtoInfo::Dccp { state, .. } => state,
                ProtoInfo::None => None,
            };
            if have != Some(st) {
                return false;
            }
        }
        if self.timeout.is_some() && self.timeout != f.timeout {
            return false;
        }
        // an entry without a secmark is not compared (libnetfilter_conntrack's
        // non-strict comparison)
        if self.secmark.is_some() && f.secmark.is_some() && self.secmark != f.secmark {
            return false;
        }
        if self.id.is_some() && f.id.is_some() && self.id != f.id {
            return false;
        }
        eq_opt(self.zone, f.zone.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp4;
    use super::super::{Tuple, status};
    use super::*;

    #[test]
    fn prefixes() {
        let p = Prefix::parse("10.0.0.0/8").unwrap();
        assert!(p.contains("10.1.2.3".parse().unwrap()));
        assert!(!p.contains("11.1.2.3".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let z = Prefix::parse("0.0.0.0/0").unwrap();
        assert!(z.contains("1.2.3.4".parse().unwrap()));
        let v6 = Prefix::parse("fd09:1::/64").unwrap();
        assert!(v6.contains("fd09:1::2".parse().unwrap()));
        assert!(Prefix::parse("10.0.0.0/33").is_none());
        assert!(Prefix::parse("10.0.0.0/x").is_none());
        assert!(Prefix::parse("nonsense").is_none());
    }

    #[test]
    fn tuple_and_meta_selection() {
        let f = tcp4();
        assert!(Filter::default().matches(&f));
        let by_port = Filter {
            proto: Some(proto::TCP),
            orig_dport: Some(80),
            ..Filter::default()
        };
        assert!(by_port.matches(&f));
        let wrong_port = Filter {
            orig_dport: Some(81),
            ..by_port.clone()
        };
        assert!(!wrong_port.matches(&f));
        let udp = Filter {
            proto: Some(proto::UDP),
            ..Filter::default()
        };
        assert!(!udp.matches(&f));
        let mark = Filter {
            mark: Some((4, 0xfffffffc)),
            ..Filter::default()
        };
        assert!(mark.matches(&f));
        let zone0 = Filter {
            zone: Some(0),
            ..Filter::default()
        };
        assert!(zone0.matches(&f));
        let state = Filter {
            proto: Some(proto::TCP),
            state: Some(1),
            ..Filter::default()
        };
        assert!(!state.matches(&f));
    }

    #[test]
    fn status_with_negation_and_unreplied() {
        let f = tcp4();
        let assured = Filter {
            status: Some(status::ASSURED),
            ..Filter::default()
        };
        assert!(assured.matches(&f));
        let unreplied = Filter {
            status: Some(0),
            status_mask: status::SEEN_REPLY,
            ..Filter::default()
        };
        assert!(!unreplied.matches(&f));
        let not_assured = Filter {
            status: Some(0),
            status_mask: status::ASSURED,
            ..Filter::default()
        };
        assert!(!not_assured.matches(&f));
    }

    #[test]
    fn nat_selectors() {
        let mut f = tcp4();
        let snat = Filter {
            nat: NatFilter {
                src: Some(NatMatch::default()),
                ..NatFilter::default()
            },
            ..Filter::default()
        };
        assert!(!snat.matches(&f));
        f.reply = Tuple {
            dst: "100.64.0.5".parse().unwrap(),
            dport: 6000,
            ..f.reply
        };
        f.status = Some(f.status.unwrap() | status::SRC_NAT_DONE);
        assert!(snat.matches(&f));
        let to = Filter {
            nat: NatFilter {
                src: Some(NatMatch {
                    addr: Some("100.64.0.5".parse().unwrap()),
                    port: Some(6000),
                }),
                ..NatFilter::default()
            },
            ..Filter::default()
        };
        assert!(to.matches(&f));
        let wrong_port = Filter {
            nat: NatFilter {
                any: Some(NatMatch {
                    addr: Some("100.64.0.5".parse().unwrap()),
                    port: Some(1),
                }),
                ..NatFilter::default()
            },
            ..Filter::default()
        };
        assert!(!wrong_port.matches(&f));
    }
}
