//! From synced flows to the kernel: the failover commit (`-c`), the
//! direct injection of `DisableExternalCache`, and the `-t` purge.
//!
//! This module holds the policy (which flows, their timeouts, batching,
//! what to do when the kernel says no); the bytes are netlink's
//! ([`crate::netlink::ct`]). Every flow goes in through one ladder,
//! [`settle`], whatever brought it (a commit, a received NEW, UPD or
//! DEL):
//!
//! - a create always carries a timeout (the kernel refuses a new entry
//!   without one): the synced timeout (a commit: what is left of it, or
//!   CommitTimeout), else [`FALLBACK_TIMEOUT`];
//! - an entry that exists already (EEXIST) is looked up: the same
//!   connection (same reply tuple, so the same NAT) is updated in place,
//!   which keeps what the kernel knows and the sync does not carry
//!   (counters, expectations, helper data); another connection with the
//!   same original tuple is replaced, and put back if its replacement
//!   cannot be created. No other error deletes anything;
//! - an update carries the synced timeout, so the entry's timer follows
//!   the peer's; one of an entry that is gone creates it; one the kernel
//!   refuses for a status bit it will not change (EBUSY) is sent again
//!   with those bits as the kernel has them;
//! - EAGAIN (the kernel loaded a helper module) is retried; EOPNOTSUPP
//!   for a helper this kernel lacks creates the flow without it; ENOENT
//!   for a missing master creates the related flow on its own; ENOSPC
//!   (labels not in use in this namespace) goes on without the labels.
//!
//! A commit sends the first creates in batches through a [`Committer`]
//! (many per `sendmsg`; only the last of each send asks for an
//! acknowledgement, so a successful create costs no reply); a batch that
//! fails as a whole (a netlink I/O error) is sent again one request at a
//! time, so every flow gets its own outcome in the [`CommitReport`].
//! Flows without a master go first, related ones after. A commit or a
//! purge runs on a [`Worker`] thread: the daemon's core goes on handling
//! events and control requests meanwhile.
//!
//! Events caused by these requests carry the sockets' port ids
//! ([`Committer::portid`], [`Injector::portid`]): the daemon must not
//! replicate them.

use std::borrow::Cow;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::external::{self, ExternalCache, ExternalFlow};
use super::wire::ct::{self, QuirkOrder};
use crate::flow::{EventKind, Flow, proto, status};
use crate::netlink::client::{BatchResult, Conntrack, Error};
use crate::netlink::ct::{
    CtRequest, NewOpts, create_request, delete_request, get_request, msg, update_request,
};
use crate::netlink::message::{NLM_F_CREATE, NLM_F_EXCL};

/// Timeout of a created entry when nothing better is known (no synced
/// timeout, no CommitTimeout, or a synced one that has run out):
/// conntrackd's one minute. Traffic through the entry refreshes it.
pub const FALLBACK_TIMEOUT: u32 = 60;

/// Requests tried for one flow in all, fallbacks included: a kernel that
/// keeps changing its answer cannot keep us busy.
const MAX_ATTEMPTS: usize = 8;
/// EAGAIN retries for one flow.
const EAGAIN_RETRIES: usize = 3;
/// Creates per [`CtKernel::batch`] call of a commit: what is sent again
/// one by one when a batch fails as a whole.
const COMMIT_CHUNK: usize = 1024;

/// Status bits the kernel refuses to change on an existing entry.
const FIXED_BITS: u32 = status::EXPECTED | status::CONFIRMED | status::DYING;
/// Status bits the kernel only sets, never clears.
const STICKY_BITS: u32 = status::SEEN_REPLY | status::ASSURED;

/// How flows are created in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitOpts {
    /// `CommitTimeout`: the timeout every committed entry gets.
    pub commit_timeout: Option<u32>,
    /// `TCPWindowTracking`: keep window tracking (else BE_LIBERAL).
    pub tcp_window_tracking: bool,
}

