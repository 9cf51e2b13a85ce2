//! The commit and injection policy against a model of ctnetlink: a
//! table that applies create, update, get and delete requests with the
//! kernel's rules (a new entry needs a timeout, an update cannot change
//! NAT, helper, master or the fixed status bits, labels need the labels
//! extension, a related flow needs its master) and answers with the
//! kernel's errnos; failures can be scripted per request.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use super::*;
use crate::flow::{HelperName, Labels, ProtoInfo, SeqAdj, TcpInfo, testutil};
use crate::netlink::attr::Attrs;
use crate::netlink::ct::{TCP_FLAG_BE_LIBERAL, cta, decode_flow, split_nfgenmsg};
use crate::netlink::message::NlMsgs;
use crate::sync::external::FlowKey;

/// A request as the model saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Create,
    Update,
    Get,
    Delete,
    Batch(usize),
}

/// The kernel table, modelled.
#[derive(Default)]
struct Model {
    table: BTreeMap<String, Flow>,
    /// Helpers this "kernel" has.
    helpers: Vec<&'static str>,
    /// Whether labels are in use in the namespace.
    labels: bool,
    /// Errnos the next matching requests get instead of being applied.
    script: VecDeque<(Seen, i32)>,
    /// Batch calls that fail as a whole (after applying half).
    broken_batches: usize,
    /// Batch calls that answer for fewer requests than they were given.
    short_batches: usize,
    /// Every request, in order.
    seen: Vec<Seen>,
}

fn key(f: &Flow) -> String {
    format!("{:?}", FlowKey::of(f))
}

fn io_error() -> Error {
    Error::Io(std::io::Error::from_raw_os_error(libc::ENOBUFS))
}

/// A NAT set-up of a request: address and port to map to.
type NatTo = Option<(IpAddr, Option<u16>)>;

/// (top-level attribute types present, the decoded flow, source and
/// destination NAT set-up).
fn parse(req: &CtRequest) -> (Vec<u16>, Flow, [NatTo; 2]) {
    let mut bytes = Vec::new();
    req.serialize_into(&mut bytes, 0, 1);
    let m = NlMsgs::new(&bytes).next().unwrap().unwrap();
    let (_, _, attrs) = split_nfgenmsg(m.payload).unwrap();
    let mut kinds = Vec::new();
    let mut nat = [None, None];
    for a in Attrs::new(attrs) {
        let a = a.unwrap();
        let kind = a.kind & 0x3fff;
        kinds.push(kind);
        if kind == cta::NAT_SRC || kind == cta::NAT_DST {
            let (mut addr, mut port) = (None, None);
            for n in a.nested() {
                let n = n.unwrap();
                match n.kind & 0x3fff {
                    cta::NAT_V4_MINIP => addr = Some(IpAddr::V4(n.ipv4().unwrap())),
                    cta::NAT_V6_MINIP => addr = Some(IpAddr::V6(n.ipv6().unwrap())),
                    cta::NAT_PROTO => {
                        for p in n.nested() {
                            let p = p.unwrap();
                            if p.kind & 0x3fff == cta::PROTONAT_PORT_MIN {
                                port = Some(p.be16().unwrap());
                            }
                        }
                    }
                    _ => {}
                }
            }
            nat[(kind == cta::NAT_DST) as usize] = addr.map(|a| (a, port));
        }
    }
    (kinds, decode_flow(m.payload).unwrap(), nat)
}

impl Model {
    fn new() -> Model {
        Model {
            helpers: vec!["ftp"],
            labels: true,
            ..Model::default()
        }
    }

    fn scripted(&mut self, what: Seen) -> Option<i32> {
        let at = self.script.iter().position(|(s, _)| *s == what)?;
        self.script.remove(at).map(|(_, e)| e)
    }

