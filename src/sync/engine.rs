//! The sync engine: conntrackd's FTFW, NOTRACK and ALARM modes as one
//! sans-I/O state machine.
//!
//! The daemon feeds it kernel events of the flows it replicates, the
//! datagrams its link sockets receive, link up/down changes, the client
//! commands (`-n`, `-B`, `-f`) and the passing of time; after each batch
//! of input it calls [`Engine::transmit`] and then takes the resulting
//! [`Action`]s (datagrams to send on a link, flows to inject into the
//! kernel, log lines). [`Engine::next_deadline`] says when to call
//! [`Engine::on_timeout`]. Time is injected, nothing here sleeps or does
//! I/O, so the protocol is tested with simulated lossy links.
//!
//! Like conntrackd, messages are built from the object's *current* state
//! when they are sent: an object queued several times goes out once, and
//! a retransmission after a NACK carries the latest state with a new
//! sequence number. The engine keeps, per replicated flow, its encoded
//! message (~60-120 bytes) and its queue position; destroyed flows stay
//! until the peer acknowledges their DEL (FTFW).
//!
//! The received side applies NEW/UPD/DEL to the [`ExternalCache`] (or,
//! with `DisableExternalCache`, emits [`Action::Inject`]).
//!
//! Recovery from loss (FTFW) does not wait for the one-second ALIVE: while
//! the peer owes an answer (an ACK of data, a resend after a NACK) a probe
//! follows each transmission after [`PROBE_INTERVAL`], doubling while the
//! peer is silent, so a lost tail is NACKed at once; a NACK of ours that
//! is still unacknowledged a probe later is sent again, since the peer
//! cannot ask for a NACK it never saw before it hears from us. With 40% of
//! the datagrams lost each way, 20k flows converge in about a second more
//! than the load takes, where a NACK round a second took 3 to 30 s.
//!
//! What a peer asks for costs bounded work: a NACK or a new session takes
//! its range out of the resend queue with two binary searches and one
//! drain (the queue is in sequence order), and the objects it makes us
//! resend come out of a budget of one ResendQueueSize a second (requests
//! beyond it wait, nothing is dropped); bulk sends it causes (RESYNC, a
//! restart) are one a second.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::auth::{Auth, AuthError, Opened};
use super::config::{ModeKind, SyncConfig};
use super::external::{ExternalCache, FlowKey};
use super::wire::ct::{self, EncodeOpts};
use super::wire::{self, Header, Messages, Packer, RecvError, flag, ty};
use crate::flow::{EventKind, Flow};

/// ALIVE interval (conntrackd's ALIVE_INT, hard-coded to one second).
pub const ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// A HELLO up to this many sequence numbers behind the expected one is a
/// reordered message of the current peer session, not a new session.
const SESSION_SLACK: i32 = 64;
/// A HELLO up to this many sequence numbers ahead is the current session
/// with losses.
const SESSION_JUMP: i32 = 4096;

/// First interval of the probe that follows a transmission while the peer
/// owes us an answer (an ACK of data, a resend after our NACK). The probe
/// is an ALIVE (or the ACK we owe), sequenced like everything else, so
/// the peer sees at once the gap a lost datagram left at the end of what
/// we sent, instead of a second later. It doubles with each probe that
/// brings no answer, up to [`ALIVE_INTERVAL`].
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Resend requests waiting for budget; more are merged into the last.
const MAX_PENDING_RESENDS: usize = 32;

/// Bulk sends the peer causes (its resync requests, its restarts) are at
/// most one per this interval; one asked for sooner is sent when it ends.
pub const PEER_BULK_INTERVAL: Duration = Duration::from_secs(1);

/// Most datagrams one call to [`Engine::transmit`] (or
/// [`Engine::poll_action`]) prepares: a bulk send of a big table is
/// packed as the daemon takes the datagrams, never all at once.
pub const TX_BATCH: usize = 64;

/// Something the daemon must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this datagram on link number `link` (index into the config's
    /// links); count a failure with [`Engine::note_send_error`].
    Send {
        /// Link index.
        link: usize,
        /// The whole UDP payload.
        datagram: Vec<u8>,
    },
    /// `DisableExternalCache`: apply this flow to the kernel now
    /// (`commit::Injector` does it the way conntrackd does).
    Inject {
        /// New, Update or Destroy.
        op: EventKind,
        /// The received flow, reply tuple rebuilt.
        flow: Box<Flow>,
    },
    /// NOTRACK with `DisableInternalCache`: a bulk send was asked for
    /// (`-B` or the peer's resync request): dump the kernel table and
    /// pass each flow to [`Engine::bulk_flow`], then call `transmit`.
    DumpKernelForBulk,
    /// A line for the daemon's log.
    Log {
        /// Severity.
        level: LogLevel,
        /// The text, conntrackd's wording where it has one.
        text: String,
    },
}

/// Log severity of [`Action::Log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Normal but worth noting.
    Notice,
    /// Something is wrong.
    Warning,
    /// Something failed.
    Error,
}

/// What the engine needs to know at start beyond the config.
#[derive(Clone, Debug)]
pub struct Start {
    /// The monotonic clock now.
    pub now: Instant,
    /// First sequence number. conntrackd uses `time(NULL)`; the daemon
    /// uses a number from the clock's nanoseconds instead, so a restarted
    /// instance does not continue in the range of the previous one (which
    /// the peer would take for old or duplicate messages).
    pub seq: u32,
    /// MTU of each link's interface (same order as the config's links).
    pub mtus: Vec<usize>,
    /// The `Auth` key, when configured.
    pub auth_key: Option<Vec<u8>>,
    /// Random bits for the auth sender id and challenge nonces (must
    /// differ from one start to the next).
    pub auth_seed: u64,
    /// Seed of the ALARM refresh jitter.
    pub seed: u64,
}

impl Start {
    /// Values from the clocks, for the daemon.
    pub fn now(mtus: Vec<usize>, auth_key: Option<Vec<u8>>) -> Start {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Start {
            now: Instant::now(),
            seq: scramble(wall.as_nanos() as u64 ^ u64::from(std::process::id())) as u32,
            mtus,
            auth_key,
            auth_seed: random_u64(wall.as_nanos()),
            seed: wall.as_nanos() as u64 | 1,
        }
    }
}

/// 64 random bits: std's randomly keyed SipHash (keys from the OS's
/// generator) over the clock and the pid.
fn random_u64(clock: u128) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(clock);
    h.write_u32(std::process::id());
    h.finish()
}

