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
pub mod statspart;
#[cfg(feature = "sync")]
pub mod syncpart;
#[cfg(feature = "wan")]
pub mod wanpart;
#[cfg(feature = "web")]
pub mod webpart;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::exit;
use crate::opts::{self, OptError, Opts, Spec};
use config::ConfigError;
use control::{ClientError, Format, Request, Which};

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
Tutorial forms (conntrack's commands, as tutorials show them for conntrackd):
  -L|-G|-D|-I|-U|-E|-C [table] [conntrack's filters and -o ...]
                         the same as `ctrack` with the same arguments, on the
                         table of the network namespace ctrackd runs in
                         (or --netns NAME); -F keeps conntrackd's meaning
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

/// ctrackd's options (conntrackd's: one letter each, some with an
/// optional word after them).
const OPTIONS: &[Spec] = &[
    Spec::value("-C"),
    Spec::flag("-d"),
    Spec::flag("-x"),
    Spec::value("-o"),
    Spec::optional_word("-s"),
    Spec::optional_word("-i"),
    Spec::optional_word("-e"),
    Spec::optional_word("-f"),
    Spec::optional_word("-F"),
    Spec::optional_word("-R"),
    Spec::optional_word("-c"),
    Spec::flag("-k"),
    Spec::flag("-B"),
    Spec::flag("-n"),
    Spec::flag("-t"),
    Spec::flag("-v"),
    Spec::flag("-h"),
    Spec::flag("--help"),
];

/// The table word after `-i`, `-e`, `-F`, `-R` and `-c`: only `ct`.
fn check_table(flag: &str, word: Option<&str>) -> Result<(), String> {
    match word {
        None | Some("ct") => Ok(()),
        Some("expect") => Err("expectation sync is not supported".into()),
        Some(w) => Err(format!("unknown table `{w}' for {flag} (use ct)")),
    }
}

/// The sections of `-s WORD` in conntrackd's order of matching (a word
/// names the first section it is a prefix of: `-s net` is `network`),
/// then ctrack's own.
const STATS_SECTIONS: &[&str] = &[
    "network",
    "cache",
    "runtime",
    "multicast",
    "link",
    "rsqueue",
    "process",
    "queue",
    "ct",
    "expect",
    "wan",
];

/// The section `-s WORD` asks for (None: the plain summary, which `ct`
/// is), matched as conntrackd matches it.
fn stats_section(word: &str) -> Result<Option<String>, String> {
    let name = STATS_SECTIONS
        .iter()
        .find(|s| s.starts_with(word))
        .ok_or_else(|| format!("unknown parameter `{word}' for option `-s'"))?;
    Ok(match *name {
        "ct" => None,
        "multicast" => Some("link".into()),
        other => Some(other.into()),
    })
}

/// Parses ctrackd's flags (conntrackd's: one letter each, some with an
/// optional word after them).
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut config = None;
    let mut action: Option<Action> = None;
    let mut daemon = false;
    let mut xml = false;
    let mut json = false;
    let set = |a: &mut Option<Action>, new: Action| -> Result<(), String> {
        if a.is_some() {
            return Err("only one command at a time".into());
        }
        *a = Some(new);
        Ok(())
    };
    for opt in Opts::new(args, OPTIONS) {
        let (flag, word) = opt.map_err(|e| match e {
            OptError::MissingValue { name: "-C" } => "option `-C' needs a config file".into(),
            // the other option with a value: -o
            OptError::MissingValue { name } => format!("option `{name}' needs an output format"),
            OptError::UnexpectedValue { arg, .. } | OptError::Unknown(arg) => {
                format!("unknown option `{arg}'")
            }
        })?;
        match flag {
            "-C" => config = word.map(PathBuf::from),
            "-d" => daemon = true,
            "-x" => xml = true,
            "-o" => match word.unwrap_or_default() {
                "json" => json = true,
                o => return Err(format!("unknown output `{o}' (ctrackd knows json)")),
            },
            "-s" => {
                let section = match word {
                    None => None,
                    Some(w) => stats_section(w)?,
                };
                set(&mut action, Action::Client(Request::Stats(section)))?;
            }
            "-i" | "-e" => {
                check_table(flag, word)?;
                let which = if flag == "-i" {
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
                let which = match word {
                    Some("internal") => Which::Internal,
                    Some("external") => Which::External,
                    Some(w) => {
                        return Err(format!("unknown cache `{w}' for -f (internal or external)"));
                    }
                    None => Which::All,
                };
                set(&mut action, Action::Client(Request::FlushCache(which)))?;
            }
            "-F" | "-R" | "-c" => {
                check_table(flag, word)?;
                let r = match flag {
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
            // the table's last two: "-h", "--help"
            _ => set(&mut action, Action::Help)?,
        }
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

/// conntrack's commands that conntrackd's flag set leaves free, which
/// tutorials show used on the daemon (`conntrackd -L`).
const TUTORIAL_COMMANDS: [&str; 6] = ["-L", "-G", "-D", "-I", "-U", "-E"];

/// Whether the word after `-C` makes it conntrack's count rather than
/// conntrackd's config file: nothing, an option, or a table name
/// (conntrack takes any prefix of one).
fn counts(next: Option<&String>) -> bool {
    next.is_none_or(|w| {
        w.starts_with('-')
            || "conntrack".starts_with(w.as_str())
            || "expect".starts_with(w.as_str())
    })
}

/// When `args` are one of the tutorial forms (`ctrackd -L ...`, also
/// after `--netns NAME` or a `-C FILE` that has no use there), the command
/// line for ctrack: it runs them as `ctrack` would, so ctrackd's output and
/// exit codes are ctrack's. `-F` keeps conntrackd's meaning.
pub fn tutorial_form(args: &[String]) -> Option<Vec<String>> {
    let mut rest = args.to_vec();
    let mut i = opts::command_word(&rest)?;
    if rest[i] == "-C" && !counts(rest.get(i + 1)) && rest.len() > i + 2 {
        rest.drain(i..i + 2);
        i = opts::command_word(&rest)?;
    }
    let word = rest[i].as_str();
    let tutorial = TUTORIAL_COMMANDS.contains(&word) || (word == "-C" && counts(rest.get(i + 1)));
    tutorial.then_some(rest)
}

/// Why ctrackd or its client command stops before the daemon runs: printed
/// once, by [`Failure::report`] in [`main`].
#[derive(Debug)]
pub enum Failure {
    /// A bad command line.
    Usage(String),
    /// The configuration cannot be used.
    Config(ConfigError),
    /// The running daemon could not be asked.
    Client(ClientError),
    /// The daemon could not start.
    Start(run::StartFailure),
}

impl Failure {
    /// Prints the failure; returns its exit code (conntrackd's: 1 for
    /// every failure).
    pub fn report(self) -> i32 {
        match self {
            Failure::Usage(e) => {
                eprintln!("ctrackd: {e}\nTry `ctrackd -h' for more information.")
            }
            Failure::Config(e) => eprintln!("ctrackd: {e}"),
            Failure::Client(e) => eprintln!("{}", e.0),
            // once the log is open, a failure goes where the rest went
            Failure::Start(run::StartFailure {
                error,
                log: Some(mut log),
            }) => log.error(&error.to_string()),
            Failure::Start(run::StartFailure { error, log: None }) => {
                eprintln!("ctrackd: {error}")
            }
        }
        exit::OTHER
    }
}

/// Runs ctrackd (daemon or client) on `args` (without `argv[0]`); returns
/// the exit code.
pub fn main(args: Vec<String>) -> i32 {
    if let Some(cli) = tutorial_form(&args) {
        return crate::cli::main(cli);
    }
    match ctrackd(args) {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

/// Parses the command line and does what it asks: Ok with the exit code of
/// what ran (the daemon reports its own failures), or why nothing could.
fn ctrackd(args: Vec<String>) -> Result<i32, Failure> {
    let parsed = parse_args(&args).map_err(Failure::Usage)?;
    let explicit = parsed.config.is_some();
    let config_path = parsed
        .config
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    match parsed.action {
        Action::Help => {
            print!("{USAGE}");
            Ok(exit::OK)
        }
        Action::Version => {
            println!(
                "ctrackd {} (conntrackd 1.4.7 compatible)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(exit::OK)
        }
        Action::Run { daemon } => {
            let cfg = config::load(&config_path).map_err(Failure::Config)?;
            run::run(cfg, daemon).map_err(Failure::Start)?;
            Ok(exit::OK)
        }
        Action::Client(req) => {
            let socket = control::socket_path(&config_path, explicit).map_err(Failure::Config)?;
            ask(&socket, &req).map_err(Failure::Client)?;
            Ok(exit::OK)
        }
    }
}

/// Sends `req` to the daemon listening on `socket` and copies its answer
/// to stdout.
fn ask(socket: &Path, req: &Request) -> Result<(), ClientError> {
    let body = control::request(socket, req)?;
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(&body);
    let _ = so.flush();
    Ok(())
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
        // -s words as conntrackd matches them: prefixes, in its order
        for (word, section) in [
            ("net", Some("network")),
            ("n", Some("network")),
            ("c", Some("cache")),
            ("ct", None),
            ("r", Some("runtime")),
            ("rs", Some("rsqueue")),
            ("multicast", Some("link")),
            ("m", Some("link")),
            ("l", Some("link")),
            ("p", Some("process")),
            ("q", Some("queue")),
            ("e", Some("expect")),
            ("expect", Some("expect")),
            ("w", Some("wan")),
        ] {
            assert_eq!(
                p(&format!("-s {word}")).unwrap().action,
                Action::Client(Request::Stats(section.map(str::to_string))),
                "-s {word}"
            );
        }
        assert_eq!(
            p("-s bogus").unwrap_err(),
            "unknown parameter `bogus' for option `-s'"
        );
        assert!(p("-s networks").is_err());
    }

    #[test]
    fn tutorial_forms_go_to_the_cli() {
        let t = |s: &str| {
            let args: Vec<String> = s.split_whitespace().map(str::to_string).collect();
            tutorial_form(&args).map(|v| v.join(" "))
        };
        for form in [
            "-L",
            "-L conntrack -p tcp -o extended",
            "-G -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2",
            "-D -s 10.0.0.0/8",
            "-I -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t 10",
            "-U -m 1",
            "-E -e NEW -o json",
            "-C",
            "-C conntrack",
            "-C expect",
            "-C -f ipv4",
            "--netns lab -L -o json",
            "--netns=lab -C",
        ] {
            assert_eq!(t(form).as_deref(), Some(form), "{form}");
        }
        // a config file before the command has no use there
        assert_eq!(t("-C /etc/x.conf -L -p tcp").as_deref(), Some("-L -p tcp"));
        assert_eq!(t("--netns n -C x.conf -E").as_deref(), Some("--netns n -E"));
        // conntrackd's own meanings stay
        for own in [
            "",
            "-C /etc/x.conf",
            "-C x.conf -s",
            "-F",
            "-s",
            "-d",
            "-i ct",
            "-R",
            "-C /x -F",
            "-k -L",
        ] {
            assert_eq!(t(own), None, "{own}");
        }
    }
}