impl CommitOpts {
    /// How a flow is encoded with `timeout`.
    fn encoding(&self, timeout: Option<u32>) -> NewOpts {
        NewOpts {
            timeout,
            tcp_window_tracking: self.tcp_window_tracking,
        }
    }
}

/// The kernel as commit, injection and purge use it (ctnetlink through
/// [`Conntrack`] or a [`Committer`]; a model of ctnetlink's rules in the
/// tests).
pub trait CtKernel {
    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, req: &CtRequest, flags: u16) -> Result<(), Error>;
    /// Sends many requests and returns each one's outcome, in order.
    fn batch(&mut self, reqs: &[CtRequest], flags: u16) -> Result<Vec<BatchResult>, Error>;
    /// The entry a GET request names, or None when there is none.
    fn get(&mut self, req: &CtRequest) -> Result<Option<Flow>, Error>;
    /// Calls `each` with every entry of the table.
    fn dump(&mut self, each: &mut dyn FnMut(&Flow) -> Result<(), Error>) -> Result<(), Error>;
}

impl CtKernel for Conntrack {
    fn request(&mut self, req: &CtRequest, flags: u16) -> Result<(), Error> {
        Conntrack::request(self, req, flags)
    }

    fn batch(&mut self, reqs: &[CtRequest], flags: u16) -> Result<Vec<BatchResult>, Error> {
        Conntrack::batch(self, reqs, flags)
    }

    fn get(&mut self, req: &CtRequest) -> Result<Option<Flow>, Error> {
        match Conntrack::get(self, req) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            r => r,
        }
    }

    fn dump(&mut self, each: &mut dyn FnMut(&Flow) -> Result<(), Error>) -> Result<(), Error> {
        Conntrack::dump(self, &CtRequest::new(msg::GET, 0), each).map(|_| ())
    }
}

/// The errno an error stands for (EIO for a reply we could not read).
fn errno_of(e: &Error) -> i32 {
    e.errno().unwrap_or(libc::EIO)
}

/// What one flow's requests achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new entry was created.
    Created,
    /// The existing entry of the same connection was updated in place.
    Updated,
    /// An entry of another connection with the same original tuple was
    /// replaced.
    Replaced,
    /// The entry was deleted.
    Deleted,
    /// A delete found no entry.
    Absent,
}

/// The request a flow goes in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create (NEW, a commit).
    Create,
    /// Update in place (UPD).
    Update,
    /// Delete (DEL).
    Delete,
}

/// Sends `op` for `f`: a create with `timeout` (or [`FALLBACK_TIMEOUT`]),
/// an update that refreshes the timeout when there is one.
fn send(
    k: &mut dyn CtKernel,
    op: Op,
    f: &Flow,
    timeout: Option<u32>,
    o: &CommitOpts,
) -> Result<(), i32> {
    let r = match op {
        Op::Create => k.request(
            &create_request(f, &o.encoding(Some(timeout.unwrap_or(FALLBACK_TIMEOUT)))),
            NLM_F_CREATE | NLM_F_EXCL,
        ),
        Op::Update => k.request(&update_request(f, &o.encoding(timeout)), 0),
        Op::Delete => k.request(&delete_request(f), 0),
    };
    r.map_err(|e| errno_of(&e))
}

/// The kernel's entry with `f`'s original tuple and zone.
fn lookup(k: &mut dyn CtKernel, f: &Flow) -> Result<Option<Flow>, i32> {
    k.get(&get_request(f)).map_err(|e| errno_of(&e))
}

/// True when the kernel's entry `old` is the connection `f` describes:
/// the same reply tuple (so the same NAT; ports where they travel, not
/// GRE keys or NAT-changed ICMP ids) and, for a related flow, the same
/// master. The update of an entry cannot change either.
fn same_connection(old: &Flow, f: &Flow) -> bool {
    let (a, b) = (&old.reply, &f.reply);
    a.src == b.src
        && a.dst == b.dst
        && (!proto::has_ports(f.orig.proto) || (a.sport, a.dport) == (b.sport, b.dport))
        && (f.master.is_none() || old.master == f.master)
}

