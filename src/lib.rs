//! ctrack: netfilter connection tracking for routers.
//!
//! One crate, one binary with two roles: `ctrack`, a drop-in for the
//! `conntrack` CLI, and `ctrackd`, a daemon keeping a flow cache from kernel
//! events. See DESIGN.md in the shared notes and README.md for the layout:
//! `flow` (pure model and formats) <- `netlink` (kernel boundary) <- `cli`.

pub mod cli;
pub mod daemon;
pub mod flow;
pub mod netlink;
#[cfg(feature = "sync")]
pub mod sync;
#[cfg(feature = "wan")]
pub mod wan;
#[cfg(feature = "web")]
pub mod web;

/// Picks the role from the program name (`ctrack`/`conntrack`: CLI,
/// `ctrackd`/`conntrackd`: daemon) and the first word (`ctrack daemon`,
/// `ctrack version`, ...), runs it and returns the exit code.
pub fn dispatch(argv0: &str, mut args: Vec<String>) -> i32 {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    if name.starts_with("ctrackd") || name.starts_with("conntrackd") {
        return daemon_role(args);
    }
    match args.first().map(String::as_str) {
        Some("daemon") => {
            args.remove(0);
            daemon_role(args)
        }
        Some("version") => {
            println!(
                "ctrack {} (conntrack-tools 1.4.7 compatible)",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        _ => cli::main(args),
    }
}

fn daemon_role(_args: Vec<String>) -> i32 {
    eprintln!("ctrackd: the daemon is not built yet");
    1
}
