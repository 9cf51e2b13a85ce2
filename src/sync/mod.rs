//! Replication to a standby router: conntrackd protocol v1 (wire format,
//! FTFW/NOTRACK/ALARM, UDP/multicast links, external cache, commit, HMAC).
//!
//! Everything here except [`link`], [`commit`] and [`keyfile`] is sans-I/O. The daemon
//! wiring is described in docs/sync-integration.md.

pub mod auth;
pub mod commit;
pub mod config;
pub mod engine;
pub mod external;
pub mod keyfile;
pub mod link;
pub mod merge;
pub mod stats;
pub mod wire;

#[cfg(test)]
mod captures;
