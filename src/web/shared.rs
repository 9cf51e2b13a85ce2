//! What the web front (src/web/front.rs) and the tiny_http side
//! (src/web/server.rs) share: the state every server thread holds
//! ([`Shared`], with its [`Counters`]), the connections with a request in
//! progress ([`ConnState`], by the number the front passes in
//! `X-Ctrack-Conn`), the per-client places of large replies and event
//! streams ([`Slot`]), and the pieces of every reply, the
//! Content-Security-Policies and the JSON error body. Both import this
//! module, so the front needs nothing from the server (the server only
//! starts it, with `front::run`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::hub::Hub;
use super::names::NameCache;
use super::neigh::MacCache;
use super::ratelimit::RateLimiter;
use super::snapshot::Store;
use super::{FlowCountsFn, Limits, LogFn, StatsFn};

/// Content-Security-Policy of the page: our own script, style and fetches
/// only; no inline code, no frames, no plugins, no forms elsewhere.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";
/// Content-Security-Policy of every other reply.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// `{"error": msg}`, the body of every error reply.
pub(super) fn error_body(msg: &str) -> Vec<u8> {
    let mut b = b"{\"error\":".to_vec();
    crate::flow::json::push_str(&mut b, msg);
    b.push(b'}');
    b
}

/// What the web server counts (each a 64-bit count: see [`Counters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Complete request heads received.
    Requests,
    /// Refused with 429.
    RateLimited,
    /// Refused with 503 (queue full, too many streams or large replies,
    /// no way to tiny_http, a request that waited too long).
    Busy,
    /// Refused with 414/431/413.
    TooLarge,
    /// Refused with 400 or 505 (malformed head).
    BadRequests,
    /// Connections refused with 503 because every one of
    /// `Limits::max_conns` had a request in progress, or the client had
    /// its share and none of them was still sending its head.
    Refused,
    /// Connections still sending their head, closed to make room.
    Evicted,
    /// Heads not complete within `Limits::head_timeout` (408).
    HeadTimeouts,
    /// Clients dropped for taking no reply byte for `Limits::send_timeout`.
    SendTimeouts,
    /// Replies cut for being slower than `Limits::min_rate` or longer
    /// than `Limits::reply_deadline`.
    SlowReplies,
    /// accept() errors (EMFILE, ECONNABORTED, ...); the front goes on.
    AcceptErrors,
    /// Times tiny_http's accept loop ended and the server was rebuilt.
    Restarts,
    /// Requests naming a host that is not ours (421).
    Misdirected,
    /// Requests a page of another site made (403).
    CrossSite,
    /// Requests without a valid token where one is needed (401).
    Unauthorized,
    /// Replies with a 4xx/5xx status.
    Errors,
}

/// Every count with its name (in `/api/v1/stats` under `web`, and
/// `ctrack_web_<name>_total` in `/metrics`) and its meaning.
pub const COUNTS: [(Count, &str, &str); 16] = [
    (
        Count::Requests,
        "requests",
        "Complete request heads received.",
    ),
    (
        Count::RateLimited,
        "rate_limited",
        "Requests refused with 429 (rate limit).",
    ),
    (
        Count::Busy,
        "busy",
        "Requests refused with 503 (server busy).",
    ),
    (
        Count::TooLarge,
        "too_large",
        "Requests refused with 413, 414 or 431.",
    ),
    (
        Count::BadRequests,
        "bad_requests",
        "Requests refused with 400 or 505.",
    ),
    (
        Count::Refused,
        "refused",
        "Connections refused with 503 at the connection caps.",
    ),
    (
        Count::Evicted,
        "evicted",
        "Connections still sending their head closed to make room.",
    ),
    (
        Count::HeadTimeouts,
        "head_timeouts",
        "Request heads not complete in time (408).",
    ),
    (
        Count::SendTimeouts,
        "send_timeouts",
        "Clients dropped for not reading their reply.",
    ),
    (
        Count::SlowReplies,
        "slow_replies",
        "Replies cut below the minimum rate or past the deadline.",
    ),
    (
        Count::AcceptErrors,
        "accept_errors",
        "accept() errors of the listening socket.",
    ),
    (
        Count::Restarts,
        "restarts",
        "Restarts of the HTTP server's accept loop.",
    ),
    (
        Count::Misdirected,
        "misdirected",
        "Requests for a host name that is not this server (421).",
    ),
    (
        Count::CrossSite,
        "cross_site",
        "Requests made by a page of another site (403).",
    ),
    (
        Count::Unauthorized,
        "unauthorized",
        "Requests without a valid token where one is needed (401).",
    ),
    (Count::Errors, "errors", "Replies with a 4xx or 5xx status."),
];

