//! The stale-flow rule, pure: given the WAN's old and current addresses,
//! which conntrack entries to delete.
//!
//! Definitions (A = an address the WAN interfaces had and no longer have,
//! the "lost" set; W = every old or current address of the watched WAN
//! interfaces):
//!
//! | mode | a flow is selected when |
//! |---|---|
//! | `stale` | one of its four addresses (orig src/dst, reply src/dst) is in A |
//! | `all-wan` | one of its four addresses is in W (A is part of W) |
//! | `all` | always: the whole table |
//!
//! "One of its four addresses is in A" covers every way a flow can depend
//! on an address:
//! - SNAT/masquerade to A: the reply goes to A (reply dst = A);
//! - a port forward (DNAT) on A: the original packets went to A
//!   (orig dst = A), and the LAN side's replies leave with source A;
//! - flows of the router itself from or to A (orig src or orig dst = A);
//! - a flow DNATed to A (reply src = A).
//!
//! Flows that involve no WAN address (LAN-only flows, flows NATed to
//! another interface's address) are never selected by `stale`; with
//! several WAN interfaces, `all-wan` selects the flows of all of them
//! (that is how a flow that fell back to a second WAN moves back when the
//! first returns). Link-local, loopback and unspecified addresses are
//! never part of A or W: they are not unique to the WAN.

use std::fmt;
use std::net::IpAddr;

use super::config::FlushMode;
use crate::flow::Flow;