/// `f`'s status made acceptable to the kernel for an update of `old`:
/// the bits it will not change as `old` has them, the bits it only sets
/// kept where `old` has them.
fn reconcile(f: &mut Flow, old: &Flow) {
    let had = old.status.unwrap_or(status::CONFIRMED);
    let s = f.status.unwrap_or(had);
    f.status = Some((s & !FIXED_BITS) | (had & (FIXED_BITS | STICKY_BITS)));
}

/// Takes one flow's `op` from the outcome of its first request (`first`)
/// to the end, through the fallbacks the module documentation lists.
/// `timeout` is the one a create sets and an update refreshes.
pub fn settle(
    k: &mut dyn CtKernel,
    op: Op,
    flow: &Flow,
    timeout: Option<u32>,
    o: &CommitOpts,
    first: Result<(), i32>,
) -> Result<Outcome, i32> {
    let mut f = Cow::Borrowed(flow);
    let mut op = op;
    let mut result = first;
    // the entry of another connection this one replaced (put back if the
    // replacement fails)
    let mut replaced: Option<Flow> = None;
    let (mut again, mut reconciled) = (0, false);
    let mut attempts = 1;
    let e = loop {
        let e = match result {
            Ok(()) => {
                return Ok(match (op, &replaced) {
                    (Op::Delete, _) => Outcome::Deleted,
                    (_, Some(_)) => Outcome::Replaced,
                    (Op::Create, None) => Outcome::Created,
                    (Op::Update, None) => Outcome::Updated,
                });
            }
            Err(e) => e,
        };
        if attempts >= MAX_ATTEMPTS {
            break e;
        }
        match (op, e) {
            (_, libc::EAGAIN) if again < EAGAIN_RETRIES => again += 1,
            (Op::Delete, libc::ENOENT) => return Ok(Outcome::Absent),
            (Op::Create, libc::EOPNOTSUPP) if f.helper.is_some() => f.to_mut().helper = None,
            (Op::Create, libc::ENOENT) if f.master.is_some() => f.to_mut().master = None,
            (Op::Create | Op::Update, libc::ENOSPC) if f.labels.is_some() => {
                f.to_mut().labels = None
            }
            (Op::Create, libc::EEXIST) if replaced.is_none() => match lookup(k, &f) {
                Err(e) => break e,
                // gone meanwhile: create it again
                Ok(None) => {}
                Ok(Some(old)) if same_connection(&old, &f) => {
                    reconcile(f.to_mut(), &old);
                    reconciled = true;
                    op = Op::Update;
                }
                Ok(Some(old)) => match send(k, Op::Delete, &old, None, o) {
                    Ok(()) | Err(libc::ENOENT) => replaced = Some(old),
                    Err(e) => break e,
                },
            },
            (Op::Update, libc::ENOENT) => op = Op::Create,
            (Op::Update, libc::EBUSY) if !reconciled => match lookup(k, &f) {
                Err(e) => break e,
                Ok(None) => op = Op::Create,
                Ok(Some(old)) => {
                    reconcile(f.to_mut(), &old);
                    reconciled = true;
                }
            },
            _ => break e,
        }
        result = send(k, op, &f, timeout, o);
        attempts += 1;
    };
    if let Some(old) = replaced {
        // the old entry goes back with what was left of its time
        let _ = send(k, Op::Create, &old, old.timeout, o);
    }
    Err(e)
}