/// Counters of the web server: 64-bit counts behind one mutex (32-bit
/// MIPS has no 64-bit atomics; a 32-bit count of requests would wrap),
/// and two gauges.
#[derive(Default)]
pub struct Counters {
    counts: Mutex<[u64; COUNTS.len()]>,
    /// Client connections open now.
    pub connections: AtomicU32,
    /// Event streams open now.
    pub streams: AtomicU32,
    /// Large replies being sent now.
    pub heavy: AtomicU32,
}

impl Counters {
    /// Adds one to `c`.
    pub fn add(&self, c: Count) {
        if let Ok(mut v) = self.counts.lock() {
            let slot = &mut v[c as usize];
            *slot = slot.wrapping_add(1);
        }
    }

    /// The count of `c`.
    pub fn get(&self, c: Count) -> u64 {
        self.counts.lock().map(|v| v[c as usize]).unwrap_or(0)
    }
}

/// What the front and the server know of one client connection while
/// its request is served.
#[derive(Debug)]
pub struct ConnState {
    /// The client is still connected (cleared by the front when the
    /// connection goes: an event stream then ends at once).
    pub alive: AtomicBool,
    /// The reply is an event stream: no reply deadline or minimum rate.
    pub stream: AtomicBool,
}

/// The two kinds of replies capped per client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// A large reply sent from a thread of its own.
    Heavy = 0,
    /// An event stream.
    Stream = 1,
}

/// True when one more reply may start: under the cap of the client and
/// under the cap of all.
pub fn admits(per_client: u32, all: u32, per_client_cap: usize, cap: usize) -> bool {
    (per_client as usize) < per_client_cap && (all as usize) < cap
}

/// A reply's place among those of its kind; given back when dropped.
pub struct Slot {
    sh: Arc<Shared>,
    kind: SlotKind,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.sh.slots.lock() {
            if let Some(v) = m.get_mut(&self.key) {
                v[self.kind as usize] = v[self.kind as usize].saturating_sub(1);
                if *v == [0, 0] {
                    m.remove(&self.key);
                }
            }
        }
        self.sh.gauge(self.kind).fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything the threads share.
pub struct Shared {
    /// Network namespace of the conntrack table, `None` for our own.
    pub(super) netns: Option<String>,
    /// The configured resource limits.
    pub(super) limits: Limits,
    /// The bearer token that allows DELETE (none: DELETE is refused).
    pub(super) token: Option<Vec<u8>>,
    /// The bearer token reads need (none: reads are open).
    pub(super) read_token: Option<Vec<u8>>,
    /// The address the server listens on (for the `Host` check).
    pub(super) listen: IpAddr,
    /// Other names the server may be called by.
    pub(super) server_names: Vec<String>,
    /// The shared table.
    pub(super) store: Arc<Store>,
    /// MACs of the neighbour table and leases.
    pub(super) macs: MacCache,
    /// The daemon's flow counts for /metrics.
    pub(super) flow_counts: Option<FlowCountsFn>,
    /// Connections with a request in progress, by the number the front
    /// gave them (`X-Ctrack-Conn`).
    pub(super) conns: Mutex<HashMap<u32, Weak<ConnState>>>,
    /// The next connection number.
    pub(super) next_conn: AtomicU32,
    /// Large replies and event streams per client key.
    pub(super) slots: Mutex<HashMap<IpAddr, [u32; 2]>>,
    /// Host names from the lease and hosts files.
    pub(super) names: Arc<NameCache>,
    /// Where the daemon publishes kernel events.
    pub(super) hub: Hub,
    /// The daemon's counters for /api/v1/stats and /metrics.
    pub(super) stats: Option<StatsFn>,
    /// Where notes go (stderr when absent).
    pub(super) log: Option<LogFn>,
    /// The server's counters.
    pub counters: Counters,
    /// The per-address rate limit the front applies.
    pub(super) limiter: Mutex<RateLimiter>,
    /// Set once the server is stopping: every thread ends.
    pub(super) stopping: AtomicBool,
    /// The tiny_http servers alive (the current one and any draining).
    pub(super) servers: Mutex<Vec<Arc<tiny_http::Server>>>,
    /// When the server started (for `uptime`).
    pub(super) started: Instant,
}

impl Shared {
    /// Registers a connection whose request goes to the server: its
    /// number (for `X-Ctrack-Conn`) and its state.
    pub(super) fn register_conn(&self) -> (u32, Arc<ConnState>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let st = Arc::new(ConnState {
            alive: AtomicBool::new(true),
            stream: AtomicBool::new(false),
        });
        if let Ok(mut m) = self.conns.lock() {
            if m.len() >= 4 * super::front::MAX_CONNS {
                m.retain(|_, w| w.strong_count() > 0);
            }
            m.insert(id, Arc::downgrade(&st));
        }
        (id, st)
    }