/// Why a flow was selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Source NAT or masquerade to a lost address (reply dst).
    Snat,
    /// Destination NAT (port forward) on a lost address (orig dst), or to
    /// one (reply src).
    Dnat,
    /// The router's own flow from or to a lost address.
    Local,
    /// Through the WAN, on a current or old address (`all-wan`).
    Wan,
    /// Everything (`all`).
    All,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`].
    pub const ALL: [Reason; 5] = [
        Reason::Snat,
        Reason::Dnat,
        Reason::Local,
        Reason::Wan,
        Reason::All,
    ];

    /// A short lowercase name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Snat => "snat",
            Reason::Dnat => "dnat",
            Reason::Local => "local",
            Reason::Wan => "wan",
            Reason::All => "all",
        }
    }

    /// Position in [`Reason::ALL`] (for per-reason counters).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// True for addresses that can belong to the WAN selection: not
/// unspecified, loopback, multicast or link-local.
pub fn is_selectable(a: IpAddr) -> bool {
    if a.is_unspecified() || a.is_loopback() || a.is_multicast() {
        return false;
    }
    match a {
        IpAddr::V4(v) => !v.is_link_local() && !v.is_broadcast(),
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 != 0xfe80,
    }
}

fn push_unique(v: &mut Vec<IpAddr>, a: IpAddr) {
    if is_selectable(a) && !v.contains(&a) {
        v.push(a);
    }
}

/// A flush selection: the mode and the address sets it works on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    mode: FlushMode,
    lost: Vec<IpAddr>,
    wan: Vec<IpAddr>,
}

impl Rule {
    /// The rule for a change from the `old` to the `current` addresses of
    /// the watched WAN interfaces: lost = old - current, W = old + current.
    pub fn new(mode: FlushMode, old: &[IpAddr], current: &[IpAddr]) -> Rule {
        let mut lost = Vec::new();
        let mut wan = Vec::new();
        for &a in old {
            if !current.contains(&a) {
                push_unique(&mut lost, a);
            }
            push_unique(&mut wan, a);
        }
        for &a in current {
            push_unique(&mut wan, a);
        }
        Rule { mode, lost, wan }
    }

    /// `stale` with these lost addresses (`ctrack flush-wan --old-address`).
    pub fn stale(lost: &[IpAddr]) -> Rule {
        Rule::new(FlushMode::Stale, lost, &[])
    }

    /// The mode.
    pub fn mode(&self) -> FlushMode {
        self.mode
    }

    /// The lost addresses (A).
    pub fn lost(&self) -> &[IpAddr] {
        &self.lost
    }

    /// Every old or current WAN address (W).
    pub fn wan(&self) -> &[IpAddr] {
        &self.wan
    }

    /// True when the rule cannot select anything (nothing to do).
    pub fn is_empty(&self) -> bool {
        match self.mode {
            FlushMode::Stale => self.lost.is_empty(),
            FlushMode::AllWan => self.wan.is_empty(),
            FlushMode::All => false,
        }
    }

    /// The addresses a kernel-side filtered dump may select on: every
    /// selected flow has one of them in one of its four address fields.
    /// `None` for `all` (the whole table).
    pub fn filter_addrs(&self) -> Option<&[IpAddr]> {
        match self.mode {
            FlushMode::Stale => Some(&self.lost),
            FlushMode::AllWan => Some(&self.wan),
            FlushMode::All => None,
        }
    }

    /// Adds another rule's addresses (a failed flush retried with the next
    /// one); the wider mode wins.
    pub fn merge(&mut self, other: &Rule) {
        for &a in &other.lost {
            push_unique(&mut self.lost, a);
        }
        for &a in &other.wan {
            push_unique(&mut self.wan, a);
        }
        let rank = |m| match m {
            FlushMode::Stale => 0,
            FlushMode::AllWan => 1,
            FlushMode::All => 2,
        };
        if rank(other.mode) > rank(self.mode) {
            self.mode = other.mode;
        }
    }

    /// Drops from the lost set the addresses that are current again.
    pub fn forget_lost(&mut self, current: &[IpAddr]) {
        self.lost.retain(|a| !current.contains(a));
    }

    /// Whether `f` is selected, and why.
    pub fn check(&self, f: &Flow) -> Option<Reason> {
        if self.mode == FlushMode::All {
            return Some(Reason::All);
        }
        if let Some(r) = classify(f, &self.lost) {
            return Some(r);
        }
        if self.mode == FlushMode::AllWan {
            let (o, r) = (&f.orig, &f.reply);
            let w = &self.wan;
            if w.contains(&o.src)
                || w.contains(&o.dst)
                || (f.has_reply && (w.contains(&r.src) || w.contains(&r.dst)))
            {
                return Some(Reason::Wan);
            }
        }
        None
    }
}

/// How `f` depends on one of the `lost` addresses, if it does.
fn classify(f: &Flow, lost: &[IpAddr]) -> Option<Reason> {
    if lost.is_empty() {
        return None;
    }
    let (o, r) = (&f.orig, &f.reply);
    let has = |a: &IpAddr| lost.contains(a);
    if f.has_reply && has(&r.dst) {
        // replies come back to the lost address: NATed to it, or the
        // router's own flow from it
        return Some(if o.src == r.dst {
            Reason::Local
        } else {
            Reason::Snat
        });
    }
    if has(&o.dst) {
        return Some(if f.has_reply && r.src != o.dst {
            Reason::Dnat
        } else {
            Reason::Local
        });
    }
    if has(&o.src) {
        return Some(Reason::Local);
    }
    if f.has_reply && has(&r.src) {
        return Some(Reason::Dnat);
    }
    None
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, v: &[IpAddr]| -> fmt::Result {
            for (i, a) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(&crate::flow::addr::ip_to_string(*a))?;
            }
            Ok(())
        };
        match self.mode {
            FlushMode::Stale => {
                f.write_str("stale flows of ")?;
                list(f, &self.lost)
            }
            FlushMode::AllWan => {
                f.write_str("all flows through the WAN (")?;
                list(f, &self.wan)?;
                f.write_str(")")
            }
            FlushMode::All => f.write_str("the whole table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{AF_INET, AF_INET6, Tuple, proto, status};

    const A: &str = "198.51.100.7"; // old WAN address
    const B: &str = "198.51.100.9"; // new WAN address
    const C: &str = "203.0.113.5"; // second WAN
    const LAN: &str = "192.168.1.10";
    const ROUTER_LAN: &str = "192.168.1.1";
    const REMOTE: &str = "192.0.2.50";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(src: &str, dst: &str, sport: u16, dport: u16) -> Tuple {
        Tuple {
            src: ip(src),
            dst: ip(dst),
            proto: proto::UDP,
            sport,
            dport,
            ..Tuple::default()
        }
    }

    fn flow(orig: Tuple, reply: Tuple, nat: u32) -> Flow {
        Flow {
            family: if orig.src.is_ipv4() {
                AF_INET
            } else {
                AF_INET6
            },
            orig,
            reply,
            has_orig: true,
            has_reply: true,
            status: Some(status::CONFIRMED | status::SEEN_REPLY | nat),
            ..Flow::default()
        }
    }

    const SNAT: u32 = status::SRC_NAT | status::SRC_NAT_DONE;
    const DNAT: u32 = status::DST_NAT | status::DST_NAT_DONE;

    /// LAN host -> remote, source NATed (SNAT rule or masquerade) to `wan`.
    fn snat(wan: &str) -> Flow {
        flow(
            t(LAN, REMOTE, 5060, 5060),
            t(REMOTE, wan, 5060, 61000),
            SNAT,
        )
    }

    /// remote -> `wan`:2222 forwarded to LAN:22.
    fn dnat(wan: &str) -> Flow {
        flow(t(REMOTE, wan, 40000, 2222), t(LAN, REMOTE, 22, 40000), DNAT)
    }

    fn lan_only() -> Flow {
        flow(
            t(LAN, ROUTER_LAN, 5353, 53),
            t(ROUTER_LAN, LAN, 53, 5353),
            0,
        )
    }

    fn stale() -> Rule {
        Rule::new(FlushMode::Stale, &[ip(A)], &[ip(B)])
    }

    #[test]
    fn lost_is_old_minus_current() {
        let r = Rule::new(FlushMode::Stale, &[ip(A), ip(B)], &[ip(B)]);
        assert_eq!(r.lost(), [ip(A)]);
        assert_eq!(r.wan(), [ip(A), ip(B)]);
        // nothing lost: nothing to do
        assert!(Rule::new(FlushMode::Stale, &[ip(A)], &[ip(A), ip(B)]).is_empty());
        assert!(!Rule::new(FlushMode::AllWan, &[ip(A)], &[ip(A)]).is_empty());
        assert!(!Rule::new(FlushMode::All, &[], &[]).is_empty());
        // never link-local, loopback or unspecified
        let r = Rule::stale(&[
            ip("fe80::1"),
            ip("127.0.0.1"),
            ip("0.0.0.0"),
            ip("169.254.1.1"),
        ]);
        assert!(r.is_empty() && r.wan().is_empty());
    }

    #[test]
    fn snat_and_masquerade_to_the_old_address() {
        assert_eq!(stale().check(&snat(A)), Some(Reason::Snat));
        // the same flow re-created on the new address is not stale
        assert_eq!(stale().check(&snat(B)), None);
    }

    #[test]
    fn dnat_port_forward_on_the_old_address() {
        assert_eq!(stale().check(&dnat(A)), Some(Reason::Dnat));
        assert_eq!(stale().check(&dnat(B)), None);
        // DNAT to the lost address itself (a redirect to the router)
        let f = flow(t(REMOTE, "192.0.2.1", 1, 80), t(A, REMOTE, 8080, 1), DNAT);
        assert_eq!(stale().check(&f), Some(Reason::Dnat));
    }

    #[test]
    fn router_flows_from_and_to_the_old_address() {
        let out = flow(t(A, REMOTE, 123, 123), t(REMOTE, A, 123, 123), 0);
        assert_eq!(stale().check(&out), Some(Reason::Local));
        let inbound = flow(t(REMOTE, A, 50000, 22), t(A, REMOTE, 22, 50000), 0);
        assert_eq!(stale().check(&inbound), Some(Reason::Local));
    }

    #[test]
    fn lan_only_and_other_wan_are_untouched() {
        let r = stale();
        assert_eq!(r.check(&lan_only()), None);
        assert_eq!(r.check(&snat(C)), None);
        assert_eq!(r.check(&dnat(C)), None);
        // a flow that left un-NATed (no WAN address at all)
        let ghost = flow(t(LAN, REMOTE, 1, 2), t(REMOTE, LAN, 2, 1), 0);
        assert_eq!(r.check(&ghost), None);
        let all_wan = Rule::new(FlushMode::AllWan, &[ip(A)], &[ip(B)]);
        assert_eq!(all_wan.check(&lan_only()), None);
        assert_eq!(all_wan.check(&ghost), None);
    }

    #[test]
    fn all_wan_takes_every_flow_of_the_wan_addresses() {
        // multi-WAN: wan1 had A and has it again, wan2 has C
        let r = Rule::new(FlushMode::AllWan, &[ip(A), ip(C)], &[ip(A), ip(C)]);
        assert!(r.lost().is_empty());
        assert_eq!(r.check(&snat(C)), Some(Reason::Wan));
        assert_eq!(r.check(&snat(A)), Some(Reason::Wan));
        assert_eq!(r.check(&dnat(C)), Some(Reason::Wan));
        assert_eq!(r.check(&lan_only()), None);
        // lost addresses keep their precise reason
        let r = Rule::new(FlushMode::AllWan, &[ip(A)], &[ip(B)]);
        assert_eq!(r.check(&snat(A)), Some(Reason::Snat));
        assert_eq!(r.check(&snat(B)), Some(Reason::Wan));
    }

    #[test]
    fn all_takes_the_whole_table() {
        let r = Rule::new(FlushMode::All, &[ip(A)], &[ip(B)]);
        assert_eq!(r.check(&lan_only()), Some(Reason::All));
        assert_eq!(r.filter_addrs(), None);
    }

    #[test]
    fn ipv6_prefix_change() {
        let old = ip("2001:db8:1::1");
        let new = ip("2001:db8:2::1");
        let r = Rule::new(
            FlushMode::Stale,
            &[old, ip("fe80::1")],
            &[new, ip("fe80::1")],
        );
        assert_eq!(r.lost(), [old]);
        let lan6 = "fd00::10";
        let remote6 = "2001:db8:ff::5";
        let f = flow(
            t(lan6, remote6, 51820, 51820),
            t(remote6, "2001:db8:1::1", 51820, 51820),
            SNAT,
        );
        assert_eq!(r.check(&f), Some(Reason::Snat));
        let f = flow(
            t(lan6, remote6, 51820, 51820),
            t(remote6, "2001:db8:2::1", 51820, 51820),
            SNAT,
        );
        assert_eq!(r.check(&f), None);
        // a v4 flow never matches a v6 address
        assert_eq!(r.check(&snat(A)), None);
    }

    #[test]
    fn merge_widens() {
        let mut r = stale();
        r.merge(&Rule::new(FlushMode::AllWan, &[ip(C)], &[]));
        assert_eq!(r.mode(), FlushMode::AllWan);
        assert_eq!(r.lost(), [ip(A), ip(C)]);
        r.forget_lost(&[ip(C)]);
        assert_eq!(r.lost(), [ip(A)]);
        assert_eq!(stale().to_string(), format!("stale flows of {A}"),);
    }
}
