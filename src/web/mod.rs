//! The web page and JSON API of active connections, served by tiny_http on
//! threads of ctrackd (feature "web").
//!
//! The daemon builds a [`WebConfig`] from its `Web { ... }` block
//! ([`WebConfig::from_block`]) and a
//! [`WebContext`] (network namespace, stats closure, event [`Hub`]), calls
//! [`Server::start`] and keeps the [`Handle`] until it stops. Every list
//! comes from a fresh kernel dump; events come from the hub the daemon
//! publishes to. docs/web-integration.md says how to wire it.
//!
//! tiny_http 0.12 has gaps (README "Web page and JSON API" lists them).
//! No client reaches it directly: [`front`] accepts on our `SocketAddr`
//! with one thread, caps connections, reads each request head itself and
//! checks it with [`head`] within size limits (414/431/413) and a
//! deadline (408), rate-limits by address with [`ratelimit`] (429), and
//! hands tiny_http only checked heads over a private Unix socket.
//! [`shared`] holds what the front and the server share. [`server`] adds a fixed worker pool behind a bounded
//! queue (503 past it), restarts tiny_http when its accept loop dies,
//! and never puts request data in a response header.

pub mod api;
pub mod assets;
mod config;
pub mod front;
pub mod head;
pub mod hub;
pub mod names;
pub mod query;
pub mod ratelimit;
pub mod server;
pub mod shared;
pub mod standalone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use hub::Hub;
pub use server::{Handle, Server};

/// A closure returning the daemon's counters as a JSON object, for
/// `/api/v1/stats` and `/metrics` (numbers become Prometheus gauges).
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Where the server writes one-line notes (accept loop restarts, bind
/// address); the daemon passes its logger.
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Resource limits of the server. The defaults suit a router's LAN page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Worker threads answering requests (a fixed pool).
    pub workers: usize,
    /// Requests waiting for a worker; past this a request gets 503.
    pub queue: usize,
    /// Event stream clients at once; past this 503.
    pub max_streams: usize,
    /// Events queued per stream client before it is dropped as too slow.
    pub stream_queue: usize,
    /// Requests per second per client address (token bucket refill).
    pub rate_per_sec: u32,
    /// Burst of requests per client address.
    pub rate_burst: u32,
    /// Client connections held at once (at most [`front::MAX_CONNS`]).
    /// Past it the oldest connection still sending its head makes room;
    /// if every one has a request in progress, the new one gets 503.
    pub max_conns: usize,
    /// Time a client has, from its connection, to send the whole request
    /// head; past it 408 and the connection is closed.
    pub head_timeout: Duration,
    /// Longest request target (path and query) in bytes; past it 414.
    pub max_url: usize,
    /// Total bytes of request headers; past it 431.
    pub max_header_bytes: usize,
    /// Number of request headers; past it 431.
    pub max_headers: usize,
    /// A client that takes no byte of its reply for this long is dropped
    /// (an event stream that stopped reading, too).
    pub send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: 3,
            queue: 16,
            max_streams: 8,
            stream_queue: hub::DEFAULT_QUEUE,
            rate_per_sec: 20,
            rate_burst: 60,
            max_conns: 32,
            head_timeout: Duration::from_secs(10),
            max_url: 4096,
            max_header_bytes: 8192,
            max_headers: 64,
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// The `Web { Address <ip> Port <n> [TokenFile <path>] [DHCPLeases <path>]
/// [Hosts <path>] }` block of ctrackd's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Address to bind (the LAN address on a router; never 0.0.0.0 unless
    /// configured so).
    pub address: IpAddr,
    /// TCP port.
    pub port: u16,
    /// File holding the bearer token that allows DELETE (absent: DELETE
    /// is refused with 403).
    pub token_file: Option<PathBuf>,
    /// dnsmasq lease file for host names (`/tmp/dhcp.leases` on OpenWrt).
    pub dhcp_leases: Option<PathBuf>,
    /// A hosts file for host names (`/etc/hosts` format).
    pub hosts: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
}

/// Port used when the block gives none.
pub const DEFAULT_PORT: u16 = 8077;

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            token_file: None,
            dhcp_leases: None,
            hosts: None,
            limits: Limits::default(),
        }
    }
}

impl WebConfig {
    /// The socket address to bind.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// What the daemon hands the web server.
#[derive(Clone, Default)]
pub struct WebContext {
    /// Network namespace of the conntrack table (and of the listening
    /// socket), `None` for the daemon's own.
    pub netns: Option<String>,
    /// The daemon's counters for /api/v1/stats and /metrics.
    pub stats: Option<StatsFn>,
    /// The hub the daemon publishes kernel events to.
    pub hub: Hub,
    /// Where to write notes (stderr when absent).
    pub log: Option<LogFn>,
}

impl std::fmt::Debug for WebContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebContext")
            .field("netns", &self.netns)
            .field("stats", &self.stats.is_some())
            .field("hub", &self.hub)
            .finish()
    }
}

/// Why the server did not start.
#[derive(Debug)]
pub enum Error {
    /// The address could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The token file could not be read or is empty.
    Token(PathBuf, String),
    /// Another socket or thread call failed.
    Io(std::io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Bind(a, e) => write!(f, "web: cannot listen on {a}: {e}"),
            Error::Token(p, e) => write!(f, "web: token file {}: {e}", p.display()),
            Error::Io(e) => write!(f, "web: {e}"),
        }
    }
}

impl std::error::Error for Error {}
