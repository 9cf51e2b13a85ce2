//! `ctrack flush-wan`: the WAN selection (`crate::wan`) run once, for
//! scripts and the OpenWrt hotplug hook (when ctrackd is not running to do
//! it itself).

use std::net::IpAddr;

use super::args::Output;
use super::error::CliError;
use super::output::{Context, Printer};
use crate::exit;
use crate::netlink::route::{self as rtnl, RtMsg};
use crate::opts::{OptError, Opts, Spec, take_netns};
use crate::wan::config::{FlushMode, check_ifname};
use crate::wan::flush::{Executor, FlushOptions, Outcome};
use crate::wan::rule::{Rule, is_selectable};

/// The usage text.
pub const USAGE: &str = "\
Usage: ctrack flush-wan --old-address ADDR [options]
Deletes the conntrack entries a WAN address change left stale: flows NATed
to, port-forwarded on, or originated from or to an address the WAN no
longer has. Flows that do not involve it are never touched.

  --old-address ADDR   the address the WAN had (IPv4 or IPv6; repeatable)
  --new-address ADDR   the address it has now (never stale; repeatable)
  --interface DEV      the WAN device: its current addresses are never stale
  --flush MODE         stale (default); all-wan: also every flow of the WAN's
                       old and current addresses; all: the whole table
  --dry-run            list what would be deleted, delete nothing
  -o json|extended|id  format of the listed flows (default: conntrack's text)
  --kernel-filter      let the kernel pre-select IPv4 flows (faster only
                       on very large tables)
  --netns NAME         work in the network namespace NAME

Prints the flows it deletes (or would delete) on stdout and the count on
stderr. Exit 0 on success, 1 on a kernel or system error, 2 on a bad
command line.
";

/// The parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushWanArgs {
    /// `--old-address` values.
    pub old: Vec<IpAddr>,
    /// `--new-address` values.
    pub new: Vec<IpAddr>,
    /// `--interface`.
    pub interface: Option<String>,
    /// `--flush`.
    pub mode: FlushMode,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `-o`.
    pub output: Output,
    /// `--kernel-filter`.
    pub kernel_filter: bool,
    /// `--netns` (taken by [`main`] before the parse).
    pub netns: Option<String>,
    /// `-h`/`--help`.
    pub help: bool,
}

/// An address given to `opt`.
fn parse_ip(v: &str, opt: &str) -> Result<IpAddr, String> {
    v.parse()
        .map_err(|_| format!("invalid address '{v}' for {opt} (an IPv4 or IPv6 address)"))
}

/// The options of `flush-wan` (`--netns` is taken before).
const OPTIONS: &[Spec] = &[
    Spec::value("--old-address"),
    Spec::value("--new-address"),
    Spec::value("--interface"),
    Spec::value("--flush"),
    Spec::value("-o"),
    Spec::value("--output"),
    Spec::flag("--dry-run"),
    Spec::flag("--kernel-filter"),
    Spec::flag("-h"),
    Spec::flag("--help"),
];

/// Parses the arguments after `flush-wan`.
pub fn parse(args: &[String]) -> Result<FlushWanArgs, String> {
    let mut a = FlushWanArgs::default();
    for opt in Opts::new(args, OPTIONS) {
        let (name, value) = opt.map_err(|e| match e {
            OptError::MissingValue { name } => format!("option '{name}' needs a value"),
            OptError::UnexpectedValue { name, .. } => format!("option '{name}' takes no value"),
            OptError::Unknown(arg) => format!("unknown option '{arg}' for flush-wan"),
        })?;
        let v = value.unwrap_or_default();
        match name {
            "--old-address" => a.old.push(parse_ip(v, name)?),
            "--new-address" => a.new.push(parse_ip(v, name)?),
            "--interface" => {
                check_ifname(v).map_err(|e| format!("{e} for --interface"))?;
                a.interface = Some(v.to_string());
            }
            "--flush" => {
                a.mode = v.parse().map_err(|_| {
                    format!("invalid value '{v}' for --flush (stale, all-wan or all)")
                })?
            }
            "-o" | "--output" => {
                for w in v.split(',') {
                    match w {
                        "json" => a.output.json = true,
                        "extended" => a.output.extended = true,
                        "id" => a.output.id = true,
                        _ => {
                            return Err(format!(
                                "invalid output format '{w}' for -o (json, extended or id)"
                            ));
                        }
                    }
                }
            }
            "--dry-run" => a.dry_run = true,
            "--kernel-filter" => a.kernel_filter = true,
            // the table's last two: "-h", "--help"
            _ => a.help = true,
        }
    }
    if a.help {
        return Ok(a);
    }
    if a.old.is_empty() && a.mode != FlushMode::All {
        return Err("flush-wan needs --old-address (the address the WAN had)".into());
    }
    Ok(a)
}

/// The usable addresses of `dev` (none when it is down), or an error when
/// it does not exist.
fn interface_addrs(dev: &str, netns: Option<&str>) -> Result<Vec<IpAddr>, String> {
    let msgs = rtnl::dump(netns).map_err(|e| format!("cannot read the addresses of {dev}: {e}"))?;
    let link = msgs.iter().find_map(|m| match m {
        RtMsg::Link(l) if l.name.as_deref() == Some(dev) => Some(l),
        _ => None,
    });
    let Some(link) = link else {
        return Err(format!("no interface '{dev}'"));
    };
    if !link.is_up() {
        return Ok(Vec::new());
    }
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RtMsg::Addr(a) if a.new && a.index == link.index => Some(a.addr),
            _ => None,
        })
        .collect())
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Runs `ctrack flush-wan ARGS` (`--netns` anywhere) and returns the exit
/// code.
pub fn main(args: Vec<String>) -> i32 {
    match flush_wan(args) {
        Ok(()) => exit::OK,
        Err(e) => e.report(),
    }
}

