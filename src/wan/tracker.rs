//! The WAN tracker: a sans-I/O state machine fed `(now, input)` (decoded
//! rtnetlink messages, dumps, timer ticks, flush outcomes) that answers
//! with actions ("this interface changed", "flush with this rule now",
//! "dump the links and addresses again").
//!
//! What it tracks, per watched interface: its index, whether it is
//! administratively up, and its addresses. An interface's *usable*
//! addresses are its addresses while it exists and is up (an interface
//! taken down carries no traffic, which is also when the kernel's own
//! masquerade cleanup runs). A change is a change of the usable set;
//! refreshes of an unchanged address (RTM_NEWADDR on DHCP renew, IPv6
//! lifetimes, flag changes such as a promoted secondary) are not.
//!
//! Debounce: a change arms a deadline `Debounce` after the latest change
//! (capped at `max_delay` after the first), so a reconnect's "add B,
//! delete A", or "link down, new address, link up", is one change. When
//! the deadline passes, the lost addresses are every usable address seen
//! since the last flush (the settled set included) that is not usable now:
//! a flap A->B->A within the debounce loses only B, so nothing valid is
//! deleted. `all-wan` and `all` apply only when the settled set really
//! changed; after a flap back they act as `stale`.
//!
//! Link-local, loopback and unspecified addresses are ignored (they are not
//! unique to the WAN). Interfaces are matched by name; a device that
//! appears under (or is renamed to) a watched name asks for a resync, as
//! its addresses may predate the rename.

use std::net::IpAddr;
use std::time::Instant;

use super::config::{FlushMode, WanConfig};
use super::rule::{Rule, is_selectable};
use crate::netlink::route::{AddrMsg, LinkMsg, RtMsg};

/// An input of the tracker.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// One decoded rtnetlink event.
    Rt(&'a RtMsg),
    /// A full dump of links and addresses ([`crate::netlink::route::RtnlWatch::dump`]).
    /// The first one sets the baseline; later ones (after an overrun or a
    /// [`Action::Resync`]) count as changes where they differ.
    Snapshot(&'a [RtMsg]),
    /// Nothing new; lets deadlines fire (call at [`Tracker::next_deadline`]).
    Tick,
    /// The rtnetlink socket overran: events were lost.
    Overrun,
    /// Outcome of the last [`Action::Flush`]: on failure it is retried after
    /// `retry`, merged with whatever changed meanwhile.
    FlushDone {
        /// True when the flush ran (per-flow ENOENT counts as success).
        ok: bool,
    },
}

/// A change of one watched interface, for the log and the stats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The interface name.
    pub interface: String,
    /// Addresses that became usable.
    pub added: Vec<IpAddr>,
    /// Addresses that stopped being usable.
    pub removed: Vec<IpAddr>,
    /// The link went up (`Some(true)`), down or away (`Some(false)`).
    pub link: Option<bool>,
}

/// An order to flush now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlushOrder {
    /// What to delete.
    pub rule: Rule,
    /// The interfaces whose change led here (empty for a retry).
    pub interfaces: Vec<String>,
    /// True when this retries a failed flush.
    pub retry: bool,
}

/// What the tracker asks its owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A watched interface changed (log it, count it).
    Changed(Change),
    /// Delete the flows this order selects, then report with
    /// [`Input::FlushDone`].
    Flush(FlushOrder),
    /// Dump links and addresses and feed them back as [`Input::Snapshot`].
    Resync,
}

/// The state of one watched interface, for status pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceStatus {
    /// Configured name.
    pub name: String,
    /// Current index, when the interface exists.
    pub index: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Its addresses (usable only while up).
    pub addrs: Vec<IpAddr>,
}