    fn apply(&mut self, req: &CtRequest, flags: u16) -> Result<(), i32> {
        let (kinds, f, nat) = parse(req);
        let has = |k: u16| kinds.contains(&k);
        let k = key(&f);
        match req.msg {
            msg::DELETE => {
                self.seen.push(Seen::Delete);
                if let Some(e) = self.scripted(Seen::Delete) {
                    return Err(e);
                }
                self.table.remove(&k).map(|_| ()).ok_or(libc::ENOENT)
            }
            msg::NEW if !self.table.contains_key(&k) && flags & NLM_F_CREATE == 0 => {
                self.seen.push(Seen::Update);
                Err(libc::ENOENT)
            }
            msg::NEW if !self.table.contains_key(&k) => {
                self.seen.push(Seen::Create);
                if let Some(e) = self.scripted(Seen::Create) {
                    return Err(e);
                }
                if !has(cta::TIMEOUT) {
                    return Err(libc::EINVAL);
                }
                if let Some(m) = &f.master {
                    let mk = key(&Flow {
                        orig: *m,
                        zone: f.zone,
                        ..Flow::default()
                    });
                    if !self.table.contains_key(&mk) {
                        return Err(libc::ENOENT);
                    }
                }
                if let Some(h) = &f.helper
                    && !self.helpers.iter().any(|n| n.as_bytes() == h.as_bytes())
                {
                    return Err(libc::EOPNOTSUPP);
                }
                if has(cta::LABELS) && !self.labels {
                    return Err(libc::ENOSPC);
                }
                let mut e = f.clone();
                for (i, n) in nat.iter().enumerate() {
                    if let Some((a, p)) = n {
                        if i == 0 {
                            e.reply.dst = *a;
                            e.reply.dport = p.unwrap_or(e.reply.dport);
                        } else {
                            e.reply.src = *a;
                            e.reply.sport = p.unwrap_or(e.reply.sport);
                        }
                    }
                }
                let mut s = f.status.unwrap_or(0) | status::CONFIRMED;
                if f.master.is_some() {
                    s |= status::EXPECTED;
                }
                e.status = Some(s);
                self.table.insert(k, e);
                Ok(())
            }
            msg::NEW if flags & NLM_F_EXCL != 0 => {
                self.seen.push(Seen::Create);
                Err(libc::EEXIST)
            }
            msg::NEW => {
                self.seen.push(Seen::Update);
                if let Some(e) = self.scripted(Seen::Update) {
                    return Err(e);
                }
                if has(cta::NAT_SRC) || has(cta::NAT_DST) || has(cta::TUPLE_MASTER) {
                    return Err(libc::EOPNOTSUPP);
                }
                let labels = self.labels;
                let old = self.table.get_mut(&k).unwrap();
                if has(cta::HELP) && old.helper != f.helper {
                    return Err(libc::EBUSY);
                }
                if let Some(s) = f.status {
                    let was = old.status.unwrap_or(0);
                    let d = was ^ s;
                    // the kernel's own rules, not the code's constants
                    let fixed = status::EXPECTED | status::CONFIRMED | status::DYING;
                    let sticky = status::SEEN_REPLY | status::ASSURED;
                    if d & fixed != 0 || d & was & sticky != 0 {
                        return Err(libc::EBUSY);
                    }
                    old.status = Some(s);
                }
                if has(cta::LABELS) && !labels {
                    return Err(libc::ENOSPC);
                }
                old.timeout = f.timeout.or(old.timeout);
                old.mark = f.mark.or(old.mark);
                old.labels = f.labels.or(old.labels);
                old.synproxy = f.synproxy.or(old.synproxy);
                for d in 0..2 {
                    old.seq_adj[d] = f.seq_adj[d].or(old.seq_adj[d]);
                }
                old.protoinfo = crate::sync::merge::merge_protoinfo(old.protoinfo, f.protoinfo);
                Ok(())
            }
            _ => panic!("unexpected request {}", req.msg),
        }
    }
}

impl CtKernel for Model {
    fn request(&mut self, req: &CtRequest, flags: u16) -> Result<(), Error> {
        self.apply(req, flags).map_err(Error::Kernel)
    }

    fn batch(&mut self, reqs: &[CtRequest], flags: u16) -> Result<Vec<BatchResult>, Error> {
        self.seen.push(Seen::Batch(reqs.len()));
        if self.broken_batches > 0 {
            self.broken_batches -= 1;
            for r in &reqs[..reqs.len() / 2] {
                let _ = self.apply(r, flags);
            }
            return Err(io_error());
        }
        let mut results: Vec<_> = reqs.iter().map(|r| self.apply(r, flags)).collect();
        if self.short_batches > 0 {
            self.short_batches -= 1;
            results.pop();
        }
        Ok(results)
    }

    fn get(&mut self, req: &CtRequest) -> Result<Option<Flow>, Error> {
        self.seen.push(Seen::Get);
        if let Some(e) = self.scripted(Seen::Get) {
            return Err(Error::Kernel(e));
        }
        let (_, f, _) = parse(req);
        Ok(self.table.get(&key(&f)).cloned())
    }

    fn dump(&mut self, each: &mut dyn FnMut(&Flow) -> Result<(), Error>) -> Result<(), Error> {
        for f in self.table.values() {
            each(f)?;
        }
        Ok(())
    }
}

/// A synced TCP flow as the sync delivers it: SNATed, no counters, no id.
fn synced(port: u16) -> Flow {
    let mut f = testutil::tcp4();
    f.orig.sport = port;
    f.reply.dport = 6000 + port;
    f.reply.dst = "100.64.0.5".parse().unwrap();
    f.status = Some(f.status.unwrap() | status::SRC_NAT | status::SRC_NAT_DONE);
    f.timeout = Some(300);
    f.use_count = None;
    f.id = None;
    f
}

fn injector(m: Model) -> Injector<Model> {
    let i = Injector::with_kernel(m, 7, CommitOpts::default());
    assert_eq!(i.portid(), 7);
    i
}

