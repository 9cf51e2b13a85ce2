//! ctrack: netfilter connection tracking for routers.
//!
//! One crate, one binary with two roles: `ctrack`, a drop-in for the
//! `conntrack` CLI, and `ctrackd`, a daemon keeping a flow cache from kernel
//! events. See DESIGN.md in the shared notes and README.md for the layout:
//! `flow` (pure model and formats) <- `netlink` (kernel boundary) <- `cli`.

pub mod cli;
pub mod conf;
pub mod daemon;
pub mod exit;
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
/// `ctrack version`, `ctrack flush-wan`, ...), runs it and returns the exit
/// code.
pub fn dispatch(argv0: &str, mut args: Vec<String>) -> i32 {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    if name.starts_with("ctrackd") || name.starts_with("conntrackd") {
        return daemon_role(args);
    }
    // `ctrack --netns NAME flush-wan ...` works as well as
    // `ctrack flush-wan --netns NAME ...`
    let word = first_word(&args);
    if word.map(|i| args[i].as_str()) == Some("flush-wan") {
        if let Some(i) = word {
            args.remove(i);
        }
        return flush_wan(args);
    }
    match args.first().map(String::as_str) {
        Some("daemon") => {
            args.remove(0);
            daemon_role(args)
        }
        #[cfg(feature = "web")]
        Some("web") => web::standalone::main(&args[1..]),
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

/// Index of the first argument that is not `--netns NAME`/`--netns=NAME`.
fn first_word(args: &[String]) -> Option<usize> {
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--netns" {
            i += 2;
        } else if args[i].starts_with("--netns=") {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

#[cfg(feature = "wan")]
fn flush_wan(args: Vec<String>) -> i32 {
    wan::cli::main(args)
}

#[cfg(not(feature = "wan"))]
fn flush_wan(_args: Vec<String>) -> i32 {
    eprintln!("ctrack: flush-wan is not built in (cargo feature \"wan\")");
    exit::OTHER
}

fn daemon_role(args: Vec<String>) -> i32 {
    daemon::main(args)
}
