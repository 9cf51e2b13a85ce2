//! Updates are partial: merging them into what is known about a flow.
//!
//! The kernel puts labels, the NAT sequence adjustment, the master tuple
//! and SYN proxy state into an update event only when that attribute
//! changed (protocol info beyond the TCP state, and the mark, likewise);
//! a peer that forwards events as they come (conntrackd with
//! `DisableInternalCache`) sends them the same way. Replacing a flow
//! with such an update would erase what it leaves out, so, as conntrackd
//! does on both sides, an update only overrides what it carries:
//! the sender fills its messages from what it remembers
//! ([`Remembered`]), the receiver merges what it receives into what it
//! has ([`merge_update`]).

use crate::flow::{Flow, HelperName, Labels, ProtoInfo, SeqAdj, Synproxy, TcpInfo, Tuple};

/// The attributes an event carries only when they changed, remembered
/// for one flow between its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Remembered {
    /// Protocol info (only where the sender needs more than the TCP
    /// state its cache keeps; else `ProtoInfo::None`).
    pub protoinfo: ProtoInfo,
    /// Connection labels.
    pub labels: Option<Labels>,
    /// NAT sequence adjustment, original and reply direction.
    pub seq_adj: [Option<SeqAdj>; 2],
    /// Master tuple of a related flow.
    pub master: Option<Tuple>,
    /// SYN proxy state.
    pub synproxy: Option<Synproxy>,
    /// Helper name.
    pub helper: Option<HelperName>,
}

impl Remembered {
    /// What `f` reports of the remembered attributes.
    pub fn of(f: &Flow) -> Remembered {
        Remembered {
            protoinfo: f.protoinfo,
            labels: f.labels,
            seq_adj: f.seq_adj,
            master: f.master,
            synproxy: f.synproxy,
            helper: f.helper,
        }
    }

    /// True when nothing is remembered (most flows: no entry is kept).
    pub fn is_empty(&self) -> bool {
        *self == Remembered::default()
    }

    /// Fills in `f` what it leaves out from what is remembered, and
    /// remembers what it reports.
    pub fn fill(&mut self, f: &mut Flow) {
        self.protoinfo = merge_protoinfo(self.protoinfo, f.protoinfo);
        if self.protoinfo != ProtoInfo::None {
            f.protoinfo = self.protoinfo;
        }
        remember(&mut self.labels, &mut f.labels);
        remember(&mut self.synproxy, &mut f.synproxy);
        // the kernel reports zeros for every entry it can proxy (all that
        // ctnetlink created): nothing to remember, and most flows would
        // otherwise be remembered for it
        if self.synproxy == Some(Synproxy::default()) {
            self.synproxy = None;
        }
        remember(&mut self.seq_adj[0], &mut f.seq_adj[0]);
        remember(&mut self.seq_adj[1], &mut f.seq_adj[1]);
        remember(&mut self.master, &mut f.master);
        remember(&mut self.helper, &mut f.helper);
    }
}

/// One attribute: the new value when there is one (and it is
/// remembered), else the known one.
fn remember<T: Copy>(known: &mut Option<T>, new: &mut Option<T>) {
    match *new {
        Some(v) => *known = Some(v),
        None => *new = *known,
    }
}

/// A received update merged into the known flow: every attribute the
/// update carries overrides, the others keep their known values
/// (conntrackd's `NFCT_CP_META` copy). The tuples are the update's.
pub fn merge_update(known: &Flow, update: &mut Flow) {
    update.status = update.status.or(known.status);
    update.timeout = update.timeout.or(known.timeout);
    update.mark = update.mark.or(known.mark);
    Remembered::of(known).fill(update);
}