fn entry<'a>(i: &'a Injector<Model>, f: &Flow) -> Option<&'a Flow> {
    i.kernel.table.get(&key(f))
}

#[test]
fn new_creates_the_entry_with_the_synced_timeout_nat_and_be_liberal() {
    let mut i = injector(Model::new());
    let f = synced(1);
    assert_eq!(i.apply(EventKind::New, &f).unwrap(), Outcome::Created);
    let e = entry(&i, &f).expect("created");
    assert_eq!(e.timeout, Some(300));
    assert_eq!(e.reply, f.reply, "NAT set up");
    assert_eq!(e.mark, Some(5));
    let ProtoInfo::Tcp(t) = e.protoinfo else {
        panic!("{:?}", e.protoinfo)
    };
    assert_eq!(t.state, Some(3));
    assert_eq!(
        t.flags,
        [Some((TCP_FLAG_BE_LIBERAL, TCP_FLAG_BE_LIBERAL)); 2]
    );
    assert_eq!(i.kernel.seen, [Seen::Create]);
    assert_eq!(i.stats().add_ok, 1);
}

#[test]
fn new_without_a_synced_timeout_gets_the_fallback_or_commit_timeout() {
    let mut f = synced(1);
    f.timeout = None;
    let mut i = injector(Model::new());
    i.apply(EventKind::New, &f).unwrap();
    assert_eq!(entry(&i, &f).unwrap().timeout, Some(FALLBACK_TIMEOUT));
    let mut i = Injector::with_kernel(
        Model::new(),
        7,
        CommitOpts {
            commit_timeout: Some(180),
            ..CommitOpts::default()
        },
    );
    i.apply(EventKind::New, &f).unwrap();
    assert_eq!(entry(&i, &f).unwrap().timeout, Some(180));
}

#[test]
fn tcp_flow_without_a_state_is_created_be_liberal() {
    let mut f = synced(1);
    f.protoinfo = ProtoInfo::None;
    let mut i = injector(Model::new());
    i.apply(EventKind::New, &f).unwrap();
    let ProtoInfo::Tcp(t) = entry(&i, &f).unwrap().protoinfo else {
        panic!()
    };
    assert_eq!(t.state, None);
    assert_eq!(
        t.flags,
        [Some((TCP_FLAG_BE_LIBERAL, TCP_FLAG_BE_LIBERAL)); 2]
    );
    // window tracking kept: no flags, no protocol info at all
    let mut i = Injector::with_kernel(
        Model::new(),
        7,
        CommitOpts {
            tcp_window_tracking: true,
            ..CommitOpts::default()
        },
    );
    i.apply(EventKind::New, &f).unwrap();
    assert_eq!(entry(&i, &f).unwrap().protoinfo, ProtoInfo::None);
}

#[test]
fn new_of_an_existing_connection_updates_it_in_place() {
    let mut i = injector(Model::new());
    let f = synced(1);
    i.apply(EventKind::New, &f).unwrap();
    // what the kernel knows and the sync does not carry
    i.kernel.table.get_mut(&key(&f)).unwrap().counters[0] = Some(Default::default());
    let mut again = f.clone();
    again.mark = Some(9);
    again.timeout = Some(200);
    i.kernel.seen.clear();
    assert_eq!(i.apply(EventKind::New, &again).unwrap(), Outcome::Updated);
    assert_eq!(i.kernel.seen, [Seen::Create, Seen::Get, Seen::Update]);
    let e = entry(&i, &f).unwrap();
    assert_eq!((e.mark, e.timeout), (Some(9), Some(200)));
    assert!(e.counters[0].is_some(), "the entry was not recreated");
    assert_eq!(i.stats().add_ok, 2);
}

#[test]
fn new_of_another_connection_replaces_it_and_puts_it_back_on_failure() {
    let mut i = injector(Model::new());
    let f = synced(1);
    // the standby's own entry for the same original tuple, other NAT
    let mut own = f.clone();
    own.reply.dport = 9999;
    i.apply(EventKind::New, &own).unwrap();
    i.kernel.seen.clear();
    assert_eq!(i.apply(EventKind::New, &f).unwrap(), Outcome::Replaced);
    assert_eq!(
        i.kernel.seen,
        [Seen::Create, Seen::Get, Seen::Delete, Seen::Create]
    );
    assert_eq!(entry(&i, &f).unwrap().reply, f.reply);
    // the replacement cannot be created: the old entry comes back
    let mut other = f.clone();
    other.reply.dport = 7777;
    i.kernel.script.push_back((Seen::Create, libc::EINVAL));
    let e = i.apply(EventKind::New, &other).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL));
    let back = entry(&i, &f).expect("the old entry is back");
    assert_eq!(back.reply, f.reply);
    assert_eq!(back.timeout, Some(300));
    assert_eq!(i.stats().add_fail, 1);
}