    /// The state of connection `id`, while it lives.
    pub(super) fn conn(&self, id: u32) -> Option<Arc<ConnState>> {
        self.conns.lock().ok()?.get(&id)?.upgrade()
    }

    fn gauge(&self, kind: SlotKind) -> &AtomicU32 {
        match kind {
            SlotKind::Heavy => &self.counters.heavy,
            SlotKind::Stream => &self.counters.streams,
        }
    }

    /// Takes a place for a reply of `kind` to client `key`, or None when
    /// the client or everyone is at the cap.
    pub(super) fn take_slot(self: &Arc<Self>, kind: SlotKind, key: IpAddr) -> Option<Slot> {
        let (per, cap) = match kind {
            SlotKind::Heavy => (self.limits.max_heavy_per_client, self.limits.max_heavy),
            SlotKind::Stream => (self.limits.max_streams_per_client, self.limits.max_streams),
        };
        let mut m = self.slots.lock().ok()?;
        let mine = m.get(&key).map_or(0, |v| v[kind as usize]);
        let all = self.gauge(kind).load(Ordering::SeqCst);
        if !admits(mine, all, per, cap) {
            return None;
        }
        m.entry(key).or_default()[kind as usize] += 1;
        self.gauge(kind).fetch_add(1, Ordering::SeqCst);
        Some(Slot {
            sh: self.clone(),
            kind,
            key,
        })
    }

    /// Writes a one-line note to the daemon's log (or stderr).
    pub(super) fn note(&self, msg: &str) {
        match &self.log {
            Some(l) => l(msg),
            None => eprintln!("ctrackd: {msg}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_client_and_in_all() {
        assert!(admits(0, 0, 2, 4));
        assert!(admits(1, 3, 2, 4));
        assert!(!admits(2, 0, 2, 4));
        assert!(!admits(0, 4, 2, 4));
        assert!(!admits(0, 0, 0, 4));
    }

    #[test]
    fn counts_are_64_bit() {
        let c = Counters::default();
        c.add(Count::Requests);
        c.add(Count::Requests);
        assert_eq!(c.get(Count::Requests), 2);
        assert_eq!(c.get(Count::Busy), 0);
        if let Ok(mut v) = c.counts.lock() {
            v[Count::Busy as usize] = u32::MAX as u64;
        }
        c.add(Count::Busy);
        assert_eq!(c.get(Count::Busy), 1 << 32);
        for (i, (k, name, help)) in COUNTS.iter().enumerate() {
            assert_eq!(*k as usize, i, "{name}");
            assert!(!help.is_empty());
        }
    }
}
