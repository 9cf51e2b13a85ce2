//! WAN address tracking and the stale-flow rule: which flows to delete when
//! a WAN interface's address changes (an ISP reconnect), and the pieces
//! that do it: the sans-I/O tracker with its debounce and the flush
//! executor (run once by `ctrack flush-wan`, whose command line is in
//! src/cli/flush_wan.rs). The rtnetlink codec and sockets they read
//! addresses with are in [`crate::netlink::route`].
//!
//! See docs/wan-integration.md for how the daemon wires these together.

pub mod config;
pub mod flush;
pub mod rule;
pub mod stats;
pub mod tracker;
pub mod watch;