/// A well-mixed 64-bit value from `x` (splitmix64's finalizer).
fn scramble(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Receive and protocol counters (`conntrackd -s network`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Malformed messages received (sum of the next six).
    pub malformed: u64,
    /// Wrong protocol version.
    pub bad_version: u64,
    /// Malformed header (bad control message).
    pub bad_header: u64,
    /// Malformed payload (attributes).
    pub bad_payload: u64,
    /// Bad message type.
    pub bad_type: u64,
    /// Truncated message.
    pub truncated: u64,
    /// Bad message size.
    pub bad_size: u64,
    /// Flows that could not be encoded for sending.
    pub send_malformed: u64,
    /// Messages lost (sequence gaps; counted exactly, unlike conntrackd).
    pub lost: u64,
    /// Old or duplicate messages (sequence before the expected one).
    pub before: u64,
    /// State messages sent (retransmissions included).
    pub state_sent: u64,
    /// State messages received and applied.
    pub state_recv: u64,
    /// Control messages sent.
    pub ctl_sent: u64,
    /// Control messages received.
    pub ctl_recv: u64,
    /// Objects sent again after a NACK.
    pub resent: u64,
    /// Expectation messages ignored (not supported).
    pub exp_ignored: u64,
    /// Datagrams without the auth block (Auth on).
    pub auth_missing: u64,
    /// Datagrams with a wrong MAC (Auth on).
    pub auth_bad_mac: u64,
    /// Replayed datagrams (Auth on).
    pub auth_replay: u64,
    /// Our own datagrams sent back to us (Auth on).
    pub auth_reflected: u64,
    /// Datagrams of a sender instance not verified yet (Auth on): a
    /// restarted peer's first ones, or a recording.
    pub auth_unverified: u64,
    /// Datagrams from another source than the peer (CheckSourceAddress).
    pub wrong_source: u64,
}

/// Traffic of one link (`conntrackd -s link`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_recv: u64,
    /// Datagrams sent.
    pub pkts_sent: u64,
    /// Datagrams received.
    pub pkts_recv: u64,
    /// Send errors the daemon reported.
    pub errors_send: u64,
    /// Receive errors the daemon reported.
    pub errors_recv: u64,
    /// Datagrams received but dropped because the daemon had not taken
    /// the earlier ones yet (see `link::MAX_QUEUED_BYTES`).
    pub dropped: u64,
}

/// One link as the engine sees it.
#[derive(Clone, Debug)]
pub struct LinkView {
    /// Interface name.
    pub name: String,
    /// "UDP" or "multicast".
    pub kind: &'static str,
    /// Administratively up and running, as last reported.
    pub up: bool,
    /// The link messages are sent on.
    pub active: bool,
    /// Traffic.
    pub stats: LinkStats,
}

/// Queue sizes (`conntrackd -s queue`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Items waiting to be sent.
    pub tx_len: usize,
    /// Items kept for retransmission (FTFW).
    pub rs_len: usize,
    /// ResendQueueSize.
    pub rs_max: usize,
    /// Items dropped because the resend queue was full.
    pub rs_dropped: u64,
    /// Replicated flows the engine tracks (destroyed ones awaiting ACK
    /// included).
    pub objects: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    New,
    Alive,
    Dead,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queued {
    None,
    Tx,
    Rs(u32),
}