#[test]
fn update_refreshes_the_timeout_and_merges_into_the_entry() {
    let mut i = injector(Model::new());
    let mut f = synced(1);
    f.helper = Some(HelperName::from_bytes(b"ftp"));
    f.labels = Some(Labels {
        words: [1 << 3, 0, 0, 0],
        len: 4,
    });
    f.seq_adj = [Some(SeqAdj {
        correction_pos: 100,
        offset_before: 0,
        offset_after: 2,
    }); 2];
    i.apply(EventKind::New, &f).unwrap();
    // a state change: no labels, no sequence adjustment, a new timeout
    let mut upd = synced(1);
    upd.helper = f.helper;
    upd.timeout = Some(120);
    upd.protoinfo = ProtoInfo::Tcp(TcpInfo {
        state: Some(7),
        ..TcpInfo::default()
    });
    i.kernel.seen.clear();
    assert_eq!(i.apply(EventKind::Update, &upd).unwrap(), Outcome::Updated);
    assert_eq!(i.kernel.seen, [Seen::Update], "in place, nothing deleted");
    let e = entry(&i, &f).unwrap();
    assert_eq!(e.timeout, Some(120), "timeout refreshed");
    assert_eq!(e.protoinfo.tcp_state(), Some(7));
    assert_eq!((e.labels, e.seq_adj), (f.labels, f.seq_adj), "kept");
    // what an update carries reaches the kernel
    let mut upd2 = upd.clone();
    upd2.labels = Some(Labels {
        words: [1 << 5, 0, 0, 0],
        len: 4,
    });
    upd2.seq_adj[1] = Some(SeqAdj {
        correction_pos: 200,
        offset_before: 2,
        offset_after: 5,
    });
    i.apply(EventKind::Update, &upd2).unwrap();
    let e = entry(&i, &f).unwrap();
    assert_eq!(e.labels, upd2.labels);
    assert_eq!(e.seq_adj[1], upd2.seq_adj[1]);
    assert_eq!(i.stats().upd_ok, 2);
}

#[test]
fn update_of_a_missing_entry_creates_it() {
    let mut i = injector(Model::new());
    let mut f = synced(1);
    assert_eq!(i.apply(EventKind::Update, &f).unwrap(), Outcome::Created);
    assert_eq!(i.kernel.seen, [Seen::Update, Seen::Create]);
    assert_eq!(entry(&i, &f).unwrap().timeout, Some(300));
    // without a synced timeout the created entry still gets one
    f.orig.sport = 2;
    f.timeout = None;
    i.apply(EventKind::Update, &f).unwrap();
    assert_eq!(entry(&i, &f).unwrap().timeout, Some(FALLBACK_TIMEOUT));
    assert_eq!(i.stats().upd_ok, 2);
}

#[test]
fn the_same_connection_is_told_by_its_reply_tuple_and_master() {
    let f = synced(1);
    let mut old = f.clone();
    assert!(same_connection(&old, &f));
    old.reply.dport += 1;
    assert!(!same_connection(&old, &f), "another NAT port");
    old = f.clone();
    old.reply.dst = "100.64.0.6".parse().unwrap();
    assert!(!same_connection(&old, &f), "another NAT address");
    old = f.clone();
    old.reply.src = "10.0.0.3".parse().unwrap();
    assert!(!same_connection(&old, &f));
    old = f.clone();
    old.reply.sport += 1;
    assert!(!same_connection(&old, &f));
    // a related flow: the same master too
    let mut rel = f.clone();
    rel.master = Some(synced(9).orig);
    let mut old = rel.clone();
    assert!(same_connection(&old, &rel));
    old.master = Some(synced(8).orig);
    assert!(!same_connection(&old, &rel));
    old.master = None;
    assert!(!same_connection(&old, &rel));
    // keys and ids that do not travel are not compared
    let mut gre = f.clone();
    gre.orig.proto = crate::flow::proto::GRE;
    gre.reply.proto = crate::flow::proto::GRE;
    let mut old = gre.clone();
    gre.reply.sport = 0;
    gre.reply.dport = 0;
    assert!(same_connection(&old, &gre));
    old.reply.src = "10.0.0.3".parse().unwrap();
    assert!(!same_connection(&old, &gre));
}

#[test]
fn reconcile_takes_the_bits_the_kernel_will_not_change_from_the_entry() {
    let mut f = synced(1);
    // a dying entry's last update, without EXPECTED and ASSURED
    f.status = Some(status::SEEN_REPLY | status::DYING | status::SRC_NAT_DONE);
    let mut old = f.clone();
    old.status = Some(status::EXPECTED | status::CONFIRMED | status::ASSURED);
    reconcile(&mut f, &old);
    assert_eq!(
        f.status,
        Some(
            status::SEEN_REPLY
                | status::SRC_NAT_DONE
                | status::EXPECTED
                | status::CONFIRMED
                | status::ASSURED
        )
    );
    // no status synced: the entry's
    f.status = None;
    reconcile(&mut f, &old);
    assert_eq!(f.status, old.status);
    // no status known at all: a tabled entry is CONFIRMED
    f.status = None;
    old.status = None;
    reconcile(&mut f, &old);
    assert_eq!(f.status, Some(status::CONFIRMED));
}

