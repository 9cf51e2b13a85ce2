//! How serious a log message is. One scale for every room that reports
//! something to the daemon's log (the WAN watch, sync), so each can say it
//! without importing the daemon.

/// Message severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Normal but noteworthy.
    Notice,
    /// Something is off but the daemon goes on.
    Warning,
    /// Something failed.
    Error,
}