/// Protocol info after an event: what the event reports, over what was
/// known (fields the event leaves out keep their old values).
pub fn merge_protoinfo(known: ProtoInfo, ev: ProtoInfo) -> ProtoInfo {
    match (known, ev) {
        (k, ProtoInfo::None) => k,
        (ProtoInfo::Tcp(k), ProtoInfo::Tcp(e)) => ProtoInfo::Tcp(TcpInfo {
            state: e.state.or(k.state),
            wscale: [e.wscale[0].or(k.wscale[0]), e.wscale[1].or(k.wscale[1])],
            flags: [e.flags[0].or(k.flags[0]), e.flags[1].or(k.flags[1])],
        }),
        (
            ProtoInfo::Sctp {
                state: ks,
                vtag: kv,
            },
            ProtoInfo::Sctp { state, vtag },
        ) => ProtoInfo::Sctp {
            state: state.or(ks),
            vtag: [vtag[0].or(kv[0]), vtag[1].or(kv[1])],
        },
        (
            ProtoInfo::Dccp {
                state: ks,
                role: kr,
                handshake_seq: kh,
            },
            ProtoInfo::Dccp {
                state,
                role,
                handshake_seq,
            },
        ) => ProtoInfo::Dccp {
            state: state.or(ks),
            role: role.or(kr),
            handshake_seq: handshake_seq.or(kh),
        },
        (_, e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil;

    /// An FTP data flow with everything an update may leave out.
    fn full() -> Flow {
        let mut f = testutil::tcp4();
        f.labels = Some(Labels {
            words: [1 << 3, 0, 0, 0],
            len: 4,
        });
        f.seq_adj = [
            Some(SeqAdj {
                correction_pos: 7,
                offset_before: 0,
                offset_after: 2,
            }),
            None,
        ];
        f.master = Some(testutil::tcp4().orig);
        f.synproxy = Some(Synproxy {
            isn: 1,
            its: 2,
            tsoff: 3,
        });
        f.helper = Some(HelperName::from_bytes(b"ftp"));
        f
    }

    /// A state change as the kernel reports it: none of those.
    fn state_change() -> Flow {
        let mut f = testutil::tcp4();
        f.mark = None;
        f.protoinfo = ProtoInfo::Tcp(TcpInfo {
            state: Some(5),
            ..TcpInfo::default()
        });
        f.timeout = Some(120);
        f
    }

    #[test]
    fn an_update_keeps_what_it_leaves_out() {
        let known = full();
        let mut u = state_change();
        merge_update(&known, &mut u);
        assert_eq!(u.labels, known.labels);
        assert_eq!(u.seq_adj, known.seq_adj);
        assert_eq!(u.master, known.master);
        assert_eq!(u.synproxy, known.synproxy);
        assert_eq!(u.helper, known.helper);
        assert_eq!(u.mark, known.mark, "no mark in the update: kept");
        assert_eq!(u.timeout, Some(120), "the update's");
        assert_eq!(u.protoinfo.tcp_state(), Some(5), "the update's");
        // what the update carries wins
        let mut u = state_change();
        u.mark = Some(0);
        u.labels = Some(Labels {
            words: [0, 1, 0, 0],
            len: 4,
        });
        u.seq_adj[1] = u.seq_adj[0].or(Some(SeqAdj::default()));
        merge_update(&known, &mut u);
        assert_eq!(u.mark, Some(0));
        assert_eq!(u.labels.unwrap().words, [0, 1, 0, 0]);
        assert_eq!(u.seq_adj[0], known.seq_adj[0]);
        assert_eq!(u.seq_adj[1], Some(SeqAdj::default()));
        // nothing known: nothing changes
        let mut u = state_change();
        merge_update(&Flow::default(), &mut u);
        assert_eq!(u, state_change());
    }

    #[test]
    fn remembered_fills_each_later_event() {
        let mut r = Remembered::default();
        assert!(r.is_empty());
        let mut first = full();
        r.fill(&mut first);
        assert_eq!(first, full(), "a full event is left as it is");
        assert!(!r.is_empty());
        let mut later = state_change();
        r.fill(&mut later);
        assert_eq!(Remembered::of(&later).labels, full().labels);
        assert_eq!(later.seq_adj, full().seq_adj);
        assert_eq!(later.master, full().master);
        assert_eq!(later.synproxy, full().synproxy);
        assert_eq!(later.helper, full().helper);
        assert_eq!(later.protoinfo.tcp_state(), Some(5));
        // a new value is remembered for the events after it
        let mut relabel = state_change();
        relabel.labels = Some(Labels {
            words: [9, 0, 0, 0],
            len: 4,
        });
        r.fill(&mut relabel);
        let mut after = state_change();
        r.fill(&mut after);
        assert_eq!(after.labels, relabel.labels);
        assert_eq!(r.labels, relabel.labels);
    }

    #[test]
    fn zero_synproxy_state_is_not_remembered() {
        let mut r = Remembered::default();
        let mut f = state_change();
        f.synproxy = Some(Synproxy::default());
        r.fill(&mut f);
        assert_eq!(f.synproxy, Some(Synproxy::default()), "sent as reported");
        assert_eq!(r.synproxy, None);
    }

    #[test]
    fn protoinfo_merges_what_events_leave_out() {
        let sctp = ProtoInfo::Sctp {
            state: Some(3),
            vtag: [Some(0x1122), Some(0x3344)],
        };
        // a mark-only update has no protocol info: the known one stays
        assert_eq!(merge_protoinfo(sctp, ProtoInfo::None), sctp);
        // a state change without tags keeps the tags
        let moved = ProtoInfo::Sctp {
            state: Some(4),
            vtag: [None, None],
        };
        assert_eq!(
            merge_protoinfo(sctp, moved),
            ProtoInfo::Sctp {
                state: Some(4),
                vtag: [Some(0x1122), Some(0x3344)],
            }
        );
        let tcp = |state, ws| {
            ProtoInfo::Tcp(TcpInfo {
                state,
                wscale: [ws, ws],
                ..Default::default()
            })
        };
        assert_eq!(
            merge_protoinfo(tcp(Some(3), Some(7)), tcp(Some(5), None)),
            tcp(Some(5), Some(7))
        );
        assert_eq!(merge_protoinfo(ProtoInfo::None, sctp), sctp);
    }
}