#[derive(Clone, Debug)]
struct Obj {
    key: FlowKey,
    msg: Box<[u8]>,
    status: Status,
    queued: Queued,
    /// Not in the index: sent once and forgotten (DisableInternalCache
    /// and kernel-dump bulks).
    transient: bool,
    alarm: u32,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    generation: u32,
    obj: Option<Obj>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxItem {
    Obj(u32, u32),
    Ctl { flags: u8, from: u32, to: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RsItem {
    Obj {
        idx: u32,
        generation: u32,
        seq: u32,
    },
    /// An ACK, NACK or RESYNC of the peer session `session` (they mean
    /// nothing to another one).
    Ctl {
        flags: u8,
        session: u16,
        from: u32,
        to: u32,
        seq: u32,
    },
}

impl RsItem {
    fn seq(&self) -> u32 {
        match *self {
            RsItem::Obj { seq, .. } | RsItem::Ctl { seq, .. } => seq,
        }
    }
}

/// The objects a peer may make us resend (NACKs, its new sessions): a
/// token bucket holding one resend queue's worth, refilled at one queue a
/// second. Requests over budget wait in [`Engine`]'s pending list.
#[derive(Clone, Copy, Debug)]
struct ResendBudget {
    tokens: usize,
    cap: usize,
    refilled: Instant,
}

impl ResendBudget {
    fn new(cap: usize, now: Instant) -> ResendBudget {
        ResendBudget {
            tokens: cap,
            cap,
            refilled: now,
        }
    }

    /// Adds what the time since the last refill earned.
    fn refill(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.refilled).as_millis();
        let earned = ms.saturating_mul(self.cap as u128) / 1000;
        if earned > 0 {
            self.tokens = (self.tokens as u128 + earned).min(self.cap as u128) as usize;
            self.refilled = now;
        }
    }

    /// When waiting requests are next served: when a token is earned, at
    /// most 100 times a second.
    fn next_serving(&self) -> Instant {
        let ms = 1000u64.div_ceil(self.cap.max(1) as u64).max(10);
        self.refilled + Duration::from_millis(ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hello {
    Init,
    Say,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Data,
    Ctl,
    Drop,
    Bad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqState {
    Unset,
    InSync,
    After,
    Before,
}

/// `a` comes before `b` in sequence space (wrapping).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

struct LinkRt {
    name: String,
    kind: &'static str,
    limit: usize,
    expected: Option<IpAddr>,
    up: bool,
    stats: LinkStats,
}

/// The sync engine of one daemon. See the module documentation.
pub struct Engine {
    mode: ModeKind,
    opts: EncodeOpts,
    quirk: ct::QuirkOrder,
    window_size: u32,
    rs_max: usize,
    refresh_time: u32,
    disable_internal: bool,
    disable_external: bool,
    // sequence numbers
    next_seq: u32,
    last_recv: Option<u32>,
    // FTFW receive side
    window: u32,
    ack_from: Option<u32>,
    hello: Hello,
    say_hello_back: bool,
    /// Sequence number of the first message without HELLO of the peer's
    /// current session (it stops saying HELLO once answered).
    peer_done_at: Option<u32>,
    /// The peer answered our HELLO, or restarted; its next ACK shows from
    /// which of our sequence numbers it took up the session: what we sent
    /// before was never seen and no NACK will ever ask for it.
    check_unseen: bool,
    // objects and queues
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<FlowKey, u32>,
    tx: VecDeque<TxItem>,
    /// The resend queue, in sequence order (numbers are taken as items
    /// are sent), with stale entries of objects that moved on.
    rs: VecDeque<RsItem>,
    /// Entries of `rs` that are not stale.
    rs_live: usize,
    /// Live ACK messages in `rs`: the rest (data, NACK, RESYNC) awaits an
    /// answer that makes progress, which the fast probe hurries.
    rs_acks: usize,
    /// Live NACK messages in `rs`. ACKs and NACKs name the peer's
    /// sequence numbers: a new peer session makes them stale.
    rs_nacks: usize,
    rs_dropped: u64,
    /// `rs` entries visited or moved by its walks: the work a peer's
    /// requests cost (tests check it stays linear).
    rs_work: u64,
    /// Resend requests (sequence ranges) waiting for `resend_budget`.
    resend_pending: VecDeque<(u32, u32)>,
    resend_budget: ResendBudget,
    /// Counts the peer's sessions: control messages of `rs` belong to one.
    session: u16,
    /// A transmission is under way (see [`TX_BATCH`]), started then.
    transmitting: Option<Instant>,
    // timers
    alive_at: Option<Instant>,
    /// Interval of the next probe (see [`PROBE_INTERVAL`]).
    probe: Duration,
    /// Sequence numbers of the NACKs we sent, oldest first (some since
    /// acknowledged): a NACK still unacknowledged when a probe fires
    /// after it is sent again (the peer cannot ask for a NACK it lost
    /// until it hears from us, and may lose that request too).
    nacks_sent: VecDeque<u32>,
    /// Our next sequence number when the last probe fired.
    probe_mark: u32,
    /// The last bulk send a peer caused, and one it asked for since.
    peer_bulk_at: Option<Instant>,
    peer_bulk_due: Option<Instant>,
    refresh: BinaryHeap<Reverse<(Instant, u32, u32, u32)>>,
    rng: u64,
    // links
    links: Vec<LinkRt>,
    active: usize,
    packer: Packer,
    auth: Option<Auth>,
    last_auth_log: Option<Instant>,
    /// When "external cache full" was last logged.
    last_full_log: Option<Instant>,
    /// When dropped datagrams were last logged.
    last_drop_log: Option<Instant>,
    external: ExternalCache,
    actions: VecDeque<Action>,
    stats: NetStats,
}

impl Engine {
    /// An engine for a validated config (see `SyncConfig::validate`).
    pub fn new(cfg: &SyncConfig, start: Start) -> Engine {
        let links: Vec<LinkRt> = cfg
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mtu = start
                    .mtus
                    .get(i)
                    .copied()
                    .or(l.mtu)
                    .unwrap_or(1500)
                    .clamp(576, wire::MAX_DATAGRAM);
                let auth = if start.auth_key.is_some() {
                    super::auth::AUTH_LEN
                } else {
                    0
                };
                LinkRt {
                    name: l.interface.clone(),
                    kind: l.kind_name(),
                    limit: mtu - l.header_overhead() - auth,
                    expected: l.expected_source(),
                    up: true,
                    stats: LinkStats::default(),
                }
            })
            .collect();
        let active = cfg.default_link().min(links.len().saturating_sub(1));
        let limit = links.get(active).map_or(1472, |l| l.limit);
        let lifetime = (cfg.mode == ModeKind::Alarm)
            .then(|| Duration::from_secs(cfg.cache_timeout.max(1) as u64));
        let mut e = Engine {
            mode: cfg.mode,
            opts: EncodeOpts {
                omit_timeout: cfg.commit_timeout.is_some(),
                tcp_window_tracking: cfg.tcp_window_tracking,
                quirk: cfg.peer_endianness,
            },
            quirk: cfg.peer_endianness,
            window_size: cfg.ack_window_size.max(1),
            rs_max: cfg.resend_queue_size.max(1),
            refresh_time: cfg.refresh_time.max(1),
            disable_internal: cfg.disable_internal_cache && cfg.mode == ModeKind::Notrack,
            disable_external: cfg.disable_external_cache,
            next_seq: start.seq,
            last_recv: None,
            window: cfg.ack_window_size.max(1),
            ack_from: None,
            hello: Hello::Init,
            say_hello_back: false,
            peer_done_at: None,
            check_unseen: false,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            tx: VecDeque::new(),
            rs: VecDeque::new(),
            rs_live: 0,
            rs_acks: 0,
            rs_nacks: 0,
            rs_dropped: 0,
            rs_work: 0,
            resend_pending: VecDeque::new(),
            resend_budget: ResendBudget::new(cfg.resend_queue_size.max(1), start.now),
            session: 0,
            transmitting: None,
            alive_at: None,
            probe: PROBE_INTERVAL,
            nacks_sent: VecDeque::new(),
            probe_mark: start.seq,
            peer_bulk_at: None,
            peer_bulk_due: None,
            refresh: BinaryHeap::new(),
            rng: start.seed | 1,
            links,
            active,
            packer: Packer::new(limit),
            auth: start
                .auth_key
                .as_deref()
                .map(|k| Auth::new(k, start.auth_seed)),
            last_auth_log: None,
            last_full_log: None,
            last_drop_log: None,
            external: ExternalCache::new(cfg.peer_endianness, lifetime, cfg.external_limit),
            actions: VecDeque::new(),
            stats: NetStats::default(),
        };
        if e.mode != ModeKind::Alarm {
            e.alive_at = Some(start.now + ALIVE_INTERVAL);
        }
        if cfg.startup_resync {
            e.request_resync();
        }
        e
    }

    // ---------------------------------------------------------------
    // objects

    fn obj(&self, idx: u32, generation: u32) -> Option<&Obj> {
        self.slots
            .get(idx as usize)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.obj.as_ref())
    }

    fn obj_mut(&mut self, idx: u32) -> Option<&mut Obj> {
        self.slots
            .get_mut(idx as usize)
            .and_then(|s| s.obj.as_mut())
    }

    fn generation(&self, idx: u32) -> u32 {
        self.slots.get(idx as usize).map_or(0, |s| s.generation)
    }

    fn alloc(&mut self, o: Obj) -> u32 {
        if let Some(i) = self.free.pop() {
            self.slots[i as usize].obj = Some(o);
            i
        } else {
            self.slots.push(Slot {
                generation: 0,
                obj: Some(o),
            });
            (self.slots.len() - 1) as u32
        }
    }

    fn release(&mut self, idx: u32) {
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let Some(o) = slot.obj.take() else { return };
        slot.generation = slot.generation.wrapping_add(1);
        if !o.transient && self.index.get(&o.key) == Some(&idx) {
            self.index.remove(&o.key);
        }
        self.free.push(idx);
    }

    /// Called when an object leaves the queues: dead or transient objects
    /// are gone then.
    fn unqueued(&mut self, idx: u32) {
        let gone = match self.obj_mut(idx) {
            Some(o) => {
                o.queued = Queued::None;
                o.status == Status::Dead || o.transient
            }
            None => false,
        };
        if gone {
            self.release(idx);
        }
    }

    fn enqueue(&mut self, idx: u32) {
        let generation = self.generation(idx);
        let Some(o) = self.obj_mut(idx) else { return };
        match o.queued {
            Queued::Tx => return,
            Queued::Rs(_) => {
                o.queued = Queued::Tx;
                self.rs_live = self.rs_live.saturating_sub(1);
            }
            Queued::None => o.queued = Queued::Tx,
        }
        self.tx.push_back(TxItem::Obj(idx, generation));
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn arm_refresh(&mut self, now: Instant, idx: u32) {
        if self.mode != ModeKind::Alarm {
            return;
        }
        let secs = self.rand() % self.refresh_time as u64 + 1;
        let usecs = (self.rand() % 5 + 1) * 200_000 - 1;
        let at = now + Duration::from_secs(secs) + Duration::from_micros(usecs);
        let generation = self.generation(idx);
        let Some(o) = self.obj_mut(idx) else { return };
        o.alarm = o.alarm.wrapping_add(1);
        let a = o.alarm;
        self.refresh.push(Reverse((at, idx, generation, a)));
    }

    fn encode(&mut self, f: &Flow) -> Option<Box<[u8]>> {
        let mut m = Vec::with_capacity(128);
        match ct::encode_msg(ty::CT_NEW, f, &self.opts, &mut m) {
            Ok(()) => Some(m.into_boxed_slice()),
            Err(_) => {
                self.stats.send_malformed += 1;
                None
            }
        }
    }

    fn transient(&mut self, msg: Box<[u8]>, key: FlowKey, status: Status) {
        let idx = self.alloc(Obj {
            key,
            msg,
            status,
            queued: Queued::None,
            transient: true,
            alarm: 0,
        });
        self.enqueue(idx);
    }

    /// A kernel event of a flow to replicate (the daemon has filtered it
    /// and dropped events its own commits caused). Pass the flow as the
    /// daemon's cache now holds it (updates merged), so messages carry
    /// the whole current state. Queues a message; call `transmit`.
    pub fn on_event(&mut self, now: Instant, kind: EventKind, f: &Flow) {
        let key = FlowKey::of(f);
        if self.disable_internal {
            if let Some(msg) = self.encode(f) {
                let s = match kind {
                    EventKind::New => Status::New,
                    EventKind::Update => Status::Alive,
                    EventKind::Destroy => Status::Dead,
                };
                self.transient(msg, key, s);
            }
            return;
        }
        let existing = self.index.get(&key).copied();
        match kind {
            EventKind::Destroy => {
                let Some(idx) = existing else { return };
                let Some(o) = self.obj_mut(idx) else { return };
                if o.status == Status::Dead {
                    return;
                }
                o.status = Status::Dead;
                o.alarm = o.alarm.wrapping_add(1); // no more refreshes
                self.enqueue(idx);
            }
            EventKind::New | EventKind::Update => {
                let Some(msg) = self.encode(f) else { return };
                match existing {
                    Some(idx) => {
                        let Some(o) = self.obj_mut(idx) else { return };
                        // an update of a live object keeps it ALIVE; NEW,
                        // or anything for a dead one, starts it anew
                        o.status = if kind == EventKind::Update && o.status != Status::Dead {
                            Status::Alive
                        } else {
                            Status::New
                        };
                        o.msg = msg;
                        self.arm_refresh(now, idx);
                        self.enqueue(idx);
                    }
                    None => {
                        let idx = self.alloc(Obj {
                            key,
                            msg,
                            status: Status::New,
                            queued: Queued::None,
                            transient: false,
                            alarm: 0,
                        });
                        self.index.insert(key, idx);
                        self.arm_refresh(now, idx);
                        self.enqueue(idx);
                    }
                }
            }
        }
    }

    /// A flow of a kernel dump made for [`Action::DumpKernelForBulk`]:
    /// sent once as NEW.
    pub fn bulk_flow(&mut self, f: &Flow) {
        if let Some(msg) = self.encode(f) {
            self.transient(msg, FlowKey::of(f), Status::New);
        }
    }

    /// `-B`: send every replicated flow to the peer (FTFW, NOTRACK).
    pub fn send_bulk(&mut self) {
        if self.mode == ModeKind::Alarm {
            return;
        }
        self.log(LogLevel::Notice, "sending bulk update".into());
        if self.disable_internal {
            self.actions.push_back(Action::DumpKernelForBulk);
            return;
        }
        let live: Vec<u32> = self.index.values().copied().collect();
        for idx in live {
            self.enqueue(idx);
        }
    }

    /// `-n`: ask the peer to send us everything (FTFW, NOTRACK).
    pub fn request_resync(&mut self) {
        if self.mode == ModeKind::Alarm {
            return;
        }
        self.log(LogLevel::Notice, "resync requested".into());
        self.tx.push_back(TxItem::Ctl {
            flags: flag::RESYNC,
            from: 0,
            to: 0,
        });
    }

    /// `-f internal`: forget every replicated flow (nothing is sent).
    pub fn flush_internal(&mut self) {
        self.tx.retain(|t| matches!(t, TxItem::Ctl { .. }));
        let mut rs = std::mem::take(&mut self.rs);
        rs.retain(|r| matches!(r, RsItem::Ctl { .. }) && self.rs_entry_live(r));
        self.rs = rs;
        self.rs_live = self.rs.len();
        let count = |f: u8| {
            self.rs
                .iter()
                .filter(|r| matches!(r, RsItem::Ctl { flags, .. } if *flags == f))
                .count()
        };
        self.rs_acks = count(flag::ACK);
        self.rs_nacks = count(flag::NACK);
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.refresh.clear();
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.actions.push_back(Action::Log { level, text });
    }

    // ---------------------------------------------------------------
    // sending

    fn hello_flags(&mut self) -> u8 {
        if self.mode != ModeKind::Ftfw {
            return 0;
        }
        let mut f = 0;
        if self.hello == Hello::Init {
            self.hello = Hello::Say;
        }
        if self.hello == Hello::Say {
            f |= flag::HELLO;
        }
        if self.say_hello_back {
            f |= flag::HELLO_BACK;
            self.say_hello_back = false;
        }
        f
    }

    fn take_seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = s.wrapping_add(1);
        s
    }

    fn emit(&mut self, msg: &[u8]) {
        if let Some(d) = self.packer.push(msg) {
            self.send_datagram(d);
        }
    }

    fn send_datagram(&mut self, d: Vec<u8>) {
        let d = match &mut self.auth {
            Some(a) => a.seal(&d),
            None => d,
        };
        let link = self.active;
        if let Some(l) = self.links.get_mut(link) {
            l.stats.bytes_sent += d.len() as u64;
            l.stats.pkts_sent += 1;
        }
        self.actions.push_back(Action::Send { link, datagram: d });
    }

    fn push_rs(&mut self, item: RsItem) {
        while self.rs_live >= self.rs_max {
            // full: the oldest element goes, as in conntrackd
            let Some(old) = self.rs.pop_front() else {
                self.rs_live = 0;
                self.rs_acks = 0;
                self.rs_nacks = 0;
                break;
            };
            self.rs_work += 1;
            if self.rs_forget(old, false) {
                self.rs_dropped += 1;
            }
        }
        match item {
            RsItem::Ctl { flags, .. } if flags == flag::ACK => self.rs_acks += 1,
            RsItem::Ctl { flags, seq, .. } if flags == flag::NACK => {
                self.rs_nacks += 1;
                self.nacks_sent.push_back(seq);
                if self.nacks_sent.len() > 2 * self.rs_nacks + 64 {
                    self.forget_acked_nacks();
                }
            }
            _ => {}
        }
        self.rs.push_back(item);
        self.rs_live += 1;
        // objects that moved back to the send queue leave stale entries
        // behind; drop them before they outnumber the live ones
        if self.rs.len() > 2 * self.rs_live + 64 {
            self.rs_work += self.rs.len() as u64;
            let mut rs = std::mem::take(&mut self.rs);
            rs.retain(|it| self.rs_entry_live(it));
            self.rs = rs;
        }
    }

    fn rs_item_live(&self, idx: u32, generation: u32, seq: u32) -> bool {
        self.obj(idx, generation)
            .is_some_and(|o| o.queued == Queued::Rs(seq))
    }

    /// An entry of `rs` that still counts: an object not moved on since,
    /// a resync request, an ACK or NACK of the current peer session.
    fn rs_entry_live(&self, it: &RsItem) -> bool {
        match *it {
            RsItem::Obj {
                idx,
                generation,
                seq,
            } => self.rs_item_live(idx, generation, seq),
            RsItem::Ctl { flags, session, .. } => flags == flag::RESYNC || session == self.session,
        }
    }

    /// An entry taken out of `rs`: when live, it leaves the counts and is
    /// sent again (`resend`) or let go (acknowledged, or dropped from a
    /// full queue). Returns whether it was live.
    fn rs_forget(&mut self, it: RsItem, resend: bool) -> bool {
        if !self.rs_entry_live(&it) {
            return false;
        }
        self.rs_live = self.rs_live.saturating_sub(1);
        match it {
            RsItem::Obj {
                idx, generation, ..
            } => {
                if resend {
                    if let Some(o) = self.obj_mut(idx) {
                        o.queued = Queued::Tx;
                    }
                    self.stats.resent += 1;
                    self.tx.push_back(TxItem::Obj(idx, generation));
                } else {
                    self.unqueued(idx);
                }
            }
            RsItem::Ctl {
                flags, from, to, ..
            } => {
                if flags == flag::ACK {
                    self.rs_acks = self.rs_acks.saturating_sub(1);
                } else if flags == flag::NACK {
                    self.rs_nacks = self.rs_nacks.saturating_sub(1);
                }
                if resend {
                    self.tx.push_back(TxItem::Ctl { flags, from, to });
                }
            }
        }
        true
    }

    /// The peer owes us an answer: data or a NACK/RESYNC of ours is not
    /// acknowledged yet.
    fn awaiting_peer(&self) -> bool {
        self.mode == ModeKind::Ftfw && self.rs_live > self.rs_acks
    }

    /// Sends what is queued: call after every batch of input. Produces
    /// [`Action::Send`]s (many messages per datagram), at most
    /// [`TX_BATCH`] at a time: [`Engine::poll_action`] packs the next ones
    /// as the daemon takes them.
    pub fn transmit(&mut self, now: Instant) {
        if self.tx.is_empty() && self.transmitting.is_none() {
            return;
        }
        self.transmitting = Some(now);
        self.pack();
    }

    /// Packs queued messages into datagrams until [`TX_BATCH`] of them
    /// wait to be taken or the send queue is empty (which ends the
    /// transmission).
    fn pack(&mut self) {
        let Some(now) = self.transmitting else {
            return;
        };
        let limit = self.links.get(self.active).map_or(1472, |l| l.limit);
        if self.packer.limit() != limit {
            if let Some(d) = self.packer.take() {
                self.send_datagram(d);
            }
            self.packer = Packer::new(limit);
        }
        let mut buf = Vec::with_capacity(256);
        while self.actions.len() < TX_BATCH {
            let Some(item) = self.tx.pop_front() else {
                break;
            };
            match item {
                TxItem::Ctl { flags, from, to } => {
                    let f = flags | self.hello_flags();
                    let seq = self.take_seq();
                    buf.clear();
                    wire::put_ctl(&mut buf, f, seq, from, to);
                    self.stats.ctl_sent += 1;
                    let msg = std::mem::take(&mut buf);
                    self.emit(&msg);
                    buf = msg;
                    let ranged = flags & (flag::ACK | flag::NACK | flag::RESYNC) != 0;
                    if self.mode == ModeKind::Ftfw && ranged {
                        self.push_rs(RsItem::Ctl {
                            flags,
                            session: self.session,
                            from,
                            to,
                            seq,
                        });
                    }
                }
                TxItem::Obj(idx, generation) => {
                    let (t, msg) = match self.obj(idx, generation) {
                        Some(o) if o.queued == Queued::Tx => {
                            let t = match o.status {
                                Status::New => ty::CT_NEW,
                                Status::Alive => ty::CT_UPD,
                                Status::Dead => ty::CT_DEL,
                            };
                            (t, o.msg.clone())
                        }
                        _ => continue,
                    };
                    let f = self.hello_flags();
                    let seq = self.take_seq();
                    buf.clear();
                    buf.extend_from_slice(&msg);
                    buf[0] = (wire::VERSION << 4) | t;
                    wire::stamp(&mut buf, f, seq);
                    self.stats.state_sent += 1;
                    let msg = std::mem::take(&mut buf);
                    self.emit(&msg);
                    buf = msg;
                    if self.mode == ModeKind::Ftfw {
                        if let Some(o) = self.obj_mut(idx) {
                            o.queued = Queued::Rs(seq);
                        }
                        self.push_rs(RsItem::Obj {
                            idx,
                            generation,
                            seq,
                        });
                    } else {
                        self.unqueued(idx);
                    }
                }
            }
        }
        if !self.tx.is_empty() {
            return;
        }
        self.transmitting = None;
        if let Some(d) = self.packer.take() {
            self.send_datagram(d);
        }
        if self.mode != ModeKind::Alarm {
            let wait = if self.awaiting_peer() {
                self.probe
            } else {
                ALIVE_INTERVAL
            };
            self.alive_at = Some(now + wait);
        }
    }

    // ---------------------------------------------------------------
    // timers

    /// When [`Engine::on_timeout`] must be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.alive_at,
            self.refresh.peek().map(|r| r.0.0),
            self.external.next_expiry(),
            self.peer_bulk_due,
            (!self.resend_pending.is_empty()).then(|| self.resend_budget.next_serving()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers that are due: ALIVE/ACK and probes (FTFW,
    /// NOTRACK), resends and bulk sends that waited for their budget,
    /// ALARM refreshes, external cache expiry. Call `transmit` afterwards.
    pub fn on_timeout(&mut self, now: Instant) {
        if let Some(at) = self.alive_at
            && at <= now
        {
            match (self.mode, self.ack_from, self.last_recv) {
                (ModeKind::Ftfw, Some(from), Some(last)) => {
                    self.tx.push_back(TxItem::Ctl {
                        flags: flag::ACK,
                        from,
                        to: last,
                    });
                    self.ack_from = None;
                }
                _ => self.tx.push_back(TxItem::Ctl {
                    flags: flag::ALIVE,
                    from: 0,
                    to: 0,
                }),
            }
            if self.awaiting_peer() {
                // no answer to the last probe yet: the next one waits longer
                self.probe = (self.probe * 2).min(ALIVE_INTERVAL);
                self.renack();
            }
            self.probe_mark = self.next_seq;
            self.alive_at = Some(now + ALIVE_INTERVAL);
        }
        if !self.resend_pending.is_empty() {
            self.run_resends(now);
        }
        if self.peer_bulk_due.is_some_and(|at| at <= now) {
            self.peer_bulk_due = None;
            self.peer_bulk_at = Some(now);
            self.send_bulk();
        }
        while let Some(Reverse((at, idx, generation, alarm))) = self.refresh.peek().copied() {
            if at > now {
                break;
            }
            self.refresh.pop();
            let live = self
                .obj(idx, generation)
                .is_some_and(|o| o.alarm == alarm && o.status != Status::Dead);
            if live {
                self.arm_refresh(now, idx);
                self.enqueue(idx);
            }
        }
        self.external.expire(now);
    }

    // ---------------------------------------------------------------
    // receiving

    fn track_seq(&mut self, seq: u32) -> SeqState {
        let Some(last) = self.last_recv else {
            return SeqState::Unset;
        };
        let exp = last.wrapping_add(1);
        if seq == exp {
            SeqState::InSync
        } else if after(seq, exp) {
            self.stats.lost += seq.wrapping_sub(exp) as u64;
            SeqState::After
        } else {
            self.stats.before += 1;
            SeqState::Before
        }
    }

    /// Sends again the NACKs sent before the last probe that the peer has
    /// not acknowledged.
    fn renack(&mut self) {
        while let Some(&seq) = self.nacks_sent.front() {
            if !before(seq, self.probe_mark) {
                break;
            }
            self.nacks_sent.pop_front();
            let (lo, hi) = self.rs_span(seq, seq);
            if hi > lo && matches!(self.rs[lo], RsItem::Ctl { .. }) {
                for it in self.rs_take(lo, hi) {
                    self.rs_forget(it, true);
                }
            }
        }
    }

    /// Drops the numbers of acknowledged NACKs from `nacks_sent`.
    fn forget_acked_nacks(&mut self) {
        let mut sent = std::mem::take(&mut self.nacks_sent);
        self.rs_work += sent.len() as u64;
        sent.retain(|&seq| {
            let (lo, hi) = self.rs_span(seq, seq);
            hi > lo && self.rs_entry_live(&self.rs[lo])
        });
        self.nacks_sent = sent;
    }

    /// Indexes `lo..hi` of the `rs` entries numbered `from..=to`: two
    /// binary searches, `rs` being in sequence order.
    fn rs_span(&self, from: u32, to: u32) -> (usize, usize) {
        let lo = self.rs.partition_point(|it| before(it.seq(), from));
        let hi = self.rs.partition_point(|it| !after(it.seq(), to));
        (lo, hi.max(lo))
    }

    /// Takes `rs[lo..hi]` out, counting the work: the entries taken and
    /// those the deque moves to close the gap.
    fn rs_take(&mut self, lo: usize, hi: usize) -> Vec<RsItem> {
        let moved = lo.min(self.rs.len() - hi);
        self.rs_work += (hi - lo + moved) as u64;
        self.rs.drain(lo..hi).collect()
    }

    /// The peer acknowledged `from..=to`: those entries leave `rs`.
    fn rs_ack(&mut self, from: u32, to: u32) {
        let (lo, hi) = self.rs_span(from, to);
        for it in self.rs_take(lo, hi) {
            self.rs_forget(it, false);
        }
    }

    /// The peer asks for `from..=to` again (a NACK, or what it never saw
    /// of an earlier session): queued behind earlier requests and sent as
    /// the resend budget allows.
    fn resend(&mut self, now: Instant, from: u32, to: u32) {
        if before(to, from) {
            return;
        }
        let full = self.resend_pending.len() >= MAX_PENDING_RESENDS;
        match self.resend_pending.back_mut() {
            Some(last) if full => {
                // too many waiting: one range covers both (it may resend a
                // little more than asked, never less)
                if before(from, last.0) {
                    last.0 = from;
                }
                if after(to, last.1) {
                    last.1 = to;
                }
            }
            _ => self.resend_pending.push_back((from, to)),
        }
        self.run_resends(now);
    }

    /// Serves waiting resend requests while the budget lasts; what is
    /// left waits for the next token (see [`Engine::next_deadline`]).
    fn run_resends(&mut self, now: Instant) {
        self.resend_budget.refill(now);
        while let Some(&(from, to)) = self.resend_pending.front() {
            let (lo, hi) = self.rs_span(from, to);
            let mut end = lo;
            let mut objects = 0;
            while end < hi {
                let it = self.rs[end];
                if matches!(it, RsItem::Obj { .. }) && self.rs_entry_live(&it) {
                    if objects == self.resend_budget.tokens {
                        break;
                    }
                    objects += 1;
                }
                end += 1;
            }
            self.resend_budget.tokens -= objects;
            for it in self.rs_take(lo, end) {
                self.rs_forget(it, true);
            }
            if end < hi {
                // out of budget: the rest of the range waits
                if let Some(front) = self.resend_pending.front_mut() {
                    front.0 = self.rs[lo].seq();
                }
                return;
            }
            self.resend_pending.pop_front();
        }
    }

    /// A HELLO with this sequence starts a new peer session: first
    /// contact, a HELLO numbered after a message without one (a peer says
    /// HELLO only until it is answered, so this is a new instance), or a
    /// number far from the expected one (a restart).
    fn new_session(&self, seq: u32) -> bool {
        match self.last_recv {
            None => true,
            Some(_) if self.peer_done_at.is_some_and(|d| after(seq, d)) => true,
            Some(last) => {
                let d = seq.wrapping_sub(last.wrapping_add(1)) as i32;
                !(-SESSION_SLACK..=SESSION_JUMP).contains(&d)
            }
        }
    }

    /// A new peer session: our ACKs and NACKs named the old one's
    /// sequence numbers and go stale; the objects it did not acknowledge
    /// are sent again, as the resend budget allows.
    fn requeue_rs(&mut self, now: Instant) {
        self.rs_live = self.rs_live.saturating_sub(self.rs_acks + self.rs_nacks);
        self.rs_acks = 0;
        self.rs_nacks = 0;
        self.session = self.session.wrapping_add(1);
        if self.session == 0 {
            // numbers come round again: no entry of an old session may
            // pass for one of the new
            self.rs_work += self.rs.len() as u64;
            let mut rs = std::mem::take(&mut self.rs);
            rs.retain(|it| !matches!(it, RsItem::Ctl { flags, .. } if *flags != flag::RESYNC));
            self.rs = rs;
        }
        self.resend_pending.clear();
        if let (Some(first), Some(last)) = (self.rs.front(), self.rs.back()) {
            let (first, last) = (first.seq(), last.seq());
            self.resend(now, first, last);
        }
    }

    /// The peer asked for everything (RESYNC), or restarted (`why` says
    /// which, for the log): a bulk send, at most one per
    /// [`PEER_BULK_INTERVAL`] (one asked for sooner is sent when the
    /// interval ends; requests while one waits add nothing, not even a
    /// log line).
    fn peer_bulk(&mut self, now: Instant, why: &str) {
        if self.peer_bulk_due.is_some() {
            return;
        }
        self.log(LogLevel::Notice, why.into());
        match self.peer_bulk_at {
            Some(at) if now < at + PEER_BULK_INTERVAL => {
                self.peer_bulk_due = Some(at + PEER_BULK_INTERVAL);
            }
            _ => {
                self.peer_bulk_at = Some(now);
                self.send_bulk();
            }
        }
    }

    fn bulk_on_request(&mut self, now: Instant) {
        self.peer_bulk(now, "resync requested by other node");
    }

    fn ftfw_digest(&mut self, now: Instant, h: &Header) -> Class {
        if h.is_data() {
            Class::Data
        } else if h.is_ack() {
            if before(h.to, h.from) {
                return Class::Bad;
            }
            if std::mem::take(&mut self.check_unseen) {
                // sent before the peer's session began (lost while it
                // restarted, or ahead of the HELLO it took): send again.
                // A lost `-n` request would otherwise never be repeated.
                if let Some(first) = self.rs.front().map(RsItem::seq)
                    && before(first, h.from)
                {
                    self.resend(now, first, h.from.wrapping_sub(1));
                }
            }
            self.rs_ack(h.from, h.to);
            Class::Ctl
        } else if h.is_nack() {
            if before(h.to, h.from) {
                return Class::Bad;
            }
            self.resend(now, h.from, h.to);
            Class::Ctl
        } else {
            self.resync_or_alive(now, h)
        }
    }

    /// RESYNC (answered with a bulk send) and ALIVE are control messages
    /// in FTFW and NOTRACK; anything else is a bad header.
    fn resync_or_alive(&mut self, now: Instant, h: &Header) -> Class {
        if h.is_resync() {
            self.bulk_on_request(now);
            Class::Ctl
        } else if h.is_alive() {
            Class::Ctl
        } else {
            Class::Bad
        }
    }

    fn ftfw_recv(&mut self, now: Instant, h: &Header) -> Class {
        let mut bypass = false;
        if h.is_hello_back() && self.hello == Hello::Say {
            self.hello = Hello::Done;
            self.check_unseen = true;
        }
        if h.is_hello() {
            self.say_hello_back = true;
            // conntrackd treats every HELLO message as a restarted peer:
            // it stops tracking sequence numbers and drops its resend
            // queue each time, so data sent during the handshake is lost
            // for good if the link loses or reorders it. We do that only
            // for a new peer session (first contact, or a sequence far
            // from the expected one); a HELLO in sequence is tracked
            // (gaps NACKed) like any message.
            if self.new_session(h.seq) {
                let restarted = self.last_recv.is_some();
                // what was not acknowledged yet belongs to the old
                // instance: acknowledging a range from there would cover
                // numbers of the new one it never delivered
                self.ack_from = None;
                self.window = self.window_size;
                self.peer_done_at = None;
                // the peer knows nothing of what we sent: send the unacked
                // objects again with new sequence numbers
                self.requeue_rs(now);
                // and it takes up our sequence from the first message it
                // receives: what is lost before that is never NACKed
                self.check_unseen = true;
                bypass = true;
                if restarted {
                    // a restarted peer lost what we had sent it before:
                    // send it everything, as if it had asked (`-n`)
                    self.peer_bulk(now, "the other node restarted");
                }
            }
        }
        let state = if bypass {
            SeqState::InSync
        } else {
            self.track_seq(h.seq)
        };
        let class = match state {
            SeqState::After => {
                let class = self.ftfw_digest(now, h);
                if class != Class::Bad {
                    let exp = self.last_recv.map_or(h.seq, |l| l.wrapping_add(1));
                    if let Some(from) = self.ack_from.take() {
                        self.tx.push_back(TxItem::Ctl {
                            flags: flag::ACK,
                            from,
                            to: exp.wrapping_sub(1),
                        });
                    }
                    self.tx.push_back(TxItem::Ctl {
                        flags: flag::NACK,
                        from: exp,
                        to: h.seq.wrapping_sub(1),
                    });
                    self.window = self.window_size - 1;
                    self.ack_from = Some(h.seq);
                }
                class
            }
            SeqState::Before => Class::Drop,
            SeqState::Unset | SeqState::InSync => {
                let class = self.ftfw_digest(now, h);
                if class != Class::Bad {
                    if self.ack_from.is_none() {
                        self.ack_from = Some(h.seq);
                    }
                    self.window = self.window.saturating_sub(1);
                    if self.window == 0 {
                        let from = self.ack_from.take().unwrap_or(h.seq);
                        self.tx.push_back(TxItem::Ctl {
                            flags: flag::ACK,
                            from,
                            to: h.seq,
                        });
                        self.window = self.window_size;
                    }
                }
                class
            }
        };
        if matches!(class, Class::Data | Class::Ctl) {
            self.last_recv = Some(h.seq);
            // the peer is there: probe it at the fast pace again
            self.probe = PROBE_INTERVAL;
            if !h.is_hello() && self.peer_done_at.is_none() {
                self.peer_done_at = Some(h.seq);
            }
        }
        class
    }

    fn notrack_recv(&mut self, now: Instant, h: &Header) -> Class {
        self.track_seq(h.seq);
        let class = if h.is_data() {
            Class::Data
        } else {
            self.resync_or_alive(now, h)
        };
        if class != Class::Bad {
            self.last_recv = Some(h.seq);
        }
        class
    }

    fn alarm_recv(&mut self, h: &Header) -> Class {
        if h.flags != 0 {
            return Class::Ctl;
        }
        self.track_seq(h.seq);
        Class::Data
    }

    fn malformed(&mut self, e: RecvError) {
        self.stats.malformed += 1;
        match e {
            RecvError::Truncated => self.stats.truncated += 1,
            RecvError::BadSize => self.stats.bad_size += 1,
            RecvError::BadVersion => self.stats.bad_version += 1,
        }
    }

    /// Sends the auth exchange's datagrams (challenges, answers) on the
    /// link the datagram that caused them came from.
    fn auth_replies(&mut self, link: usize) {
        while let Some(d) = self.auth.as_mut().and_then(Auth::take_reply) {
            if let Some(l) = self.links.get_mut(link) {
                l.stats.bytes_sent += d.len() as u64;
                l.stats.pkts_sent += 1;
            }
            self.actions.push_back(Action::Send { link, datagram: d });
        }
    }

    fn auth_log(&mut self, now: Instant, e: AuthError, link: usize) {
        match e {
            AuthError::Missing => self.stats.auth_missing += 1,
            AuthError::BadMac => self.stats.auth_bad_mac += 1,
            AuthError::Replay => self.stats.auth_replay += 1,
            AuthError::Reflected => self.stats.auth_reflected += 1,
            AuthError::Unverified => {
                // every start of a peer goes through this: counted only
                self.stats.auth_unverified += 1;
                return;
            }
        }
        // at most one line every 10 s
        if self
            .last_auth_log
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        self.last_auth_log = Some(now);
        let why = match e {
            AuthError::Missing => "without authentication (peer without Auth, or conntrackd?)",
            AuthError::BadMac => "with a bad MAC (wrong key or altered)",
            AuthError::Replay => "replayed",
            AuthError::Reflected => "that we sent (sent back to us)",
            AuthError::Unverified => "from a sender not verified yet",
        };
        let name = self
            .links
            .get(link)
            .map_or("", |l| l.name.as_str())
            .to_string();
        self.log(
            LogLevel::Warning,
            format!("sync: dropped datagram on {name} {why}"),
        );
    }

    /// A datagram received on link `link` from `from`. Applies what it
    /// carries; control replies are queued (call `transmit`).
    pub fn on_datagram(
        &mut self,
        now: Instant,
        link: usize,
        datagram: &[u8],
        from: Option<IpAddr>,
    ) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.stats.bytes_recv += datagram.len() as u64;
        l.stats.pkts_recv += 1;
        if let (Some(want), Some(got)) = (l.expected, from)
            && want != got
        {
            self.stats.wrong_source += 1;
            return;
        }
        let opened = self.auth.as_mut().map(|a| a.open(now, datagram));
        self.auth_replies(link);
        let msgs = match opened {
            None => datagram,
            Some(Ok(Opened::Messages(m))) => m,
            Some(Ok(Opened::Verified(id))) => {
                self.log(
                    LogLevel::Notice,
                    format!("sync: peer instance {id:016x} authenticated"),
                );
                return;
            }
            Some(Ok(Opened::Answered)) => {
                // the peer dropped what we sent before our answer: send
                // again what it has not acknowledged (it takes up our
                // sequence from what it accepts first)
                if self.mode == ModeKind::Ftfw
                    && let (Some(first), Some(last)) = (self.rs.front(), self.rs.back())
                {
                    let (first, last) = (first.seq(), last.seq());
                    self.resend(now, first, last);
                }
                return;
            }
            Some(Ok(Opened::Handled)) => return,
            Some(Err(e)) => {
                self.auth_log(now, e, link);
                return;
            }
        };
        for m in Messages::new(msgs) {
            match m {
                Ok(m) => self.on_message(now, link, m.header, m.body()),
                Err(e) => self.malformed(e),
            }
        }
    }

    fn on_message(&mut self, now: Instant, link: usize, h: Header, body: &[u8]) {
        let class = match self.mode {
            ModeKind::Ftfw => self.ftfw_recv(now, &h),
            ModeKind::Notrack => self.notrack_recv(now, &h),
            ModeKind::Alarm => self.alarm_recv(&h),
        };
        match class {
            Class::Data => self.active = link,
            Class::Ctl => {
                self.active = link;
                self.stats.ctl_recv += 1;
                return;
            }
            Class::Bad => {
                self.stats.malformed += 1;
                self.stats.bad_header += 1;
                return;
            }
            Class::Drop => return,
        }
        if h.ty > ty::STATE_MAX {
            self.stats.malformed += 1;
            self.stats.bad_type += 1;
            return;
        }
        if h.ty > ty::CT_DEL {
            self.stats.exp_ignored += 1;
            return;
        }
        let flow = match ct::decode_attrs(body, self.quirk) {
            Ok(f) => f,
            Err(_) => {
                self.stats.malformed += 1;
                self.stats.bad_payload += 1;
                return;
            }
        };
        self.stats.state_recv += 1;
        if self.disable_external {
            let op = match h.ty {
                ty::CT_NEW => EventKind::New,
                ty::CT_UPD => EventKind::Update,
                _ => EventKind::Destroy,
            };
            self.actions.push_back(Action::Inject {
                op,
                flow: Box::new(flow),
            });
        } else {
            let full = self.external.stats().full;
            self.external.apply(now, h.ty, &flow, body);
            if self.external.stats().full > full
                && self
                    .last_full_log
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
            {
                self.last_full_log = Some(now);
                let n = self.external.len();
                self.log(
                    LogLevel::Warning,
                    format!("sync: external cache full ({n} flows, HashLimit): new flows of the peer dropped"),
                );
            }
        }
    }

    // ---------------------------------------------------------------
    // links

    /// The link's interface went up or down (the daemon watches
    /// rtnetlink). Losing the active link makes the first other link
    /// that is up the active one.
    pub fn set_link_up(&mut self, link: usize, up: bool) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        let was_up = std::mem::replace(&mut l.up, up);
        // the daemon reports every link's state every second: act (and
        // log) on changes, not on each report
        let active_up = self.links.get(self.active).is_some_and(|l| l.up);
        if up {
            if !active_up {
                self.take_link(link);
            }
            return;
        }
        if link != self.active {
            return;
        }
        match (0..self.links.len()).find(|&i| i != link && self.links[i].up) {
            Some(i) => self.take_link(i),
            None if was_up => self.log(LogLevel::Error, "no dedicated links available!".into()),
            None => {}
        }
    }

    fn take_link(&mut self, i: usize) {
        self.active = i;
        let name = self.links[i].name.clone();
        self.log(
            LogLevel::Notice,
            format!("device `{name}' becomes dedicated link"),
        );
    }

    /// Counts a failed send on `link`.
    pub fn note_send_error(&mut self, link: usize) {
        if let Some(l) = self.links.get_mut(link) {
            l.stats.errors_send += 1;
        }
    }

    /// Counts a failed receive on `link`.
    pub fn note_recv_error(&mut self, link: usize) {
        if let Some(l) = self.links.get_mut(link) {
            l.stats.errors_recv += 1;
        }
    }

    fn link_name(&self, link: usize) -> String {
        self.links
            .get(link)
            .map_or_else(|| link.to_string(), |l| l.name.clone())
    }

    /// The reader of `link` keeps failing to receive (`error`): logged.
    pub fn note_link_failing(&mut self, link: usize, error: &str) {
        let name = self.link_name(link);
        self.log(
            LogLevel::Error,
            format!("sync: cannot receive on {name}: {error} (trying again every second)"),
        );
    }

    /// The reader of `link` receives again after failing.
    pub fn note_link_recovered(&mut self, link: usize) {
        let name = self.link_name(link);
        self.log(LogLevel::Notice, format!("sync: receiving on {name} again"));
    }

    /// `n` datagrams of `link` were dropped before the daemon could take
    /// them: counted, and logged at most once every 10 s.
    pub fn note_recv_dropped(&mut self, now: Instant, link: usize, n: usize) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.stats.dropped += n as u64;
        let total = l.stats.dropped;
        if self
            .last_drop_log
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        self.last_drop_log = Some(now);
        let name = self.link_name(link);
        self.log(
            LogLevel::Warning,
            format!(
                "sync: {total} datagrams dropped on {name} so far: the daemon could not keep up"
            ),
        );
    }

    /// Index of the active link.
    pub fn active_link(&self) -> usize {
        self.active
    }

    // ---------------------------------------------------------------
    // output and state

    /// The next thing to do, in order. Datagrams of a transmission are
    /// packed here as they are taken (see [`TX_BATCH`]): take them all.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            self.pack();
        }
        self.actions.pop_front()
    }

