//! The sync parts of `ctrackd -s` in conntrackd's words and layout, so
//! scripts that read `conntrackd -s` keep working: the external cache,
//! the active link's traffic and "message tracking" (plain `-s`),
//! `-s network`, `-s link`, `-s queue` and `-s rsqueue`.

use std::fmt::Write;

use super::commit::InjectStats;
use super::engine::{Engine, LinkView};
use super::external::ExternalCache;
use super::link::tcp::{ErrorQueue, TcpState};

fn traffic(out: &mut String, l: &LinkView) {
    let s = &l.stats;
    let _ = write!(
        out,
        "{:>20} Bytes sent {:>20} Bytes recv\n\
         {:>20} Pckts sent {:>20} Pckts recv\n\
         {:>20} Error send {:>20} Error recv\n\n",
        s.bytes_sent, s.bytes_recv, s.pkts_sent, s.pkts_recv, s.errors_send, s.errors_recv
    );
}

/// `cache external:` block of plain `-s` (conntrackd's `cache_stats`).
pub fn external_cache(out: &mut String, c: &ExternalCache) {
    let s = c.stats();
    let _ = write!(
        out,
        "cache external:\n\
         current active connections:\t{:>12}\n\
         connections created:\t\t{:>12}\tfailed:\t{:>12}\n\
         connections updated:\t\t{:>12}\tfailed:\t{:>12}\n\
         connections destroyed:\t\t{:>12}\tfailed:\t{:>12}\n\n",
        c.len(),
        s.created,
        s.failed,
        s.updated,
        0,
        s.destroyed + s.expired,
        0
    );
}

/// `external inject:` block of plain `-s` with DisableExternalCache.
pub fn external_inject(out: &mut String, s: &InjectStats) {
    let _ = write!(
        out,
        "external inject:\n\
         connections created:\t\t{:>12}\tfailed:\t{:>12}\n\
         connections updated:\t\t{:>12}\tfailed:\t{:>12}\n\
         connections destroyed:\t\t{:>12}\tfailed:\t{:>12}\n\n",
        s.add_ok, s.add_fail, s.upd_ok, s.upd_fail, s.del_ok, s.del_fail
    );
}

/// The active link's traffic and `message tracking:` (end of plain `-s`);
/// `tcp` holds each TCP link's connections (by link index).
pub fn summary(out: &mut String, e: &Engine, tcp: &[Option<TcpState>]) {
    active_traffic(out, e, tcp);
    let n = e.net_stats();
    let _ = write!(
        out,
        "message tracking:\n{:>20} Malformed msgs {:>20} Lost msgs\n\n",
        n.malformed, n.lost
    );
}

fn active_traffic(out: &mut String, e: &Engine, tcp: &[Option<TcpState>]) {
    let Some((i, l)) = e.links().into_iter().enumerate().find(|(_, l)| l.active) else {
        return;
    };
    let _ = write!(out, "{} traffic (active device={})", l.kind, l.name);
    if let Some(t) = tcp.get(i).copied().flatten() {
        // conntrackd's TCP channel says how its two connections are
        let word = |up| if up { "connected" } else { "disconnected" };
        let _ = write!(out, " server={} client={}", word(t.server), word(t.client));
    }
    out.push_str(":\n");
    traffic(out, &l);
}

/// `-s network`.
pub fn network(out: &mut String, e: &Engine, tcp: &[Option<TcpState>]) {
    let n = e.net_stats();
    let _ = write!(
        out,
        "network statistics:\n\
         \trecv:\n\
         \t\tMalformed messages:\t{:>20}\n\
         \t\tWrong protocol version:\t{:>20}\n\
         \t\tMalformed header:\t{:>20}\n\
         \t\tMalformed payload:\t{:>20}\n\
         \t\tBad message type:\t{:>20}\n\
         \t\tTruncated message:\t{:>20}\n\
         \t\tBad message size:\t{:>20}\n\
         \tsend:\n\
         \t\tMalformed messages:\t{:>20}\n\n\
         sequence tracking statistics:\n\
         \trecv:\n\
         \t\tPackets lost:\t\t{:>20}\n\
         \t\tPackets before:\t\t{:>20}\n\n",
        n.malformed,
        n.bad_version,
        n.bad_header,
        n.bad_payload,
        n.bad_type,
        n.truncated,
        n.bad_size,
        n.send_malformed,
        n.lost,
        n.before
    );
    let dropped: u64 = e.links().iter().map(|l| l.stats.dropped).sum();
    let extra = n.auth_missing
        + n.auth_bad_mac
        + n.auth_replay
        + n.auth_reflected
        + n.auth_unverified
        + n.wrong_source
        + dropped;
    if extra > 0 {
        let _ = write!(
            out,
            "ctrack checks:\n\
             \trecv:\n\
             \t\tNot authenticated:\t{:>20}\n\
             \t\tBad MAC:\t\t{:>20}\n\
             \t\tReplayed:\t\t{:>20}\n\
             \t\tReflected:\t\t{:>20}\n\
             \t\tNot verified yet:\t{:>20}\n\
             \t\tWrong source:\t\t{:>20}\n\
             \t\tDropped (busy):\t\t{:>20}\n\n",
            n.auth_missing,
            n.auth_bad_mac,
            n.auth_replay,
            n.auth_reflected,
            n.auth_unverified,
            n.wrong_source,
            dropped
        );
    }
    active_traffic(out, e, tcp);
}

