//! From synced flows to the kernel: the failover commit (`-c`), the
//! direct injection of `DisableExternalCache`, and the `-t` purge.
//!
//! This module holds the policy (which flows, their timeouts, batching,
//! retries); the bytes are netlink's: a commit turns every external flow
//! into a ctnetlink create request ([`crate::netlink::ct::create_request`],
//! timeout = CommitTimeout or what is left of the synced one, TCP
//! BE_LIBERAL unless TCPWindowTracking) and sends
//! them with a [`Committer`]: many per `sendmsg`, and only the last
//! request of each send asks for an acknowledgement, so a successful
//! create costs no reply at all (conntrackd: one send and one receive per
//! entry). Entries that exist already (EEXIST) are deleted and created
//! again once, as conntrackd does. Flows without a master go first,
//! related ones after.
//!
//! Events caused by these requests carry the committer's port id
//! ([`Committer::portid`]): the daemon must not replicate them.

use std::time::{Duration, Instant};

use super::external::{self, ExternalCache};
use crate::flow::{EventKind, Flow};
use crate::netlink::client::{BatchResult, Conntrack, Error};
use crate::netlink::ct::{CtRequest, NewOpts, create_request, delete_request, msg, update_request};
use crate::netlink::message::{NLM_F_CREATE, NLM_F_EXCL};

/// How flows are created in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitOpts {
    /// `CommitTimeout`: the timeout every committed entry gets.
    pub commit_timeout: Option<u32>,
    /// `TCPWindowTracking`: keep window tracking (else BE_LIBERAL).
    pub tcp_window_tracking: bool,
}

impl CommitOpts {
    /// How a flow is encoded with `timeout` (None: the kernel's default
    /// for its state).
    fn encoding(&self, timeout: Option<u32>) -> NewOpts {
        NewOpts {
            timeout,
            tcp_window_tracking: self.tcp_window_tracking,
        }
    }
}

/// The outcome of a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Entries created.
    pub ok: usize,
    /// Entries that could not be created, with the errno of each.
    pub failed: Vec<(Flow, i32)>,
    /// Entries that existed and were replaced (included in `ok`).
    pub replaced: usize,
    /// Wall time the commit took.
    pub elapsed: Duration,
}

impl CommitReport {
    /// conntrackd's log lines for this commit.
    pub fn log_lines(&self) -> Vec<String> {
        let mut v = vec![format!("Committed {} new entries", self.ok)];
        if !self.failed.is_empty() {
            v.push(format!("{} entries can't be committed", self.failed.len()));
        }
        v.push(format!(
            "commit has taken {}.{:06} seconds",
            self.elapsed.as_secs(),
            self.elapsed.subsec_micros()
        ));
        v
    }
}

/// ctnetlink sockets for bulk modifications (commit, purge): one sends
/// the requests in batches, the other dumps, so a dump never interleaves
/// with batch replies.
#[derive(Debug)]
pub struct Committer {
    modifier: Conntrack,
    dumper: Conntrack,
}

impl Committer {
    /// Opens the sockets in `netns` (None: ours).
    pub fn open(netns: Option<&str>) -> Result<Committer, Error> {
        Ok(Committer {
            modifier: Conntrack::open(netns)?,
            dumper: Conntrack::open(netns)?,
        })
    }

    /// Port id of the socket the modifications go through: events it
    /// causes must not be replicated.
    pub fn portid(&self) -> u32 {
        self.modifier.portid()
    }

    /// Sends `reqs` with `flags` and returns each one's outcome, in order.
    pub fn batch(&mut self, reqs: &[CtRequest], flags: u16) -> Result<Vec<BatchResult>, Error> {
        self.modifier.batch(reqs, flags)
    }

    /// Dumps the table through a separate socket.
    pub fn dump(&mut self, each: &mut dyn FnMut(&Flow) -> Result<(), Error>) -> Result<(), Error> {
        self.dumper
            .dump(&CtRequest::new(msg::GET, 0), each)
            .map(|_| ())
    }
}

