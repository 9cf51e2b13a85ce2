//! ctrack: netfilter connection tracking for routers.
//!
//! One crate, one binary with two roles: `ctrack`, a drop-in for the
//! `conntrack` CLI, and `ctrackd`, a daemon keeping a flow cache from kernel
//! events. See DESIGN.md in the shared notes and README.md for the layout:
//! `flow` (pure model and formats) <- `netlink` (kernel boundary) <- `cli`.

pub mod flow;
