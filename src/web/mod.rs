//! The web page and JSON API of active connections, served by tiny_http on
//! threads of ctrackd (feature "web").
//!
//! The daemon builds a [`WebConfig`] from its `Web { ... }` block
//! ([`WebConfig::from_block`]) and a
//! [`WebContext`] (network namespace, stats closure, flow counts of its
//! cache, event [`Hub`]), calls [`Server::start`] and keeps the
//! [`Handle`] until it stops. docs/web-integration.md says how to wire it.
//!
//! Lists, filters, hosts and counts come from one shared [`table`] kept
//! current by the kernel events the hub gets; counters come from one
//! kernel dump at most every `CounterInterval` seconds while someone
//! watches ([`snapshot`]), whatever the number of requests. [`api`]
//! selects and renders lists a chunk at a time, [`hosts`] groups flows
//! by device ([`neigh`]: MACs of the neighbour table), [`metrics`] writes
//! Prometheus text.
//!
//! tiny_http 0.12 has gaps (README "Web page and JSON API" lists them).
//! No client reaches it directly: [`front`] accepts on our `SocketAddr`
//! with one thread, caps connections (in all and per client), reads each
//! request head itself and checks it with [`head`] within size limits
//! (414/431/413) and a deadline (408), checks the `Host` and the site the
//! request comes from ([`access`]: 421, 403), rate-limits by client with
//! [`ratelimit`] (429), hands tiny_http only checked heads over a private
//! Unix socket, and enforces a deadline and a minimum rate on replies.
//! [`shared`] holds what the front and the server share. [`server`] adds
//! a fixed worker pool behind a bounded queue (503 past it), sends large
//! replies from threads of their own (capped in all and per client),
//! restarts tiny_http when its accept loop dies, and never puts request
//! data in a response header.

pub mod access;
pub mod api;
pub mod assets;
mod config;
pub mod front;
pub mod head;
pub mod hosts;
pub mod hub;
pub mod metrics;
pub mod names;
pub mod neigh;
pub mod query;
pub mod ratelimit;
pub mod server;
pub mod shared;
pub mod snapshot;
pub mod standalone;
pub mod table;

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

/// A closure counting the flows the daemon's cache holds by (family,
/// protocol, state), for `/metrics` without a dump; `None` when it
/// cannot answer now.
pub type FlowCountsFn = Arc<dyn Fn() -> Option<metrics::FlowCounts> + Send + Sync>;

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
    /// Connections one client (an IPv4 address, an IPv6 /64) holds at
    /// most; past it its own oldest connection still sending its head
    /// makes room, or the new one gets 503.
    pub max_conns_per_client: usize,
    /// Large replies (over [`server::SMALL_REPLY`] bytes) sent at once,
    /// in all; past it 503.
    pub max_heavy: usize,
    /// Large replies one client receives at once; past it 503.
    pub max_heavy_per_client: usize,
    /// Event streams one client holds; past it 503.
    pub max_streams_per_client: usize,
    /// A reply (not an event stream) still running after this long is
    /// cut.
    pub reply_deadline: Duration,
    /// Bytes per second a reply must average once it has run for
    /// [`Limits::min_rate_after`]; a slower reader is cut.
    pub min_rate: u32,
    /// When the minimum rate starts to apply.
    pub min_rate_after: Duration,
    /// A request that waited this long for a worker gets 503 instead.
    pub queue_wait: Duration,
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
            max_conns_per_client: 16,
            max_heavy: 4,
            max_heavy_per_client: 2,
            max_streams_per_client: 2,
            reply_deadline: Duration::from_secs(300),
            min_rate: 32 * 1024,
            min_rate_after: Duration::from_secs(10),
            queue_wait: Duration::from_secs(5),
        }
    }
}

/// The `Web { Address <ip> Port <n> [TokenFile <path>] [ReadTokenFile
/// <path>] [ServerName <name>]... [CounterInterval <s>] [DHCPLeases <path>]
/// [Hosts <path>] }` block of ctrackd's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Address to bind (the LAN address on a router; never 0.0.0.0 unless
    /// configured so).
    pub address: IpAddr,
    /// TCP port.
    pub port: u16,
    /// File holding the bearer token that allows DELETE (absent: DELETE
    /// is refused with 403). It also allows reading.
    pub token_file: Option<PathBuf>,
    /// File holding a bearer token every read of data needs (absent:
    /// reads are open to whoever reaches the page).
    pub read_token_file: Option<PathBuf>,
    /// Host names the page may be reached by besides the address (421
    /// for any other `Host`).
    pub server_names: Vec<String>,
    /// Least time between two counter snapshots (kernel dumps) while
    /// someone watches; 0 takes one for every request.
    pub counter_interval: Duration,
    /// dnsmasq lease file for host names (`/tmp/dhcp.leases` on OpenWrt).
    pub dhcp_leases: Option<PathBuf>,
    /// A hosts file for host names (`/etc/hosts` format).
    pub hosts: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
}

/// Port used when the block gives none.
pub const DEFAULT_PORT: u16 = 8077;

/// Counter interval used when the block gives none (bench/web.sh: one
/// dump of 65,536 flows costs about as much CPU as 15 page refreshes
/// from the table, so at 2 s refreshes this keeps a watched page under
/// 20 ms of CPU per refresh).
pub const DEFAULT_COUNTER_INTERVAL: Duration = Duration::from_secs(30);

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            token_file: None,
            read_token_file: None,
            server_names: Vec::new(),
            counter_interval: DEFAULT_COUNTER_INTERVAL,
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
    /// Flow counts of the daemon's cache for `/metrics` (absent: counted
    /// in the web's table).
    pub flow_counts: Option<FlowCountsFn>,
}

impl std::fmt::Debug for WebContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebContext")
            .field("netns", &self.netns)
            .field("stats", &self.stats.is_some())
            .field("flow_counts", &self.flow_counts.is_some())
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