    /// Puts actions taken with [`Engine::poll_action`] back in front, in
    /// their order (a daemon that only wanted the datagrams for now).
    pub fn requeue_actions(&mut self, actions: Vec<Action>) {
        for a in actions.into_iter().rev() {
            self.actions.push_front(a);
        }
    }

    /// Every pending action (a whole transmission included).
    pub fn drain_actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.poll_action()).collect()
    }

    /// The external cache (`-e`, commit).
    pub fn external(&self) -> &ExternalCache {
        &self.external
    }

    /// The external cache, to flush it (`-f external`).
    pub fn external_mut(&mut self) -> &mut ExternalCache {
        &mut self.external
    }

    /// Protocol counters.
    pub fn net_stats(&self) -> NetStats {
        self.stats
    }

    /// Queue sizes.
    pub fn queue_stats(&self) -> QueueStats {
        QueueStats {
            tx_len: self.tx.len(),
            rs_len: self.rs_live,
            rs_max: self.rs_max,
            rs_dropped: self.rs_dropped,
            objects: self.slots.iter().filter(|s| s.obj.is_some()).count(),
        }
    }

    /// Every link with its state and traffic.
    pub fn links(&self) -> Vec<LinkView> {
        self.links
            .iter()
            .enumerate()
            .map(|(i, l)| LinkView {
                name: l.name.clone(),
                kind: l.kind,
                up: l.up,
                active: i == self.active,
                stats: l.stats,
            })
            .collect()
    }

    /// The mode.
    pub fn mode(&self) -> ModeKind {
        self.mode
    }

    /// Number of live (not destroyed) replicated flows.
    pub fn internal_len(&self) -> usize {
        self.index.len()
    }

    /// The resend queue as `conntrackd -s rsqueue` prints it.
    pub fn rsqueue_text(&self) -> String {
        let mut s = format!("resent queue (len={})\n", self.rs_live);
        for it in &self.rs {
            match *it {
                RsItem::Ctl { flags, seq, .. } => {
                    s.push_str(&format!("control -> seq:{seq} flags:{flags}\n"))
                }
                RsItem::Obj {
                    idx,
                    generation,
                    seq,
                } => {
                    if self.rs_item_live(idx, generation, seq) {
                        s.push_str(&format!("object -> seq:{seq}\n"));
                    }
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;
