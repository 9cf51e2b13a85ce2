//! WAN address tracking and the stale-flow rule: which flows to delete when
//! a WAN interface's address changes (an ISP reconnect), and the pieces
//! that do it: the rtnetlink watch, the sans-I/O tracker with its
//! debounce and the flush executor (run once by `ctrack flush-wan`, whose
//! command line is in src/cli/flush_wan.rs).
//!
//! See docs/wan-integration.md for how the daemon wires these together.

pub mod config;
pub mod flush;
pub mod rtnl;
pub mod rule;
pub mod stats;
pub mod tracker;
pub mod watch;
