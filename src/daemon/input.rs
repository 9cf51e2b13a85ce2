//! What reaches the daemon's core loop: one channel, fed by the reader
//! threads (kernel events, control socket, signals, the parts' sockets)
//! and by the web server. Its own module so the parts can send to the
//! loop without importing the core.

use std::sync::mpsc::Sender;

use super::control::Pending;
use crate::netlink::Event;

/// Something for the core loop to handle.
#[derive(Debug)]
pub enum Input {
    /// Kernel events, in order.
    Kernel(Vec<Event>),
    /// The event socket overran; `buffer` is its size now, `grown` whether
    /// it was doubled (false: at NetlinkBufferSizeMaxGrowth already).
    Overrun {
        /// Current buffer size in bytes.
        buffer: usize,
        /// Whether the buffer was doubled.
        grown: bool,
    },
    /// The event socket failed.
    KernelError(String),
    /// A control request.
    Control(Pending),
    /// A signal number.
    Signal(i32),
    /// A request for the counters as JSON (web API).
    StatsJson(Sender<serde_json::Value>),
    /// A line for the log from another thread.
    Log(String),
    /// A request for the cache's flow counts by class (web `/metrics`).
    #[cfg(feature = "web")]
    WebFlowCounts(Sender<Vec<(crate::web::metrics::FlowClass, u64)>>),
    /// What the WAN watch's rtnetlink reader received.
    #[cfg(feature = "wan")]
    Wan(crate::wan::watch::WatchInput),
    /// What a sync link's reader received.
    #[cfg(feature = "sync")]
    Sync(crate::sync::link::LinkInput),
}
