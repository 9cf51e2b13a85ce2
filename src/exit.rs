//! Exit codes, one table for every role. They are conntrack's (and
//! conntrackd's): scripts written for conntrack-tools test them.

/// Success.
pub const OK: i32 = 0;
/// Kernel or system error (conntrack's OTHER_PROBLEM); also every failure
/// of `ctrackd` and its client commands.
pub const OTHER: i32 = 1;
/// Bad command line (conntrack's PARAMETER_PROBLEM).
pub const PARAMETER: i32 = 2;