#[derive(Clone, Debug)]
struct Iface {
    name: String,
    index: Option<u32>,
    up: bool,
    addrs: Vec<IpAddr>,
    /// Usable addresses at the last settle.
    baseline: Vec<IpAddr>,
    /// Every usable address since the last settle (baseline included).
    seen: Vec<IpAddr>,
    /// Changed since the last settle.
    changed: bool,
    /// Added by a reconfiguration: its first snapshot is its baseline.
    fresh: bool,
}

impl Iface {
    fn new(name: &str, fresh: bool) -> Iface {
        Iface {
            name: name.to_string(),
            index: None,
            up: false,
            addrs: Vec::new(),
            baseline: Vec::new(),
            seen: Vec::new(),
            changed: false,
            fresh,
        }
    }

    fn usable(&self) -> Vec<IpAddr> {
        if self.index.is_some() && self.up {
            self.addrs.clone()
        } else {
            Vec::new()
        }
    }

    fn link_ok(&self) -> bool {
        self.index.is_some() && self.up
    }

    fn settle(&mut self) {
        self.baseline = self.usable();
        self.seen = self.baseline.clone();
        self.changed = false;
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

fn minus(a: &[IpAddr], b: &[IpAddr]) -> Vec<IpAddr> {
    a.iter().filter(|x| !b.contains(x)).copied().collect()
}

/// The WAN tracker (see the module documentation).
#[derive(Clone, Debug)]
pub struct Tracker {
    cfg: WanConfig,
    ifaces: Vec<Iface>,
    synced: bool,
    /// First and latest change of the current burst.
    pending: Option<(Instant, Instant)>,
    /// A failed flush to retry, and when.
    retry: Option<(Instant, Rule)>,
    /// The rule of the flush in flight (for a failure report).
    in_flight: Option<Rule>,
}

impl Tracker {
    /// A tracker for `cfg`; it acts once it got its first
    /// [`Input::Snapshot`].
    pub fn new(cfg: WanConfig) -> Tracker {
        let ifaces = cfg
            .interfaces
            .iter()
            .map(|n| Iface::new(n, false))
            .collect();
        Tracker {
            cfg,
            ifaces,
            synced: false,
            pending: None,
            retry: None,
            in_flight: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &WanConfig {
        &self.cfg
    }

    /// True once the first snapshot set the baseline.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Takes a new configuration (SIGHUP): interfaces that stay keep their
    /// state; new ones get a resync that sets their baseline without a
    /// flush.
    pub fn reconfigure(&mut self, cfg: WanConfig) -> Vec<Action> {
        let mut old = std::mem::take(&mut self.ifaces);
        let mut added = false;
        for name in &cfg.interfaces {
            match old.iter().position(|i| &i.name == name) {
                Some(p) => self.ifaces.push(old.swap_remove(p)),
                None => {
                    self.ifaces.push(Iface::new(name, true));
                    added = true;
                }
            }
        }
        self.cfg = cfg;
        if !self.ifaces.iter().any(|i| i.changed) {
            self.pending = None;
        }
        if added && self.synced {
            vec![Action::Resync]
        } else {
            Vec::new()
        }
    }

    /// When the current burst of changes settles, if there is one.
    fn debounce_deadline(&self) -> Option<Instant> {
        self.pending.map(|(first, last)| {
            (last + self.cfg.debounce).min(first + self.cfg.max_delay.max(self.cfg.debounce))
        })
    }

    /// When [`Input::Tick`] must be fed next, if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        let debounce = self.debounce_deadline();
        let retry = self.retry.as_ref().map(|(t, _)| *t);
        match (debounce, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The watched interfaces as the tracker sees them now.
    pub fn status(&self) -> Vec<IfaceStatus> {
        self.ifaces
            .iter()
            .map(|i| IfaceStatus {
                name: i.name.clone(),
                index: i.index,
                up: i.up,
                addrs: i.addrs.clone(),
            })
            .collect()
    }

    /// Feeds one input at time `now` and returns what to do. Deadlines
    /// that passed fire first, so a late input cannot postpone them.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.fire(now, &mut out);
        match input {
            Input::Rt(m) => self.event(now, m, &mut out),
            Input::Snapshot(msgs) => self.snapshot(now, msgs, &mut out),
            Input::Tick => {}
            Input::Overrun => out.push(Action::Resync),
            Input::FlushDone { ok } => {
                let rule = self.in_flight.take();
                if let (false, Some(rule)) = (ok, rule) {
                    let at = now + self.cfg.retry;
                    match &mut self.retry {
                        Some((_, r)) => r.merge(&rule),
                        None => self.retry = Some((at, rule)),
                    }
                }
            }
        }
        out
    }

    fn event(&mut self, now: Instant, m: &RtMsg, out: &mut Vec<Action>) {
        match m {
            RtMsg::Link(l) => self.link(now, l, out),
            RtMsg::Addr(a) => self.addr(now, a, out),
        }
    }

    fn link(&mut self, now: Instant, l: &LinkMsg, out: &mut Vec<Action>) {
        let mut resync = false;
        for k in 0..self.ifaces.len() {
            let before = self.ifaces[k].usable();
            let was_ok = self.ifaces[k].link_ok();
            let i = &mut self.ifaces[k];
            let ours_by_index = i.index == Some(l.index);
            let named_ours = l.new && l.name.as_deref() == Some(i.name.as_str());
            if ours_by_index && (!l.new || (l.name.is_some() && !named_ours)) {
                // gone, or renamed away from the watched name
                i.index = None;
                i.up = false;
                i.addrs.clear();
            } else if ours_by_index {
                i.up = l.is_up();
            } else if named_ours {
                // a new device under the watched name (PPP reconnect), or
                // a rename into it: its addresses may predate this message
                i.index = Some(l.index);
                i.up = l.is_up();
                i.addrs.clear();
                resync = true;
            } else {
                continue;
            }
            let link = (was_ok != i.link_ok()).then_some(i.link_ok());
            self.note(k, now, before, link, out);
        }
        if resync && self.synced {
            out.push(Action::Resync);
        }
    }

    fn addr(&mut self, now: Instant, a: &AddrMsg, out: &mut Vec<Action>) {
        if !is_selectable(a.addr) {
            return;
        }
        let Some(k) = self.ifaces.iter().position(|i| i.index == Some(a.index)) else {
            return;
        };
        let before = self.ifaces[k].usable();
        let i = &mut self.ifaces[k];
        if a.new {
            if !i.addrs.contains(&a.addr) {
                i.addrs.push(a.addr);
            }
        } else {
            i.addrs.retain(|x| *x != a.addr);
        }
        self.note(k, now, before, None, out);
    }

    fn snapshot(&mut self, now: Instant, msgs: &[RtMsg], out: &mut Vec<Action>) {
        for k in 0..self.ifaces.len() {
            let before = self.ifaces[k].usable();
            let was_ok = self.ifaces[k].link_ok();
            let i = &mut self.ifaces[k];
            let link = msgs.iter().find_map(|m| match m {
                RtMsg::Link(l) if l.new && l.name.as_deref() == Some(i.name.as_str()) => Some(l),
                _ => None,
            });
            i.index = link.map(|l| l.index);
            i.up = link.is_some_and(|l| l.is_up());
            i.addrs.clear();
            if let Some(idx) = i.index {
                for m in msgs {
                    if let RtMsg::Addr(a) = m
                        && a.new
                        && a.index == idx
                        && is_selectable(a.addr)
                        && !i.addrs.contains(&a.addr)
                    {
                        i.addrs.push(a.addr);
                    }
                }
            }
            if !self.synced || i.fresh {
                i.fresh = false;
                i.settle();
                continue;
            }
            let link = (was_ok != i.link_ok()).then_some(i.link_ok());
            self.note(k, now, before, link, out);
        }
        self.synced = true;
    }

    /// Records the change of interface `k` from `before`, if any.
    fn note(
        &mut self,
        k: usize,
        now: Instant,
        before: Vec<IpAddr>,
        link: Option<bool>,
        out: &mut Vec<Action>,
    ) {
        if !self.synced {
            return;
        }
        let i = &mut self.ifaces[k];
        let after = i.usable();
        let changed = !same_set(&before, &after);
        if changed {
            for a in &after {
                if !i.seen.contains(a) {
                    i.seen.push(*a);
                }
            }
            i.changed = true;
            self.pending = Some(match self.pending {
                Some((first, _)) => (first, now),
                None => (now, now),
            });
        }
        if changed || link.is_some() {
            out.push(Action::Changed(Change {
                interface: i.name.clone(),
                added: minus(&after, &before),
                removed: minus(&before, &after),
                link,
            }));
        }
    }

    fn fire(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        let debounce_due = self.debounce_deadline().is_some_and(|d| d <= now);
        let mut old = Vec::new();
        let mut current = Vec::new();
        let mut net_change = false;
        let mut names = Vec::new();
        for i in &self.ifaces {
            old.extend(i.seen.iter().copied());
            let u = i.usable();
            net_change |= !same_set(&u, &i.baseline);
            if i.changed {
                names.push(i.name.clone());
            }
            current.extend(u);
        }
        let mut rule = None;
        if debounce_due {
            let mode = if net_change {
                self.cfg.flush
            } else {
                FlushMode::Stale
            };
            rule = Some(Rule::new(mode, &old, &current));
            for i in &mut self.ifaces {
                i.settle();
            }
            self.pending = None;
        }
        let mut retry = false;
        if let Some((at, r)) = self.retry.take() {
            if debounce_due || at <= now {
                let mut r = r;
                r.forget_lost(&current);
                match &mut rule {
                    Some(rule) => rule.merge(&r),
                    None => {
                        rule = Some(r);
                        retry = true;
                    }
                }
            } else {
                self.retry = Some((at, r));
            }
        }
        if let Some(rule) = rule
            && !rule.is_empty()
        {
            self.in_flight = Some(rule.clone());
            out.push(Action::Flush(FlushOrder {
                rule,
                interfaces: names,
                retry,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::route::iff;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(new: bool, index: u32, up: bool, name: &str) -> RtMsg {
        RtMsg::Link(LinkMsg {
            new,
            index,
            flags: if up { iff::UP | iff::RUNNING } else { 0 },
            name: Some(name.to_string()),
        })
    }

    fn addr(new: bool, index: u32, a: &str) -> RtMsg {
        RtMsg::Addr(AddrMsg {
            new,
            index,
            addr: ip(a),
            peer: None,
            prefix_len: 24,
            flags: 0,
            scope: 0,
            label: None,
        })
    }

    fn cfg(ifaces: &[&str], flush: FlushMode) -> WanConfig {
        WanConfig {
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            flush,
            ..WanConfig::default()
        }
    }

    /// A tracker synced on wan0 (index 2) with `addrs`, plus lan0 (index 1).
    fn synced(flush: FlushMode, addrs: &[&str]) -> (Tracker, Instant) {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(&["wan0"], flush));
        let mut snap = vec![link(true, 1, true, "lan0"), link(true, 2, true, "wan0")];
        snap.push(addr(true, 1, "192.168.1.1"));
        for a in addrs {
            snap.push(addr(true, 2, a));
        }
        snap.push(addr(true, 2, "fe80::1"));
        assert!(t.handle(t0, Input::Snapshot(&snap)).is_empty());
        assert!(t.is_synced());
        assert_eq!(t.next_deadline(), None);
        (t, t0)
    }

    fn feed(t: &mut Tracker, now: Instant, msgs: &[RtMsg]) -> Vec<Action> {
        msgs.iter()
            .flat_map(|m| t.handle(now, Input::Rt(m)))
            .collect()
    }

    fn flushes(actions: &[Action]) -> Vec<&FlushOrder> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Flush(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    /// Ticks at the deadline and returns the one flush order.
    fn settle(t: &mut Tracker) -> Option<FlushOrder> {
        let d = t.next_deadline()?;
        // a tick just before the deadline does nothing
        assert!(t.handle(d - ms(1), Input::Tick).is_empty());
        let out = t.handle(d, Input::Tick);
        assert_eq!(t.next_deadline(), None);
        flushes(&out).first().map(|f| (*f).clone())
    }

    #[test]
    fn reconnect_add_b_delete_a_is_one_debounced_flush() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        let out = feed(&mut t, t0 + ms(10), &[addr(true, 2, "198.51.100.9")]);
        assert_eq!(
            out,
            [Action::Changed(Change {
                interface: "wan0".into(),
                added: vec![ip("198.51.100.9")],
                removed: vec![],
                link: None,
            })]
        );
        assert_eq!(t.next_deadline(), Some(t0 + ms(1010)));
        let out = feed(&mut t, t0 + ms(500), &[addr(false, 2, "198.51.100.7")]);
        assert_eq!(out.len(), 1);
        // the debounce restarts at the latest change
        assert_eq!(t.next_deadline(), Some(t0 + ms(1500)));
        let f = settle(&mut t).unwrap();
        assert_eq!(f.rule.lost(), [ip("198.51.100.7")]);
        assert_eq!(f.rule.mode(), FlushMode::Stale);
        assert_eq!(f.interfaces, ["wan0"]);
        assert!(!f.retry);
    }

    #[test]
    fn gaining_an_address_flushes_nothing_in_stale_mode() {
        let (mut t, t0) = synced(FlushMode::Stale, &[]);
        let out = feed(&mut t, t0, &[addr(true, 2, "198.51.100.7")]);
        assert_eq!(out.len(), 1);
        assert_eq!(settle(&mut t), None);
    }

    #[test]
    fn refresh_of_an_unchanged_address_does_nothing() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        let out = feed(
            &mut t,
            t0,
            &[
                addr(true, 2, "198.51.100.7"),
                link(true, 2, true, "wan0"),
                addr(true, 2, "fe80::1"),
                addr(false, 2, "fe80::1"),
                // another interface's changes are not ours
                addr(false, 1, "192.168.1.1"),
                addr(true, 9, "10.0.0.1"),
            ],
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn flapping_within_the_debounce_deletes_nothing_valid() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        feed(&mut t, t0, &[addr(true, 2, "198.51.100.9")]);
        feed(&mut t, t0 + ms(100), &[addr(false, 2, "198.51.100.7")]);
        feed(&mut t, t0 + ms(300), &[addr(true, 2, "198.51.100.7")]);
        feed(&mut t, t0 + ms(400), &[addr(false, 2, "198.51.100.9")]);
        // only the transient B is lost; A is valid and kept
        let f = settle(&mut t).unwrap();
        assert_eq!(f.rule.lost(), [ip("198.51.100.9")]);
        assert!(f.rule.check(&snat_to("198.51.100.7")).is_none());
        // all-wan after a flap back acts as stale
        let (mut t, t0) = synced(FlushMode::AllWan, &["198.51.100.7"]);
        feed(&mut t, t0, &[addr(false, 2, "198.51.100.7")]);
        feed(&mut t, t0 + ms(100), &[addr(true, 2, "198.51.100.7")]);
        assert_eq!(settle(&mut t), None);
    }

    fn snat_to(a: &str) -> crate::flow::Flow {
        let mut f = crate::flow::Flow {
            has_orig: true,
            has_reply: true,
            ..Default::default()
        };
        f.orig.src = ip("192.168.1.10");
        f.orig.dst = ip("192.0.2.1");
        f.reply.src = ip("192.0.2.1");
        f.reply.dst = ip(a);
        f
    }

    #[test]
    fn ppp_link_down_new_address_link_up() {
        let (mut t, t0) = synced(FlushMode::Stale, &["100.64.0.5"]);
        let out = feed(&mut t, t0, &[link(true, 2, false, "wan0")]);
        assert_eq!(
            out,
            [Action::Changed(Change {
                interface: "wan0".into(),
                added: vec![],
                removed: vec![ip("100.64.0.5")],
                link: Some(false),
            })]
        );
        // while down, address changes are not usable changes
        assert!(
            feed(
                &mut t,
                t0 + ms(200),
                &[addr(false, 2, "100.64.0.5"), addr(true, 2, "100.64.0.9")]
            )
            .is_empty()
        );
        let out = feed(&mut t, t0 + ms(700), &[link(true, 2, true, "wan0")]);
        assert_eq!(out.len(), 1);
        assert_eq!(t.next_deadline(), Some(t0 + ms(1700)));
        let f = settle(&mut t).unwrap();
        assert_eq!(f.rule.lost(), [ip("100.64.0.5")]);
    }

    #[test]
    fn link_down_alone_makes_its_addresses_stale() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        feed(&mut t, t0, &[link(true, 2, false, "wan0")]);
        assert_eq!(settle(&mut t).unwrap().rule.lost(), [ip("198.51.100.7")]);
        // and a bounce within the debounce is nothing
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        feed(&mut t, t0, &[link(true, 2, false, "wan0")]);
        feed(&mut t, t0 + ms(300), &[link(true, 2, true, "wan0")]);
        assert_eq!(settle(&mut t), None);
    }

    #[test]
    fn ppp_device_recreated_under_the_same_name() {
        let (mut t, t0) = synced(FlushMode::Stale, &["100.64.0.5"]);
        let out = feed(
            &mut t,
            t0,
            &[
                addr(false, 2, "100.64.0.5"),
                link(false, 2, false, "wan0"),
                link(true, 7, false, "ppp0"),
            ],
        );
        // the address goes, then the link
        assert_eq!(out.len(), 2, "{out:?}");
        // renamed to the watched name: adopted, with a resync
        let out = feed(&mut t, t0 + ms(100), &[link(true, 7, false, "wan0")]);
        assert_eq!(out, [Action::Resync]);
        let snap = [link(true, 7, false, "wan0")];
        assert!(t.handle(t0 + ms(150), Input::Snapshot(&snap)).is_empty());
        feed(
            &mut t,
            t0 + ms(200),
            &[addr(true, 7, "100.64.0.7"), link(true, 7, true, "wan0")],
        );
        let f = settle(&mut t).unwrap();
        assert_eq!(f.rule.lost(), [ip("100.64.0.5")]);
        assert_eq!(t.status()[0].index, Some(7));
    }

    #[test]
    fn renamed_away_is_gone() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        feed(&mut t, t0, &[link(true, 2, true, "old-wan")]);
        assert_eq!(t.status()[0].index, None);
        assert_eq!(settle(&mut t).unwrap().rule.lost(), [ip("198.51.100.7")]);
    }

    #[test]
    fn promote_secondaries_and_without() {
        // with promotion: NEWADDR B (secondary), DELADDR A, NEWADDR B again
        let (mut t, t0) = synced(FlushMode::Stale, &["10.9.2.1"]);
        feed(
            &mut t,
            t0,
            &[
                addr(true, 2, "10.9.2.3"),
                addr(false, 2, "10.9.2.1"),
                addr(true, 2, "10.9.2.3"),
            ],
        );
        assert_eq!(settle(&mut t).unwrap().rule.lost(), [ip("10.9.2.1")]);
        // without: deleting the primary takes B along; both are lost
        let (mut t, t0) = synced(FlushMode::Stale, &["10.9.2.1"]);
        feed(
            &mut t,
            t0,
            &[
                addr(true, 2, "10.9.2.3"),
                addr(false, 2, "10.9.2.3"),
                addr(false, 2, "10.9.2.1"),
            ],
        );
        let f = settle(&mut t).unwrap();
        assert_eq!(f.rule.lost(), [ip("10.9.2.1"), ip("10.9.2.3")]);
    }

    #[test]
    fn all_wan_covers_every_watched_interface() {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(&["wan1", "wan2"], FlushMode::AllWan));
        let snap = [
            link(true, 3, true, "wan1"),
            link(true, 4, true, "wan2"),
            addr(true, 3, "198.51.100.7"),
            addr(true, 4, "203.0.113.5"),
        ];
        t.handle(t0, Input::Snapshot(&snap));
        // wan1 goes down and comes back later, with the same address
        feed(&mut t, t0, &[link(true, 3, false, "wan1")]);
        let f = settle(&mut t).unwrap();
        assert_eq!(f.rule.mode(), FlushMode::AllWan);
        assert_eq!(f.rule.lost(), [ip("198.51.100.7")]);
        let t1 = t0 + ms(60_000);
        feed(&mut t, t1, &[link(true, 3, true, "wan1")]);
        let f = settle(&mut t).unwrap();
        assert_eq!(f.interfaces, ["wan1"]);
        assert!(f.rule.lost().is_empty());
        // flows through wan2 are included: they move back to wan1
        assert!(f.rule.check(&snat_to("203.0.113.5")).is_some());
        assert!(f.rule.check(&snat_to("198.51.100.7")).is_some());
    }

    #[test]
    fn all_flushes_the_table_on_a_real_change() {
        let (mut t, t0) = synced(FlushMode::All, &["198.51.100.7"]);
        feed(&mut t, t0, &[addr(true, 2, "198.51.100.9")]);
        let f = settle(&mut t).unwrap();
        assert_eq!(f.rule.mode(), FlushMode::All);
    }

    #[test]
    fn ipv6_prefix_change() {
        let (mut t, t0) = synced(FlushMode::Stale, &["10.9.2.1", "fd09:2::1"]);
        feed(
            &mut t,
            t0,
            &[
                addr(true, 2, "fd09:3::1"),
                // deprecation is a refresh, not a loss
                addr(true, 2, "fd09:2::1"),
            ],
        );
        feed(&mut t, t0 + ms(50), &[addr(false, 2, "fd09:2::1")]);
        assert_eq!(settle(&mut t).unwrap().rule.lost(), [ip("fd09:2::1")]);
    }

    #[test]
    fn max_delay_caps_a_change_storm() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        let mut flushed = None;
        for n in 0..40u64 {
            let now = t0 + ms(n * 500);
            let (add, del) = if n % 2 == 0 {
                ("198.51.100.9", "198.51.100.7")
            } else {
                ("198.51.100.7", "198.51.100.9")
            };
            let out = feed(&mut t, now, &[addr(true, 2, add), addr(false, 2, del)]);
            if !flushes(&out).is_empty() {
                flushed = Some(n);
                break;
            }
        }
        // the first change was at 0; the cap is 10 s
        assert_eq!(flushed, Some(20));
    }

    #[test]
    fn failed_flush_is_retried_and_merged() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        feed(&mut t, t0, &[addr(false, 2, "198.51.100.7")]);
        assert!(settle(&mut t).is_some());
        let t1 = t0 + ms(1000);
        assert!(t.handle(t1, Input::FlushDone { ok: false }).is_empty());
        assert_eq!(t.next_deadline(), Some(t1 + ms(5000)));
        let out = t.handle(t1 + ms(5000), Input::Tick);
        let f = flushes(&out)[0];
        assert!(f.retry);
        assert_eq!(f.rule.lost(), [ip("198.51.100.7")]);
        t.handle(t1 + ms(5001), Input::FlushDone { ok: true });
        assert_eq!(t.next_deadline(), None);
        // a retry that finds the address back drops it
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        feed(&mut t, t0, &[addr(false, 2, "198.51.100.7")]);
        settle(&mut t);
        t.handle(t0 + ms(1000), Input::FlushDone { ok: false });
        feed(&mut t, t0 + ms(2000), &[addr(true, 2, "198.51.100.7")]);
        assert_eq!(settle(&mut t), None);
    }

    #[test]
    fn overrun_resync_diffs_against_the_known_state() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        assert_eq!(t.handle(t0, Input::Overrun), [Action::Resync]);
        // the lost events: A replaced by B
        let snap = [link(true, 2, true, "wan0"), addr(true, 2, "198.51.100.9")];
        let out = t.handle(t0 + ms(5), Input::Snapshot(&snap));
        assert_eq!(out.len(), 1);
        assert_eq!(settle(&mut t).unwrap().rule.lost(), [ip("198.51.100.7")]);
    }

    #[test]
    fn events_before_the_first_snapshot_only_set_state() {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(&["wan0"], FlushMode::Stale));
        assert!(feed(&mut t, t0, &[link(true, 2, true, "wan0")]).is_empty());
        assert!(feed(&mut t, t0, &[addr(true, 2, "198.51.100.7")]).is_empty());
        assert_eq!(t.next_deadline(), None);
        assert!(!t.is_synced());
    }

    #[test]
    fn reconfigure_adds_with_a_silent_baseline() {
        let (mut t, t0) = synced(FlushMode::Stale, &["198.51.100.7"]);
        let out = t.reconfigure(cfg(&["wan0", "wan1"], FlushMode::Stale));
        assert_eq!(out, [Action::Resync]);
        let snap = [
            link(true, 2, true, "wan0"),
            link(true, 3, true, "wan1"),
            addr(true, 2, "198.51.100.7"),
            addr(true, 3, "203.0.113.5"),
        ];
        assert!(t.handle(t0, Input::Snapshot(&snap)).is_empty());
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.status()[1].addrs, [ip("203.0.113.5")]);
        // removing an interface forgets it
        assert!(t.reconfigure(cfg(&["wan1"], FlushMode::Stale)).is_empty());
        assert_eq!(t.status().len(), 1);
    }

