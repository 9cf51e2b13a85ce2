//! What the web front (src/web/front.rs) and the tiny_http side
//! (src/web/server.rs) share: the state every server thread holds
//! ([`Shared`], with its [`Counters`]) and the pieces of every reply, the
//! Content-Security-Policies and the JSON error body. Both import this
//! module, so the front needs nothing from the server (the server only
//! starts it, with `front::run`).

use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::hub::Hub;
use super::names::NameCache;
use super::ratelimit::RateLimiter;
use super::{Limits, LogFn, StatsFn};

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

/// Counters of the web server (32-bit: no 64-bit atomics on MIPS32).
#[derive(Default)]
pub struct Counters {
    /// Complete request heads received.
    pub requests: AtomicU32,
    /// Refused with 429.
    pub rate_limited: AtomicU32,
    /// Refused with 503 (queue full, too many streams, no way to tiny_http).
    pub busy: AtomicU32,
    /// Refused with 414/431/413.
    pub too_large: AtomicU32,
    /// Refused with 400 or 505 (malformed head).
    pub bad_requests: AtomicU32,
    /// Client connections open now.
    pub connections: AtomicU32,
    /// Connections refused with 503 because every one of
    /// `Limits::max_conns` had a request in progress.
    pub refused: AtomicU32,
    /// Connections still sending their head, closed to make room.
    pub evicted: AtomicU32,
    /// Heads not complete within `Limits::head_timeout` (408).
    pub head_timeouts: AtomicU32,
    /// Clients dropped for not reading their reply.
    pub send_timeouts: AtomicU32,
    /// accept() errors (EMFILE, ECONNABORTED, ...); the front goes on.
    pub accept_errors: AtomicU32,
    /// Times tiny_http's accept loop ended and the server was rebuilt.
    pub restarts: AtomicU32,
    /// Event streams open now.
    pub streams: AtomicU32,
    /// Replies with a 4xx/5xx status.
    pub errors: AtomicU32,
}

/// Everything the threads share.
pub struct Shared {
    /// Network namespace of the conntrack table, `None` for our own.
    pub(super) netns: Option<String>,
    /// The configured resource limits.
    pub(super) limits: Limits,
    /// The bearer token that allows DELETE (none: DELETE is refused).
    pub(super) token: Option<Vec<u8>>,
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
    /// Writes a one-line note to the daemon's log (or stderr).
    pub(super) fn note(&self, msg: &str) {
        match &self.log {
            Some(l) => l(msg),
            None => eprintln!("ctrackd: {msg}"),
        }
    }
}