#[test]
fn new_of_an_existing_related_flow_updates_it() {
    let mut i = injector(Model::new());
    let master = synced(1);
    i.apply(EventKind::New, &master).unwrap();
    let mut data = synced(2);
    data.master = Some(master.orig);
    i.apply(EventKind::New, &data).unwrap();
    let mut again = data.clone();
    again.mark = Some(3);
    assert_eq!(i.apply(EventKind::New, &again).unwrap(), Outcome::Updated);
    assert_eq!(entry(&i, &data).unwrap().mark, Some(3));
    // an entry going away: its DYING bit is not the kernel's to take
    let mut dying = again.clone();
    dying.status = Some(dying.status.unwrap() | status::DYING);
    assert_eq!(
        i.apply(EventKind::Update, &dying).unwrap(),
        Outcome::Updated
    );
    assert_eq!(entry(&i, &data).unwrap().status.unwrap() & status::DYING, 0);
}

#[test]
fn refused_update_keeps_the_entry() {
    let mut i = injector(Model::new());
    let f = synced(1);
    i.apply(EventKind::New, &f).unwrap();
    for e in [libc::EINVAL, libc::ENOMEM, libc::EPERM] {
        i.kernel.script.push_back((Seen::Update, e));
        let mut upd = f.clone();
        upd.mark = Some(1);
        assert_eq!(
            i.apply(EventKind::Update, &upd).unwrap_err().errno(),
            Some(e)
        );
        assert!(entry(&i, &f).is_some(), "{e}: the entry was deleted");
    }
    assert!(!i.kernel.seen.contains(&Seen::Delete));
    assert_eq!(i.stats().upd_fail, 3);
}

#[test]
fn update_refused_for_fixed_status_bits_is_sent_with_the_kernels() {
    let mut i = injector(Model::new());
    let master = synced(1);
    i.apply(EventKind::New, &master).unwrap();
    let mut data = synced(2);
    data.master = Some(master.orig);
    data.status = Some(data.status.unwrap() | status::EXPECTED);
    i.apply(EventKind::New, &data).unwrap();
    // an update that lost EXPECTED (and ASSURED) on the way
    let mut upd = data.clone();
    upd.master = None;
    upd.status = Some(status::SEEN_REPLY | status::CONFIRMED);
    upd.mark = Some(77);
    i.kernel.seen.clear();
    assert_eq!(i.apply(EventKind::Update, &upd).unwrap(), Outcome::Updated);
    assert_eq!(i.kernel.seen, [Seen::Update, Seen::Get, Seen::Update]);
    let e = entry(&i, &data).unwrap();
    assert_eq!(e.mark, Some(77));
    assert_eq!(e.master, Some(master.orig));
    let s = e.status.unwrap();
    assert!(
        s & status::EXPECTED != 0 && s & status::ASSURED != 0,
        "{s:#x}"
    );
}

#[test]
fn create_retries_on_eagain_and_goes_without_what_this_kernel_lacks() {
    let mut m = Model::new();
    m.helpers.clear();
    m.labels = false;
    let mut i = injector(m);
    // EAGAIN: the kernel loaded a helper module, try again
    i.kernel.script.push_back((Seen::Create, libc::EAGAIN));
    i.kernel.script.push_back((Seen::Create, libc::EAGAIN));
    let f = synced(1);
    assert_eq!(i.apply(EventKind::New, &f).unwrap(), Outcome::Created);
    assert_eq!(i.kernel.seen, [Seen::Create; 3]);
    // EAGAIN for ever: bounded
    for _ in 0..10 {
        i.kernel.script.push_back((Seen::Create, libc::EAGAIN));
    }
    let g = synced(2);
    assert_eq!(
        i.apply(EventKind::New, &g).unwrap_err().errno(),
        Some(libc::EAGAIN)
    );
    i.kernel.script.clear();
    // no such helper (EOPNOTSUPP), labels not in use (ENOSPC), no master
    // (ENOENT): the flow goes in without each
    let mut h = synced(3);
    h.helper = Some(HelperName::from_bytes(b"sip"));
    h.labels = Some(Labels {
        words: [1, 0, 0, 0],
        len: 4,
    });
    h.master = Some(synced(99).orig);
    assert_eq!(i.apply(EventKind::New, &h).unwrap(), Outcome::Created);
    let e = entry(&i, &h).unwrap();
    assert_eq!((e.helper, e.labels, e.master), (None, None, None));
    assert_eq!(e.reply, h.reply);
}