    /// The tracker fed the real kernel sequences of tests/data/wan.
    #[cfg(target_endian = "little")]
    #[test]
    fn captured_sequences() {
        use crate::netlink::route::parse_datagram;
        let parse = |b: &[u8]| {
            let mut v = Vec::new();
            parse_datagram(b, &mut v);
            v
        };
        let dump = parse(include_bytes!("../../tests/data/wan/dump.bin"));
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(&["wan0", "ppp-x"], FlushMode::Stale));
        t.handle(t0, Input::Snapshot(&dump));
        let st = t.status();
        assert_eq!(st[0].addrs, [ip("10.9.2.1"), ip("fd09:2::1")]);
        assert_eq!(st[1].addrs, [ip("100.64.0.5")]);
        let run = |t: &mut Tracker, file: &[u8], at: Instant| {
            for m in parse(file) {
                t.handle(at, Input::Rt(&m));
            }
            settle(t).map(|f| f.rule.lost().to_vec())
        };
        let promote = include_bytes!("../../tests/data/wan/v4_promote.bin");
        assert_eq!(run(&mut t, promote, t0), Some(vec![ip("10.9.2.1")]));
        let v6 = include_bytes!("../../tests/data/wan/v6_prefix.bin");
        assert_eq!(run(&mut t, v6, t0 + ms(5000)), Some(vec![ip("fd09:2::1")]));
        let ppp = include_bytes!("../../tests/data/wan/ppp_readdress.bin");
        assert_eq!(
            run(&mut t, ppp, t0 + ms(10_000)),
            Some(vec![ip("100.64.0.5")])
        );
        let refresh = include_bytes!("../../tests/data/wan/v4_refresh.bin");
        let mut t2 = Tracker::new(cfg(&["wan0"], FlushMode::Stale));
        t2.handle(t0, Input::Snapshot(&dump));
        for m in parse(refresh) {
            assert!(t2.handle(t0, Input::Rt(&m)).is_empty());
        }
    }
}