/// Creates `flows` (each with its timeout) in the kernel, masters first;
/// EEXIST: delete and create again, once.
pub fn commit_flows(
    conn: &mut Committer,
    flows: Vec<(Flow, Option<u32>)>,
    o: &CommitOpts,
) -> Result<CommitReport, Error> {
    let started = Instant::now();
    let mut report = CommitReport::default();
    let (masters, related): (Vec<_>, Vec<_>) =
        flows.into_iter().partition(|(f, _)| f.master.is_none());
    for pass in [masters, related] {
        if pass.is_empty() {
            continue;
        }
        let reqs: Vec<CtRequest> = pass
            .iter()
            .map(|(f, t)| create_request(f, &o.encoding(*t)))
            .collect();
        let results = conn.batch(&reqs, NLM_F_CREATE | NLM_F_EXCL)?;
        let mut again = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(()) => report.ok += 1,
                Err(libc::EEXIST) => again.push(i),
                Err(e) => report.failed.push((pass[i].0.clone(), e)),
            }
        }
        if again.is_empty() {
            continue;
        }
        let dels: Vec<CtRequest> = again.iter().map(|&i| delete_request(&pass[i].0)).collect();
        let del_results = conn.batch(&dels, 0)?;
        let mut retry = Vec::new();
        for (k, r) in del_results.into_iter().enumerate() {
            let i = again[k];
            match r {
                Ok(()) | Err(libc::ENOENT) => retry.push(i),
                Err(e) => report.failed.push((pass[i].0.clone(), e)),
            }
        }
        let reqs: Vec<CtRequest> = retry.iter().map(|&i| reqs[i].clone()).collect();
        for (k, r) in conn
            .batch(&reqs, NLM_F_CREATE | NLM_F_EXCL)?
            .into_iter()
            .enumerate()
        {
            match r {
                Ok(()) => {
                    report.ok += 1;
                    report.replaced += 1;
                }
                Err(e) => report.failed.push((pass[retry[k]].0.clone(), e)),
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// `-c`: commits the whole external cache; timeouts are CommitTimeout or
/// what is left of each synced timeout at `now`.
pub fn commit_external(
    conn: &mut Committer,
    cache: &ExternalCache,
    now: Instant,
    o: &CommitOpts,
) -> Result<CommitReport, Error> {
    let flows = cache
        .iter()
        .map(|e| {
            let t = external::commit_timeout(&e, now, o.commit_timeout);
            (e.flow, t)
        })
        .collect();
    commit_flows(conn, flows, o)
}

/// Counters of [`Injector`] (`conntrackd -s`, "external inject:").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectStats {
    /// Created.
    pub add_ok: u64,
    /// Could not be created.
    pub add_fail: u64,
    /// Updated (or created by an update).
    pub upd_ok: u64,
    /// Could not be updated.
    pub upd_fail: u64,
    /// Deleted.
    pub del_ok: u64,
    /// Could not be deleted (missing entries are not failures).
    pub del_fail: u64,
}

/// `DisableExternalCache on`: received flows go straight to the kernel,
/// with conntrackd's fallbacks (NEW: EEXIST → delete + create; UPD:
/// ENOENT → create, other errors → delete + create; DEL: ENOENT is fine).
#[derive(Debug)]
pub struct Injector {
    conn: Conntrack,
    opts: CommitOpts,
    stats: InjectStats,
}

impl Injector {
    /// An injector on its own ctnetlink socket in `netns` (None: ours).
    pub fn open(netns: Option<&str>, opts: CommitOpts) -> Result<Injector, Error> {
        Ok(Injector {
            conn: Conntrack::open(netns)?,
            opts,
            stats: InjectStats::default(),
        })
    }

    /// Port id of the socket: events it causes must not be replicated.
    pub fn portid(&self) -> u32 {
        self.conn.portid()
    }

    /// Counters.
    pub fn stats(&self) -> InjectStats {
        self.stats
    }

    fn create(&mut self, f: &Flow) -> Result<(), Error> {
        let req = create_request(f, &self.opts.encoding(None));
        self.conn.request(&req, NLM_F_CREATE | NLM_F_EXCL)
    }

    fn delete(&mut self, f: &Flow) -> Result<(), Error> {
        match self.conn.request(&delete_request(f), 0) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// Applies one received flow; returns the error the kernel gave when
    /// even the fallback failed (already counted).
    pub fn apply(&mut self, op: EventKind, f: &Flow) -> Result<(), Error> {
        let r = match op {
            EventKind::New => match self.create(f) {
                Err(e) if e.errno() == Some(libc::EEXIST) => {
                    self.delete(f).and_then(|()| self.create(f))
                }
                r => r,
            },
            EventKind::Update => {
                let req = update_request(f, &self.opts.encoding(None));
                match self.conn.request(&req, 0) {
                    Err(e) if e.errno() == Some(libc::ENOENT) => self.create(f),
                    Err(_) => self.delete(f).and_then(|()| self.create(f)),
                    r => r,
                }
            }
            EventKind::Destroy => match self.conn.request(&delete_request(f), 0) {
                Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(()),
                r => r,
            },
        };
        let s = &mut self.stats;
        let (ok, fail) = match op {
            EventKind::New => (&mut s.add_ok, &mut s.add_fail),
            EventKind::Update => (&mut s.upd_ok, &mut s.upd_fail),
            EventKind::Destroy => (&mut s.del_ok, &mut s.del_fail),
        };
        if r.is_ok() {
            *ok += 1;
        } else {
            *fail += 1;
        }
        r
    }
}

/// `-t`: deletes every kernel entry for which `keep` is false (conntrackd
/// keeps the entries its Filter ignores). Returns (deleted, failed).
pub fn purge_kernel_table(
    conn: &mut Committer,
    keep: &dyn Fn(&Flow) -> bool,
) -> Result<(usize, usize), Error> {
    let mut reqs = Vec::new();
    conn.dump(&mut |f| {
        if !keep(f) {
            reqs.push(delete_request(f));
        }
        Ok(())
    })?;
    let (mut ok, mut failed) = (0, 0);
    for r in conn.batch(&reqs, 0)? {
        match r {
            Ok(()) => ok += 1,
            Err(libc::ENOENT) => {}
            Err(_) => failed += 1,
        }
    }
    Ok((ok, failed))
}

/// The `-t` schedule: one pending purge of the kernel table, cancelled by
/// a commit or a flush (conntrackd's reset-timers alarm).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeTimer {
    at: Option<Instant>,
}

impl PurgeTimer {
    /// `-t`: schedules the purge in `purge_timeout` seconds unless one is
    /// pending; returns the log line when it was scheduled.
    pub fn schedule(&mut self, now: Instant, purge_timeout: u32) -> Option<String> {
        if self.at.is_some() {
            return None;
        }
        self.at = Some(now + Duration::from_secs(purge_timeout as u64));
        Some(format!("flushing conntrack table in {purge_timeout} secs"))
    }

    /// A commit or flush cancels the pending purge.
    pub fn cancel(&mut self) {
        self.at = None;
    }

    /// When the purge is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.at
    }

    /// True (once) when the purge is due: run [`purge_kernel_table`].
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.at.is_some_and(|t| t <= now) {
            self.at = None;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil;

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
        p.schedule(t0, 1);
        p.cancel();
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn report_lines_are_conntrackds() {
        let r = CommitReport {
            ok: 3,
            failed: vec![(testutil::tcp4(), libc::EINVAL)],
            replaced: 0,
            elapsed: Duration::from_micros(376216),
        };
        assert_eq!(
            r.log_lines(),
            [
                "Committed 3 new entries",
                "1 entries can't be committed",
                "commit has taken 0.376216 seconds"
            ]
        );
    }
}
