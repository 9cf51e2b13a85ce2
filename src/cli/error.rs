//! The `ctrack` role's failures (a refused command line, a kernel or
//! system error) as values, and the one place they are printed.

use crate::exit;
use crate::netlink::Error;
use crate::opts::NETNS;

use super::args::Cmd;

/// The prefix conntrack puts on its messages; ctrack keeps it so scripts
/// that parse stderr see the same text.
pub const PROGNAME_VERSION: &str = "conntrack v1.4.7 (conntrack-tools)";

/// Why a `ctrack` command stops: the message and the exit code, printed by
/// [`CliError::report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError {
    /// The message, without the program prefix; empty when there is
    /// nothing to print (the failure was already visible, e.g. the
    /// summary line of a command that matched nothing).
    pub msg: String,
    /// The exit code (2 for parameter problems).
    pub code: i32,
    /// Whether the message is conntrack's own (printed with conntrack's
    /// prefix and, for a bad command line, its "Try ... -h" line) or a
    /// ctrack check (`ctrack: ...`).
    pub conntrack_style: bool,
}

impl CliError {
    /// A command line conntrack refuses (exit 2).
    pub fn param(msg: impl Into<String>) -> CliError {
        CliError {
            msg: msg.into(),
            code: exit::PARAMETER,
            conntrack_style: true,
        }
    }

    /// A failure in conntrack's words (exit 1).
    pub fn other(msg: impl Into<String>) -> CliError {
        CliError {
            msg: msg.into(),
            code: exit::OTHER,
            conntrack_style: true,
        }
    }

    /// A command line ctrack refuses where conntrack would not check
    /// (exit 2).
    pub fn ours(msg: impl Into<String>) -> CliError {
        CliError {
            msg: msg.into(),
            code: exit::PARAMETER,
            conntrack_style: false,
        }
    }

    /// A failure of ctrack's own, or of the system (exit 1).
    pub fn system(msg: impl ToString) -> CliError {
        CliError {
            msg: msg.to_string(),
            code: exit::OTHER,
            conntrack_style: false,
        }
    }

    /// A failure with nothing more to say (exit 1).
    pub fn silent() -> CliError {
        CliError::system("")
    }

    /// A kernel error of `cmd`, in conntrack's words.
    pub fn kernel(cmd: Cmd, e: &Error) -> CliError {
        CliError::other(format!("Operation failed: {}", err_text(cmd, e)))
    }

    /// `--netns` without its name, the one error of
    /// [`take_netns`](crate::opts::take_netns), in getopt's words.
    pub fn netns_missing() -> CliError {
        CliError::ours(format!("option `{NETNS}' requires an argument"))
    }

    /// Prints the failure the way conntrack (or ctrack) does; returns its
    /// exit code. The one place the `ctrack` role prints its errors.
    pub fn report(&self) -> i32 {
        if self.msg.is_empty() {
            return self.code;
        }
        if self.conntrack_style {
            eprintln!("{PROGNAME_VERSION}: {}", self.msg);
            if self.code == exit::PARAMETER {
                eprintln!("Try `conntrack -h' or 'conntrack --help' for more information.");
            }
        } else {
            eprintln!("ctrack: {}", self.msg);
        }
        self.code
    }
}

/// conntrack's wording for kernel errors of a command (`err2str`).
pub fn err_text(cmd: Cmd, e: &Error) -> String {
    let Some(n) = e.errno() else {
        return e.to_string();
    };
    let text = match (cmd, n) {
        (Cmd::List, 524) => Some("function not implemented"),
        // conntrack's table gives this text to the commands numbered
        // below 16 only
        (c, libc::EINVAL)
            if !matches!(c, Cmd::ExpCount | Cmd::Stats | Cmd::ExpStats | Cmd::Add) =>
        {
            Some("invalid parameters")
        }
        (Cmd::Create, libc::EEXIST) => Some("Such conntrack exists, try -U to update"),
        (Cmd::Create | Cmd::Get | Cmd::Delete | Cmd::Add, libc::ENOENT) => {
            Some("such conntrack doesn't exist")
        }
        (Cmd::Create | Cmd::Get | Cmd::Add, libc::ENOMEM) => Some("not enough memory"),
        (Cmd::Get, libc::EAFNOSUPPORT) => Some("protocol not supported"),
        (Cmd::ExpCreate, libc::ENOENT) => Some("master conntrack not found"),
        (Cmd::Create | Cmd::Add, libc::ETIME) => Some("conntrack has expired"),
        (_, libc::EPERM) => {
            Some("sorry, you must be root or get CAP_NET_ADMIN capability to do this")
        }
        _ => None,
    };
    text.map(str::to_string).unwrap_or_else(|| e.to_string())
}