/// The outcome of a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Entries now in the kernel as synced.
    pub ok: usize,
    /// Entries of the same connections that existed and were updated in
    /// place (included in `ok`).
    pub updated: usize,
    /// Entries of other connections with the same original tuple that
    /// were replaced (included in `ok`).
    pub replaced: usize,
    /// Entries that could not be committed, with the errno of each.
    pub failed: Vec<(Flow, i32)>,
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

    fn count(&mut self, f: &Flow, r: Result<Outcome, i32>) {
        match r {
            Ok(outcome) => {
                self.ok += 1;
                match outcome {
                    Outcome::Updated => self.updated += 1,
                    Outcome::Replaced => self.replaced += 1,
                    _ => {}
                }
            }
            Err(e) => self.failed.push((f.clone(), e)),
        }
    }
}

/// ctnetlink sockets for bulk modifications (commit, purge): one sends
/// the requests, the other dumps, so a dump never interleaves with batch
/// replies.
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
}

impl CtKernel for Committer {
    fn request(&mut self, req: &CtRequest, flags: u16) -> Result<(), Error> {
        CtKernel::request(&mut self.modifier, req, flags)
    }

    fn batch(&mut self, reqs: &[CtRequest], flags: u16) -> Result<Vec<BatchResult>, Error> {
        CtKernel::batch(&mut self.modifier, reqs, flags)
    }

    fn get(&mut self, req: &CtRequest) -> Result<Option<Flow>, Error> {
        CtKernel::get(&mut self.modifier, req)
    }

    fn dump(&mut self, each: &mut dyn FnMut(&Flow) -> Result<(), Error>) -> Result<(), Error> {
        CtKernel::dump(&mut self.dumper, each)
    }
}

/// Sends `reqs` as batches of `chunk`; a batch that fails as a whole is
/// sent again one request at a time, so every request has its own
/// outcome (an errno where even that failed).
fn batch_each(
    k: &mut dyn CtKernel,
    reqs: &[CtRequest],
    flags: u16,
    chunk: usize,
) -> Vec<Result<(), i32>> {
    let mut out = Vec::with_capacity(reqs.len());
    for part in reqs.chunks(chunk.max(1)) {
        match k.batch(part, flags) {
            Ok(results) if results.len() == part.len() => out.extend(results),
            _ => out.extend(
                part.iter()
                    .map(|r| k.request(r, flags).map_err(|e| errno_of(&e))),
            ),
        }
    }
    out
}

