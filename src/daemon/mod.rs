//! ctrackd: the daemon (config, flow cache, control socket, logging,
//! signals) and its client commands, flag-compatible with conntrackd.

pub mod cache;
pub mod config;
pub mod control;
pub mod core;
pub mod input;
pub mod log;
pub mod part;
pub mod parts;
pub mod run;
pub mod shell;
pub mod stats;
#[cfg(feature = "sync")]
pub mod syncpart;
#[cfg(feature = "wan")]
pub mod wanpart;
#[cfg(feature = "web")]
pub mod webpart;

use std::io::Write;
use std::path::PathBuf;

use control::{Format, Request, Which};

const USAGE: &str = "\
ctrackd: connection tracking daemon (conntrackd-compatible)
Usage: ctrackd [-C config] [-d]          run (foreground without -d)
       ctrackd [-C config] <command>     talk to the running daemon
Commands:
  -s [network|cache|runtime|link|queue|process]   statistics
  -i [ct] [-x|-o json]   dump the internal cache (-x: XML, -o json: ndjson)
  -e [ct] [-x|-o json]   dump the external cache (flows from the peer)
  -f [internal|external] flush the caches
  -F                     flush the kernel conntrack table
  -R                     resync the internal cache with the kernel table
  -c                     commit the external cache into the kernel
  -B                     send the internal cache to the peer
  -n                     ask the peer for a full resync
  -t                     flush the kernel table after PurgeTimeout
  -k                     stop the daemon
  -v                     version
";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the daemon (`-d`: in the background).
    Run {
        /// Daemonize.
        daemon: bool,
    },
    /// Send a request to the running daemon.
    Client(Request),
    /// Print the version.
    Version,
    /// Print the usage.
    Help,
}

/// Parsed ctrackd command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// `-C FILE`.
    pub config: Option<PathBuf>,
    /// The action.
    pub action: Action,
}

/// Parses ctrackd's flags (conntrackd's: one letter each, some with an
/// optional word after them).
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut config = None;
    let mut action: Option<Action> = None;
    let mut daemon = false;
    let mut xml = false;
    let mut json = false;
    let mut i = 0;
    let set = |a: &mut Option<Action>, new: Action| -> Result<(), String> {
        if a.is_some() {
            return Err("only one command at a time".into());
        }
        *a = Some(new);
        Ok(())
    };
    while i < args.len() {
        let a = args[i].as_str();
        let next_word = |i: usize| -> Option<&str> {
            args.get(i + 1)
                .map(String::as_str)
                .filter(|w| !w.starts_with('-'))
        };
        match a {
            "-C" => {
                let Some(p) = args.get(i + 1) else {
                    return Err("option `-C' needs a config file".into());
                };
                config = Some(PathBuf::from(p));
                i += 1;
            }
            "-d" => daemon = true,
            "-x" => xml = true,
            "-o" => {
                match args.get(i + 1).map(String::as_str) {
                    Some("json") => json = true,
                    Some(o) => return Err(format!("unknown output `{o}' (ctrackd knows json)")),
                    None => return Err("option `-o' needs an output format".into()),
                }
                i += 1;
            }
            "-s" => {
                let section = next_word(i).map(str::to_string);
                if section.is_some() {
                    i += 1;
                }
                let section = match section.as_deref() {
                    Some("ct") => None,
                    Some("multicast") => Some("link".to_string()),
                    Some("expect") => return Err("expectation sync is not supported".into()),
                    _ => section,
                };
                set(&mut action, Action::Client(Request::Stats(section)))?;
            }
            "-i" | "-e" => {
                match next_word(i) {
                    Some("ct") => i += 1,
                    Some("expect") => return Err("expectation sync is not supported".into()),
                    Some(w) => return Err(format!("unknown table `{w}' for {a} (use ct)")),
                    None => {}
                }
                let which = if a == "-i" {
                    Which::Internal
                } else {
                    Which::External
                };
                set(
                    &mut action,
                    Action::Client(Request::Dump(which, Format::Text)),
                )?;
            }
            "-f" => {
                let which = match next_word(i) {
                    Some("internal") => Which::Internal,
                    Some("external") => Which::External,
                    Some(w) => {
                        return Err(format!("unknown cache `{w}' for -f (internal or external)"));
                    }
                    None => Which::All,
                };
                if which != Which::All {
                    i += 1;
                }
                set(&mut action, Action::Client(Request::FlushCache(which)))?;
            }
            "-F" | "-R" | "-c" => {
                match next_word(i) {
                    Some("ct") => i += 1,
                    Some("expect") => return Err("expectation sync is not supported".into()),
                    Some(w) => return Err(format!("unknown table `{w}' for {a} (use ct)")),
                    None => {}
                }
                let r = match a {
                    "-F" => Request::FlushKernel,
                    "-R" => Request::Resync,
                    _ => Request::Commit,
                };
                set(&mut action, Action::Client(r))?;
            }
            "-k" => set(&mut action, Action::Client(Request::Kill))?,
            "-B" => set(&mut action, Action::Client(Request::Bulk))?,
            "-n" => set(&mut action, Action::Client(Request::RequestResync))?,
            "-t" => set(&mut action, Action::Client(Request::ResetTimers))?,
            "-v" => set(&mut action, Action::Version)?,
            "-h" | "--help" => set(&mut action, Action::Help)?,
            _ => return Err(format!("unknown option `{a}'")),
        }
        i += 1;
    }
    let mut action = action.unwrap_or(Action::Run { daemon });
    if let Action::Client(Request::Dump(w, _)) = action {
        if xml && json {
            return Err("choose one of -x and -o json".into());
        }
        let f = if xml {
            Format::Xml
        } else if json {
            Format::Json
        } else {
            Format::Text
        };
        action = Action::Client(Request::Dump(w, f));
    } else if xml || json {
        return Err("-x and -o json go with -i or -e".into());
    }
    if daemon && !matches!(action, Action::Run { .. }) {
        return Err("-d starts the daemon; it does not go with a command".into());
    }
    Ok(Args { config, action })
}

