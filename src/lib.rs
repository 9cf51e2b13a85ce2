//! ctrack: netfilter connection tracking for routers.
//!
//! One crate, one binary with two roles: `ctrack`, a drop-in for the
//! `conntrack` CLI (with its own `flush-wan` and `web` commands), and
//! `ctrackd`, a daemon keeping a flow cache from kernel events.
//!
//! The layout (README.md's Layout section has the table): [`flow`] is the
//! pure model and its formats; [`netlink`] the kernel boundary; `sync`,
//! `wan` and `web` are the features (each behind its cargo feature), built
//! on those two; [`cli`] and [`daemon`] are the two roles: the daemon wires
//! the features together, and `ctrack flush-wan` and `ctrack web` run wan
//! and web alone. [`exit`] and [`opts`] (exit codes, the small option
//! parser) serve every role.
//! Arrows go one way: `flow` imports nothing of ours, `netlink` only
//! `flow`, the features only those two (and `exit`, `opts`); the roles
//! build on all of them, and [`dispatch`] picks the role.

pub mod cli;
pub mod conf;
pub mod daemon;
pub mod exit;
pub mod flow;
pub mod netlink;
pub mod opts;
pub mod protocols;
pub mod severity;
#[cfg(feature = "sync")]
pub mod sync;
#[cfg(feature = "wan")]
pub mod wan;
#[cfg(feature = "web")]
pub mod web;

/// Picks the role from the program name (`ctrack`/`conntrack`: CLI,
/// `ctrackd`/`conntrackd`: daemon) and the first word (`ctrack daemon`,
/// `ctrack version`, `ctrack flush-wan`, `ctrack web`), runs it and
/// returns the exit code. `flush-wan` and `web` may come after `--netns`.
pub fn dispatch(argv0: &str, mut args: Vec<String>) -> i32 {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    if name.starts_with("ctrackd") || name.starts_with("conntrackd") {
        return daemon::main(args);
    }
    match args.first().map(String::as_str) {
        Some("daemon") => {
            args.remove(0);
            return daemon::main(args);
        }
        Some("version") => {
            println!(
                "ctrack {} (conntrack-tools 1.4.7 compatible)",
                env!("CARGO_PKG_VERSION")
            );
            return exit::OK;
        }
        _ => {}
    }
    if let Some(i) = opts::command_word(&args) {
        match args[i].as_str() {
            "flush-wan" => {
                args.remove(i);
                return flush_wan(args);
            }
            #[cfg(feature = "web")]
            "web" => {
                args.remove(i);
                return web::standalone::main(args);
            }
            _ => {}
        }
    }
    cli::main(args)
}

#[cfg(feature = "wan")]
fn flush_wan(args: Vec<String>) -> i32 {
    cli::flush_wan::main(args)
}

#[cfg(not(feature = "wan"))]
fn flush_wan(_args: Vec<String>) -> i32 {
    eprintln!("ctrack: flush-wan is not built in (cargo feature \"wan\")");
    exit::OTHER
}