/// Creates `flows` (each with its timeout) in the kernel, masters first,
/// and reports every flow's outcome.
pub fn commit_flows(k: &mut dyn CtKernel, flows: Vec<(Flow, u32)>, o: &CommitOpts) -> CommitReport {
    let started = Instant::now();
    let mut report = CommitReport::default();
    let (masters, related): (Vec<_>, Vec<_>) =
        flows.into_iter().partition(|(f, _)| f.master.is_none());
    for pass in [masters, related] {
        let reqs: Vec<CtRequest> = pass
            .iter()
            .map(|(f, t)| create_request(f, &o.encoding(Some(*t))))
            .collect();
        let results = batch_each(k, &reqs, NLM_F_CREATE | NLM_F_EXCL, COMMIT_CHUNK);
        for ((f, t), first) in pass.iter().zip(results) {
            let r = match first {
                Ok(()) => Ok(Outcome::Created),
                e => settle(k, Op::Create, f, Some(*t), o, e),
            };
            report.count(f, r);
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// The external cache as a commit takes it: every entry's attributes as
/// received, copied into one buffer (a few milliseconds for 50k flows on
/// the daemon's core thread), decoded later on the commit's own thread
/// by [`Snapshot::flows`].
#[derive(Clone, Debug)]
pub struct Snapshot {
    bytes: Vec<u8>,
    /// (end of the entry's bytes in `bytes`, time of its last update).
    entries: Vec<(usize, Instant)>,
    quirk: QuirkOrder,
    taken: Instant,
}

impl Snapshot {
    /// Copies `cache` at `now`.
    pub fn of(cache: &ExternalCache, now: Instant) -> Snapshot {
        let mut bytes = Vec::new();
        let mut entries = Vec::with_capacity(cache.len());
        for (body, updated) in cache.raw_entries() {
            bytes.extend_from_slice(body);
            entries.push((bytes.len(), updated));
        }
        Snapshot {
            bytes,
            entries,
            quirk: cache.quirk(),
            taken: now,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the cache was empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every flow with the timeout it is committed with: CommitTimeout,
    /// or what was left of the synced one when the snapshot was taken
    /// ([`external::commit_timeout`]). Entries that do not decode (none:
    /// the cache keeps only messages that did) are left out.
    pub fn flows(&self, o: &CommitOpts) -> Vec<(Flow, u32)> {
        let mut start = 0;
        let mut out = Vec::with_capacity(self.entries.len());
        for &(end, updated) in &self.entries {
            let body = &self.bytes[start..end];
            start = end;
            if let Ok(flow) = ct::decode_attrs(body, self.quirk) {
                let e = ExternalFlow {
                    flow,
                    created: updated,
                    updated,
                };
                let t = external::commit_timeout(&e, self.taken, o.commit_timeout);
                out.push((e.flow, t));
            }
        }
        out
    }
}

/// `-c` in one call: commits the whole external cache as it is at `now`.
pub fn commit_external(
    k: &mut dyn CtKernel,
    cache: &ExternalCache,
    now: Instant,
    o: &CommitOpts,
) -> CommitReport {
    commit_flows(k, Snapshot::of(cache, now).flows(o), o)
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

/// `DisableExternalCache on`: received flows go straight to the kernel
/// through [`settle`]: NEW creates (with the synced timeout), UPD updates
/// in place (refreshing the timeout), DEL deletes.
#[derive(Debug)]
pub struct Injector<K: CtKernel = Conntrack> {
    kernel: K,
    portid: u32,
    opts: CommitOpts,
    stats: InjectStats,
}

impl Injector {
    /// An injector on its own ctnetlink socket in `netns` (None: ours).
    pub fn open(netns: Option<&str>, opts: CommitOpts) -> Result<Injector, Error> {
        let conn = Conntrack::open(netns)?;
        let portid = conn.portid();
        Ok(Injector::with_kernel(conn, portid, opts))
    }
}

impl<K: CtKernel> Injector<K> {
    /// An injector on `kernel`, whose socket has port id `portid`.
    pub fn with_kernel(kernel: K, portid: u32, opts: CommitOpts) -> Injector<K> {
        Injector {
            kernel,
            portid,
            opts,
            stats: InjectStats::default(),
        }
    }

    /// Port id of the socket: events it causes must not be replicated.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Counters.
    pub fn stats(&self) -> InjectStats {
        self.stats
    }

    /// Applies one received flow; returns what it did, or the error the
    /// kernel gave when every fallback failed (already counted).
    pub fn apply(&mut self, kind: EventKind, f: &Flow) -> Result<Outcome, Error> {
        let synced = f.timeout.or(self.opts.commit_timeout);
        let (op, timeout) = match kind {
            EventKind::New => (Op::Create, Some(synced.unwrap_or(FALLBACK_TIMEOUT))),
            EventKind::Update => (Op::Update, synced),
            EventKind::Destroy => (Op::Delete, None),
        };
        let first = send(&mut self.kernel, op, f, timeout, &self.opts);
        let r = settle(&mut self.kernel, op, f, timeout, &self.opts, first);
        let s = &mut self.stats;
        let (ok, fail) = match kind {
            EventKind::New => (&mut s.add_ok, &mut s.add_fail),
            EventKind::Update => (&mut s.upd_ok, &mut s.upd_fail),
            EventKind::Destroy => (&mut s.del_ok, &mut s.del_fail),
        };
        match r {
            Ok(Outcome::Absent) => {}
            Ok(_) => *ok += 1,
            Err(_) => *fail += 1,
        }
        r.map_err(Error::Kernel)
    }
}

/// The outcome of a `-t` purge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries deleted.
    pub deleted: usize,
    /// Entries that could not be deleted (gone ones are not failures).
    pub failed: usize,
}

/// `-t`: deletes every kernel entry for which `keep` is false (conntrackd
/// keeps the entries its Filter ignores). Only a failed dump fails it as
/// a whole.
pub fn purge_kernel_table(
    k: &mut dyn CtKernel,
    keep: &dyn Fn(&Flow) -> bool,
) -> Result<PurgeReport, Error> {
    let mut reqs = Vec::new();
    k.dump(&mut |f| {
        if !keep(f) {
            reqs.push(delete_request(f));
        }
        Ok(())
    })?;
    let mut report = PurgeReport::default();
    for r in batch_each(k, &reqs, 0, COMMIT_CHUNK) {
        match r {
            Ok(()) => report.deleted += 1,
            Err(libc::ENOENT) => {}
            Err(_) => report.failed += 1,
        }
    }
    Ok(report)
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

/// Work for the [`Worker`] thread.
pub enum Job {
    /// Commit the external cache as it was when the snapshot was taken.
    Commit {
        /// The external cache.
        snapshot: Snapshot,
        /// How its flows are created.
        opts: CommitOpts,
    },
    /// Purge the kernel table of every entry `keep` refuses.
    Purge {
        /// The entries to keep.
        keep: Box<dyn Fn(&Flow) -> bool + Send>,
    },
}

/// What a finished [`Job`] reports.
#[derive(Debug)]
pub enum Finished {
    /// A commit ended.
    Commit(CommitReport),
    /// A purge ended (or its dump failed).
    Purge(Result<PurgeReport, String>),
}

/// Runs commits and purges one after the other on a thread of its own
/// with its own [`CtKernel`], so the daemon's core keeps handling events
/// and control requests while 50k flows go into the kernel. The core
/// hands it a [`Job`] and collects the [`Finished`] report with
/// [`Worker::poll`].
pub struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Finished>,
    running: usize,
    portid: u32,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread; `portid` is the port id of `kernel`'s
    /// modifying socket.
    pub fn spawn<K: CtKernel + Send + 'static>(
        mut kernel: K,
        portid: u32,
    ) -> std::io::Result<Worker> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ctrackd-commit".into())
            .spawn(move || {
                for job in rx {
                    let finished = match job {
                        Job::Commit { snapshot, opts } => {
                            let started = Instant::now();
                            let flows = snapshot.flows(&opts);
                            let mut r = commit_flows(&mut kernel, flows, &opts);
                            r.elapsed = started.elapsed();
                            Finished::Commit(r)
                        }
                        Job::Purge { keep } => Finished::Purge(
                            purge_kernel_table(&mut kernel, &*keep).map_err(|e| e.to_string()),
                        ),
                    };
                    if tx.send(finished).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            done,
            running: 0,
            portid,
            thread: Some(thread),
        })
    }

    /// Port id of the thread's modifying socket: events it causes must
    /// not be replicated.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Queues a job; false when the thread is gone.
    pub fn submit(&mut self, job: Job) -> bool {
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if sent {
            self.running += 1;
        }
        sent
    }

    /// True while a job is queued or running.
    pub fn busy(&self) -> bool {
        self.running > 0
    }

    /// The report of a job that finished, if one did (does not wait).
    pub fn poll(&mut self) -> Option<Finished> {
        let f = self.done.try_recv().ok()?;
        self.running = self.running.saturating_sub(1);
        Some(f)
    }

    /// Waits for the report of the next job to finish (None when the
    /// thread is gone).
    pub fn wait(&mut self) -> Option<Finished> {
        let f = self.done.recv().ok()?;
        self.running = self.running.saturating_sub(1);
        Some(f)
    }

    /// Lets the queued jobs finish and stops the thread.
    pub fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