/// Parses the command line and runs it (or prints the usage).
fn flush_wan(mut args: Vec<String>) -> Result<(), CliError> {
    let netns = take_netns(&mut args).map_err(|_| CliError::netns_missing())?;
    let mut a = parse(&args).map_err(|m| {
        CliError::ours(format!(
            "{m}\nTry `ctrack flush-wan --help' for more information."
        ))
    })?;
    if a.help {
        print!("{USAGE}");
        return Ok(());
    }
    a.netns = netns;
    run(&a)
}

/// Runs a parsed `flush-wan`: prints the flows deleted (or that would be)
/// on stdout and the counts on stderr.
pub fn run(a: &FlushWanArgs) -> Result<(), CliError> {
    let netns = a.netns.as_deref();
    for x in &a.old {
        if !is_selectable(*x) {
            eprintln!(
                "ctrack: ignoring {x}: link-local, loopback and unspecified addresses are not WAN addresses"
            );
        }
    }
    let mut current = a.new.clone();
    if let Some(dev) = &a.interface {
        current.extend(interface_addrs(dev, netns).map_err(CliError::system)?);
    }
    for x in &a.old {
        if current.contains(x) {
            let on = a.interface.as_deref().unwrap_or("the WAN");
            eprintln!("ctrack: {x} is still on {on}: its flows are not stale");
        }
    }
    let rule = Rule::new(a.mode, &a.old, &current);
    let noun = match a.mode {
        FlushMode::Stale => "stale flow",
        FlushMode::AllWan => "WAN flow",
        FlushMode::All => "flow",
    };
    if rule.is_empty() {
        eprintln!("ctrack: 0 {noun}s deleted (nothing stale)");
        return Ok(());
    }
    let mut exec = Executor::open(netns)
        .map_err(|e| CliError::system(format!("cannot open ctnetlink: {e}")))?;
    let opts = FlushOptions {
        dry_run: a.dry_run,
        kernel_filter: a.kernel_filter,
    };
    let mut printer = Printer::new(a.output, None);
    let mut print_failed = false;
    let ctx = if a.dry_run {
        Context::Dump
    } else {
        Context::Delete
    };
    let result = exec.run(&rule, &opts, &mut |f, _reason, outcome| {
        if matches!(outcome, Outcome::WouldDelete | Outcome::Deleted)
            && printer.flow(f, ctx, None, None).is_err()
        {
            print_failed = true;
        }
    });
    if printer.finish().is_err() {
        print_failed = true;
    }
    let r = result.map_err(|e| CliError::system(format!("flush-wan failed: {e}")))?;
    if a.dry_run {
        eprintln!(
            "ctrack: {} would be deleted (dry run)",
            plural(r.selected, noun)
        );
    } else {
        let mut line = format!("ctrack: {} deleted", plural(r.deleted, noun));
        if r.already_gone > 0 {
            line.push_str(&format!(", {} already gone", r.already_gone));
        }
        eprintln!("{line}");
    }
    if r.malformed > 0 {
        eprintln!(
            "ctrack: {} entries could not be decoded and were skipped",
            r.malformed
        );
    }
    if r.errors > 0 {
        let why = r
            .first_error
            .map(crate::netlink::client::errno_text)
            .unwrap_or("unknown error");
        return Err(CliError::system(format!(
            "{} failed: {why}",
            plural(r.errors, "delete")
        )));
    }
    if print_failed {
        return Err(CliError::silent());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<FlushWanArgs, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_every_option() {
        let a = p(&[
            "--old-address",
            "198.51.100.7",
            "--old-address=2001:db8::1",
            "--new-address",
            "198.51.100.9",
            "--interface=pppoe-wan",
            "--flush",
            "all-wan",
            "--dry-run",
            "-o",
            "json",
            "--kernel-filter",
        ])
        .unwrap();
        assert_eq!(a.old.len(), 2);
        assert_eq!(a.new, ["198.51.100.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.interface.as_deref(), Some("pppoe-wan"));
        assert_eq!(a.mode, FlushMode::AllWan);
        assert!(a.dry_run && a.output.json && a.kernel_filter);
        assert!(p(&["--help"]).unwrap().help);
        assert_eq!(p(&["--flush", "all"]).unwrap().mode, FlushMode::All);
    }

    #[test]
    fn clear_errors() {
        for (args, want) in [
            (&[][..], "needs --old-address"),
            (
                &["--old-address"][..],
                "option '--old-address' needs a value",
            ),
            (
                &["--old-address", "1.2.3"][..],
                "invalid address '1.2.3' for --old-address",
            ),
            (
                &["--old-address", "10.0.0.1/24"][..],
                "invalid address '10.0.0.1/24'",
            ),
            (&["--old-address", "abc"][..], "invalid address 'abc'"),
            (
                &["--old-address", "1.2.3.4", "--new-address", "x"][..],
                "for --new-address",
            ),
            (
                &["--old-address", "1.2.3.4", "--flush", "some"][..],
                "invalid value 'some' for --flush",
            ),
            (
                &["--old-address", "1.2.3.4", "-o", "xml"][..],
                "invalid output format 'xml'",
            ),
            (
                &["--old-address", "1.2.3.4", "--interface", "a/b"][..],
                "invalid interface name",
            ),
            (
                &["--old-address", "1.2.3.4", "--bogus"][..],
                "unknown option '--bogus'",
            ),
            (
                &["--dry-run=yes", "--old-address", "1.2.3.4"][..],
                "takes no value",
            ),
        ] {
            let e = p(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