/// Runs ctrackd (daemon or client) on `args` (without argv[0]); returns
/// the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let parsed = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ctrackd: {e}\nTry `ctrackd -h' for more information.");
            return 1;
        }
    };
    match parsed.action {
        Action::Help => {
            print!("{USAGE}");
            0
        }
        Action::Version => {
            println!(
                "ctrackd {} (conntrackd 1.4.7 compatible)",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        Action::Run { daemon } => {
            let path = parsed
                .config
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            match config::load(&path) {
                Ok(cfg) => run::run(cfg, daemon),
                Err(e) => {
                    eprintln!("ctrackd: {e}");
                    1
                }
            }
        }
        Action::Client(req) => {
            let socket = control::socket_path(Some(
                parsed
                    .config
                    .as_deref()
                    .unwrap_or(std::path::Path::new(config::DEFAULT_PATH)),
            ));
            match control::request(&socket, &req) {
                Ok(body) => {
                    let mut so = std::io::stdout().lock();
                    let _ = so.write_all(&body);
                    let _ = so.flush();
                    0
                }
                Err(e) => {
                    eprintln!("{}", e.0);
                    1
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        parse_args(&s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn conntrackd_flags() {
        assert_eq!(p("").unwrap().action, Action::Run { daemon: false });
        assert_eq!(p("-d -C /x").unwrap().config, Some(PathBuf::from("/x")));
        assert_eq!(
            p("-s").unwrap().action,
            Action::Client(Request::Stats(None))
        );
        assert_eq!(
            p("-s runtime").unwrap().action,
            Action::Client(Request::Stats(Some("runtime".into())))
        );
        assert_eq!(
            p("-i ct -o json").unwrap().action,
            Action::Client(Request::Dump(Which::Internal, Format::Json))
        );
        assert_eq!(
            p("-e -x").unwrap().action,
            Action::Client(Request::Dump(Which::External, Format::Xml))
        );
        assert_eq!(
            p("-f external").unwrap().action,
            Action::Client(Request::FlushCache(Which::External))
        );
        assert_eq!(
            p("-f").unwrap().action,
            Action::Client(Request::FlushCache(Which::All))
        );
        assert_eq!(p("-k").unwrap().action, Action::Client(Request::Kill));
        assert!(p("-z").unwrap_err().contains("unknown option `-z'"));
        assert!(p("-k -s").is_err());
        assert!(p("-d -k").is_err());
        assert!(p("-C").is_err());
        assert!(p("-s -x").is_err());
    }
}
