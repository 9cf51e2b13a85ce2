//! Replication to a standby router: conntrackd protocol v1 (wire format,
//! FTFW/NOTRACK/ALARM, UDP/multicast links, external cache, commit, HMAC).

pub mod wire;

#[cfg(test)]
mod captures;
