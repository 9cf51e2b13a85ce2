//! WAN address tracking and the stale-flow rule: which flows to delete when
//! a WAN interface's address changes (an ISP reconnect), and the pieces
//! that do it: the sans-I/O tracker with its debounce, the flush executor
//! and the `ctrack flush-wan` command. The rtnetlink codec and sockets
//! they read addresses with are in [`crate::netlink::route`].
//!
//! See docs/wan-integration.md for how the daemon wires these together.

pub mod cli;
pub mod config;
pub mod flush;
pub mod rule;
pub mod stats;
pub mod tracker;
pub mod watch;