/// `-s link`: every link with its state and role.
pub fn link(out: &mut String, e: &Engine) {
    for l in e.links() {
        let _ = writeln!(
            out,
            "{} traffic device={} status={} role={}:",
            l.kind,
            l.name,
            if l.up { "RUNNING" } else { "DOWN" },
            if l.active { "ACTIVE" } else { "BACKUP" }
        );
        traffic(out, &l);
    }
}

/// `-s queue`, in conntrackd's order: txqueue, errorq (what TCP links
/// hold while they cannot send; conntrackd lists it for every link kind),
/// rsqueue (FTFW).
pub fn queue(out: &mut String, e: &Engine, errorq: ErrorQueue) {
    let q = e.queue_stats();
    let _ = write!(
        out,
        "allocated queue nodes:\t\t{:>12}\n\n\
         queue txqueue:\n\
         current elements:\t\t{:>12}\n\
         maximum elements:\t\t{:>12}\n\
         not enough space errors:\t{:>12}\n\n\
         queue errorq:\n\
         current elements:\t\t{:>12}\n\
         maximum elements:\t\t{:>12}\n\
         not enough space errors:\t{:>12}\n\n",
        q.tx_len + q.rs_len + errorq.len,
        q.tx_len,
        i32::MAX,
        0,
        errorq.len,
        errorq.max,
        errorq.dropped
    );
    if e.mode() == super::config::ModeKind::Ftfw {
        let _ = write!(
            out,
            "queue rsqueue:\n\
             current elements:\t\t{:>12}\n\
             maximum elements:\t\t{:>12}\n\
             not enough space errors:\t{:>12}\n\n",
            q.rs_len, q.rs_max, q.rs_dropped
        );
    }
}

/// `-s rsqueue` (FTFW only: in the other modes conntrackd answers with
/// nothing).
pub fn rsqueue(out: &mut String, e: &Engine) {
    if e.mode() == super::config::ModeKind::Ftfw {
        out.push_str(&e.rsqueue_text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::config::{LinkConfig, SyncConfig};
    use crate::sync::engine::Start;
    use std::time::Instant;

    #[test]
    fn layouts_match_conntrackd() {
        let cfg = SyncConfig {
            links: vec![LinkConfig::udp(
                None,
                "10.0.0.2".parse().unwrap(),
                3780,
                "va",
            )],
            ..SyncConfig::default()
        };
        let t0 = Instant::now();
        let mut e = Engine::new(
            &cfg,
            Start {
                now: t0,
                seq: 1,
                mtus: vec![1500],
                auth_key: None,
                auth_seed: 0,
                seed: 1,
            },
        );
        e.on_timeout(t0 + std::time::Duration::from_secs(1));
        e.transmit(t0);
        let mut s = String::new();
        summary(&mut s, &e, &[]);
        assert_eq!(
            s,
            "UDP traffic (active device=va):\n\
             \x20                  8 Bytes sent                    0 Bytes recv\n\
             \x20                  1 Pckts sent                    0 Pckts recv\n\
             \x20                  0 Error send                    0 Error recv\n\n\
             message tracking:\n\
             \x20                  0 Malformed msgs                    0 Lost msgs\n\n"
        );
        let mut s = String::new();
        link(&mut s, &e);
        assert!(s.starts_with("UDP traffic device=va status=RUNNING role=ACTIVE:\n"));
        let mut s = String::new();
        let errorq = ErrorQueue {
            len: 2,
            max: 128,
            dropped: 1,
        };
        queue(&mut s, &e, errorq);
        assert!(s.starts_with("allocated queue nodes:\t\t           2\n\nqueue txqueue:\n"));
        assert!(s.contains(
            "queue errorq:\ncurrent elements:\t\t           2\n\
             maximum elements:\t\t         128\n\
             not enough space errors:\t           1\n\n\
             queue rsqueue:\ncurrent elements:\t\t           0\n"
        ));
        assert!(s.contains("maximum elements:\t\t      131072\n"));
        let mut s = String::new();
        network(&mut s, &e, &[]);
        assert!(s.starts_with("network statistics:\n\trecv:\n\t\tMalformed messages:\t"));
        assert!(!s.contains("ctrack checks"));
        let mut s = String::new();
        external_cache(&mut s, e.external());
        assert!(s.starts_with("cache external:\ncurrent active connections:\t           0\n"));
        let mut s = String::new();
        external_inject(&mut s, &InjectStats::default());
        assert!(s.starts_with("external inject:\n"));
        let mut s = String::new();
        rsqueue(&mut s, &e);
        assert_eq!(s, "resent queue (len=0)\n");
        // NOTRACK: no resend queue, in -s queue nor -s rsqueue
        let notrack = Engine::new(
            &SyncConfig {
                mode: crate::sync::config::ModeKind::Notrack,
                ..cfg.clone()
            },
            Start {
                now: t0,
                seq: 1,
                mtus: vec![1500],
                auth_key: None,
                auth_seed: 0,
                seed: 1,
            },
        );
        let mut s = String::new();
        rsqueue(&mut s, &notrack);
        assert_eq!(s, "");
        queue(&mut s, &notrack, ErrorQueue::default());
        assert!(s.contains("queue errorq:") && !s.contains("rsqueue"), "{s}");
    }
}