#[test]
fn each_fallback_is_tried_once() {
    // EAGAIN: so many more tries, no more
    let mut i = injector(Model::new());
    for _ in 0..=EAGAIN_RETRIES {
        i.kernel.script.push_back((Seen::Create, libc::EAGAIN));
    }
    i.kernel.script.push_back((Seen::Create, libc::EAGAIN));
    let e = i.apply(EventKind::New, &synced(1)).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EAGAIN));
    assert_eq!(i.kernel.seen, vec![Seen::Create; EAGAIN_RETRIES + 1]);
    i.kernel.script.clear();
    // refusals with nothing to leave out: one request each
    for err in [libc::EOPNOTSUPP, libc::ENOENT, libc::ENOSPC, libc::EINVAL] {
        i.kernel.seen.clear();
        i.kernel.script.push_back((Seen::Create, err));
        i.kernel.script.push_back((Seen::Create, err));
        let e = i.apply(EventKind::New, &synced(2)).unwrap_err();
        assert_eq!(e.errno(), Some(err));
        assert_eq!(i.kernel.seen, [Seen::Create], "{err}");
        i.kernel.script.clear();
    }
    // an update refused for a status bit even after the entry's bits
    // were taken: no second reconciliation
    let f = synced(3);
    i.apply(EventKind::New, &f).unwrap();
    i.kernel.seen.clear();
    for _ in 0..3 {
        i.kernel.script.push_back((Seen::Update, libc::EBUSY));
    }
    let e = i.apply(EventKind::Update, &f).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EBUSY));
    assert_eq!(i.kernel.seen, [Seen::Update, Seen::Get, Seen::Update]);
    i.kernel.script.clear();
    // the replacement of another connection meets EEXIST: no second
    // replacement, the old entry goes back
    let mut other = f.clone();
    other.reply.dport = 1;
    i.kernel.seen.clear();
    i.kernel.script.push_back((Seen::Create, libc::EEXIST));
    let e = i.apply(EventKind::New, &other).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EEXIST));
    assert_eq!(
        i.kernel.seen,
        [
            Seen::Create,
            Seen::Get,
            Seen::Delete,
            Seen::Create,
            Seen::Create
        ]
    );
    assert_eq!(entry(&i, &f).unwrap().reply, f.reply, "put back");
}

#[test]
fn a_kernel_that_keeps_changing_its_answer_is_tried_a_bounded_number_of_times() {
    let mut i = injector(Model::new());
    let f = synced(1);
    i.apply(EventKind::New, &f).unwrap();
    i.kernel.seen.clear();
    // the entry is gone for every update, there for every create
    for _ in 0..20 {
        i.kernel.script.push_back((Seen::Update, libc::ENOENT));
        i.kernel.script.push_back((Seen::Create, libc::EEXIST));
    }
    let e = i.apply(EventKind::Update, &f).unwrap_err();
    assert!(
        matches!(e.errno(), Some(libc::ENOENT | libc::EEXIST)),
        "{e}"
    );
    let sent = i
        .kernel
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Create | Seen::Update))
        .count();
    assert_eq!(sent, MAX_ATTEMPTS, "{:?}", i.kernel.seen);
}

#[test]
fn destroy_deletes_and_a_missing_entry_is_no_failure() {
    let mut i = injector(Model::new());
    let f = synced(1);
    i.apply(EventKind::New, &f).unwrap();
    assert_eq!(i.apply(EventKind::Destroy, &f).unwrap(), Outcome::Deleted);
    assert!(entry(&i, &f).is_none());
    assert_eq!(i.apply(EventKind::Destroy, &f).unwrap(), Outcome::Absent);
    i.kernel.script.push_back((Seen::Delete, libc::EPERM));
    i.apply(EventKind::New, &f).unwrap();
    assert!(i.apply(EventKind::Destroy, &f).is_err());
    let s = i.stats();
    assert_eq!((s.del_ok, s.del_fail), (1, 1));
}

