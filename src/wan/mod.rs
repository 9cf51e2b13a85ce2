//! WAN address tracking and the stale-flow rule: which flows to delete when
//! a WAN interface's address changes.