#[test]
fn commit_reports_every_flow_and_survives_a_broken_batch() {
    let mut m = Model::new();
    m.broken_batches = 1;
    let masters: Vec<(Flow, u32)> = (1..=6).map(|p| (synced(p), 100 + p as u32)).collect();
    let mut related = synced(50);
    related.master = Some(masters[0].0.orig);
    // one entry exists already (same connection), one cannot be created
    m.apply(
        &create_request(
            &masters[1].0,
            &NewOpts {
                timeout: Some(5),
                ..NewOpts::default()
            },
        ),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .unwrap();
    let mut bad = synced(60);
    bad.helper = Some(HelperName::from_bytes(b"ftp"));
    m.seen.clear();
    let mut flows = vec![(related.clone(), 30)];
    flows.extend(masters.clone());
    let r = commit_flows(&mut m, flows, &CommitOpts::default());
    assert_eq!(r.ok, 7, "{r:?}");
    assert_eq!(r.failed.len(), 0, "{r:?}");
    for (f, t) in &masters {
        assert_eq!(m.table.get(&key(f)).unwrap().timeout, Some(*t));
    }
    // the related flow went in after its master
    let e = m.table.get(&key(&related)).unwrap();
    assert_eq!(e.master, Some(masters[0].0.orig));
    // the broken batch was sent again request by request
    assert_eq!(m.seen[0], Seen::Batch(6));
    assert!(m.seen.iter().filter(|s| **s == Seen::Create).count() >= 6);
    // a refused create is reported with its errno, the others go on
    m.script.push_back((Seen::Create, libc::EINVAL));
    let r = commit_flows(
        &mut m,
        vec![(bad.clone(), 10), (synced(61), 10)],
        &CommitOpts::default(),
    );
    assert_eq!(r.ok, 1);
    assert_eq!(r.failed, vec![(bad, libc::EINVAL)]);
    let lines = r.log_lines();
    assert_eq!(lines[0], "Committed 1 new entries");
    assert_eq!(lines[1], "1 entries can't be committed");
}

#[test]
fn a_batch_answering_for_fewer_requests_is_sent_again_one_by_one() {
    let mut m = Model::new();
    m.short_batches = 1;
    let flows: Vec<(Flow, u32)> = (1..=4).map(|p| (synced(p), 100)).collect();
    let r = commit_flows(&mut m, flows, &CommitOpts::default());
    // the batch created all four but answered for three: sent again,
    // they exist: updated in place
    assert_eq!((r.ok, r.updated, r.failed.len()), (4, 4, 0), "{r:?}");
}

#[test]
fn committing_again_updates_in_place() {
    let mut m = Model::new();
    let flows: Vec<(Flow, u32)> = (1..=3).map(|p| (synced(p), 100)).collect();
    let r = commit_flows(&mut m, flows.clone(), &CommitOpts::default());
    assert_eq!((r.ok, r.updated, r.replaced), (3, 0, 0));
    let mut other = flows[2].0.clone();
    other.reply.dport = 1;
    m.apply(&delete_request(&other), 0).unwrap();
    m.apply(
        &create_request(
            &other,
            &NewOpts {
                timeout: Some(5),
                ..NewOpts::default()
            },
        ),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .unwrap();
    let r = commit_flows(&mut m, flows.clone(), &CommitOpts::default());
    assert_eq!((r.ok, r.updated, r.replaced), (3, 2, 1), "{r:?}");
    assert_eq!(m.table.get(&key(&other)).unwrap().reply, flows[2].0.reply);
}

#[test]
fn purge_deletes_what_is_not_kept_and_counts_failures() {
    let mut m = Model::new();
    for p in 1..=5 {
        commit_flows(&mut m, vec![(synced(p), 10)], &CommitOpts::default());
    }
    // a batch that breaks half way: the rest goes one by one
    m.broken_batches = 1;
    let keep = |f: &Flow| f.orig.sport >= 5;
    let r = purge_kernel_table(&mut m, &keep).unwrap();
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(m.table.len(), 1);
    // a refused delete is counted, a missing one is not
    for p in 6..=8 {
        commit_flows(&mut m, vec![(synced(p), 10)], &CommitOpts::default());
    }
    m.script.push_back((Seen::Delete, libc::EPERM));
    let r = purge_kernel_table(&mut m, &|_| false).unwrap();
    assert_eq!((r.deleted, r.failed), (3, 1));
    assert_eq!(m.table.len(), 1);
}

/// An external cache holding `flows` as received.
fn cache_of(flows: &[Flow]) -> ExternalCache {
    use crate::sync::wire::{ct::EncodeOpts, ty};
    let mut c = ExternalCache::new(QuirkOrder::Little, None, 1 << 20);
    for f in flows {
        let mut body = Vec::new();
        ct::encode_attrs(f, &EncodeOpts::default(), &mut body).unwrap();
        c.apply(Instant::now(), ty::CT_NEW, f, &body);
    }
    c
}

#[test]
fn a_snapshot_decodes_every_entry_with_its_commit_timeout() {
    let mut g = synced(2);
    g.timeout = None;
    let cache = cache_of(&[synced(1), g.clone()]);
    let snap = Snapshot::of(&cache, Instant::now() + Duration::from_secs(100));
    assert_eq!((snap.len(), snap.is_empty()), (2, false));
    let mut flows = snap.flows(&CommitOpts::default());
    flows.sort_by_key(|(f, _)| f.orig.sport);
    assert_eq!(flows.len(), 2);
    assert_eq!((flows[0].0.reply, flows[0].1), (synced(1).reply, 200));
    assert_eq!((flows[1].0.orig, flows[1].1), (g.orig, FALLBACK_TIMEOUT));
    let o = CommitOpts {
        commit_timeout: Some(7),
        ..CommitOpts::default()
    };
    assert!(snap.flows(&o).iter().all(|(_, t)| *t == 7));
    let empty = Snapshot::of(&cache_of(&[]), Instant::now());
    assert!(empty.is_empty() && empty.flows(&o).is_empty());
    // -c in one call
    let mut m = Model::new();
    let r = commit_external(&mut m, &cache, Instant::now(), &CommitOpts::default());
    assert_eq!((r.ok, m.table.len()), (2, 2));
}

#[test]
fn worker_commits_and_purges_off_the_calling_thread() {
    let mut w = Worker::spawn(Model::new(), 42).unwrap();
    assert_eq!(w.portid(), 42);
    assert!(!w.busy());
    let cache = cache_of(&[synced(1), synced(2), synced(3)]);
    assert!(w.submit(Job::Commit {
        snapshot: Snapshot::of(&cache, Instant::now()),
        opts: CommitOpts::default(),
    }));
    assert!(w.submit(Job::Purge {
        keep: Box::new(|f: &Flow| f.orig.sport == 1),
    }));
    assert!(w.busy());
    match w.wait() {
        Some(Finished::Commit(r)) => assert_eq!(r.ok, 3),
        x => panic!("{x:?}"),
    }
    match w.wait() {
        Some(Finished::Purge(Ok(r))) => assert_eq!((r.deleted, r.failed), (2, 0)),
        x => panic!("{x:?}"),
    }
    assert!(!w.busy());
    assert!(w.poll().is_none());
    w.stop();
    assert!(!w.submit(Job::Purge {
        keep: Box::new(|_: &Flow| true)
    }));
}

/// The model shared with the test while a [`Worker`] uses it.
#[derive(Clone)]
struct Shared(std::sync::Arc<std::sync::Mutex<Model>>);

impl CtKernel for Shared {
    fn request(&mut self, req: &CtRequest, flags: u16) -> Result<(), Error> {
        self.0.lock().unwrap().request(req, flags)
    }

    fn batch(&mut self, reqs: &[CtRequest], flags: u16) -> Result<Vec<BatchResult>, Error> {
        self.0.lock().unwrap().batch(reqs, flags)
    }

    fn get(&mut self, req: &CtRequest) -> Result<Option<Flow>, Error> {
        self.0.lock().unwrap().get(req)
    }

    fn dump(&mut self, each: &mut dyn FnMut(&Flow) -> Result<(), Error>) -> Result<(), Error> {
        self.0.lock().unwrap().dump(each)
    }
}

#[test]
fn a_finished_job_is_polled_and_a_dropped_worker_finishes_its_jobs() {
    let model = Shared(std::sync::Arc::new(std::sync::Mutex::new(Model::new())));
    let mut w = Worker::spawn(model.clone(), 1).unwrap();
    let cache = cache_of(&[synced(1)]);
    w.submit(Job::Commit {
        snapshot: Snapshot::of(&cache, Instant::now()),
        opts: CommitOpts::default(),
    });
    let end = Instant::now() + Duration::from_secs(10);
    let mut done = None;
    while done.is_none() && Instant::now() < end {
        done = w.poll();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        matches!(&done, Some(Finished::Commit(r)) if r.ok == 1),
        "{done:?}"
    );
    assert!(!w.busy());
    // dropped with a large commit queued: the drop waits for it
    let many: Vec<Flow> = (100..2100).map(synced).collect();
    let cache = cache_of(&many);
    w.submit(Job::Commit {
        snapshot: Snapshot::of(&cache, Instant::now()),
        opts: CommitOpts::default(),
    });
    drop(w);
    assert_eq!(model.0.lock().unwrap().table.len(), 2001);
}

#[test]
fn purge_timer_schedules_once_and_is_cancelled() {
    let t0 = Instant::now();
    let mut p = PurgeTimer::default();
    assert_eq!(
        p.schedule(t0, 60).as_deref(),
        Some("flushing conntrack table in 60 secs")
    );
    assert_eq!(p.schedule(t0, 60), None);
    assert!(!p.take_due(t0 + Duration::from_secs(59)));
    assert!(p.take_due(t0 + Duration::from_secs(60)));
    assert!(!p.take_due(t0 + Duration::from_secs(61)));
    assert_eq!(p.deadline(), None);
    p.schedule(t0, 1);
    assert_eq!(p.deadline(), Some(t0 + Duration::from_secs(1)));
    p.cancel();
    assert_eq!(p.deadline(), None);
}

#[test]
fn report_lines_are_conntrackds() {
    let r = CommitReport {
        ok: 3,
        failed: vec![(testutil::tcp4(), libc::EINVAL)],
        elapsed: Duration::from_micros(376216),
        ..CommitReport::default()
    };
    assert_eq!(
        r.log_lines(),
        [
            "Committed 3 new entries",
            "1 entries can't be committed",
            "commit has taken 0.376216 seconds"
        ]
    );
    let r = CommitReport {
        ok: 3,
        elapsed: Duration::from_secs(2),
        ..CommitReport::default()
    };
    assert_eq!(
        r.log_lines(),
        [
            "Committed 3 new entries",
            "commit has taken 2.000000 seconds"
        ]
    );
}
