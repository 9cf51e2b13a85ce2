//! `-R FILE` / `--load-file FILE`: conntrack commands read from a file
//! (a `-o save` dump, say), one per line, run with no summaries.

use std::io::{self, Read, Write};

use super::args::Cmd;
use super::error::CliError;
use super::parse_command;
use super::run::Runner;

/// Splits a `-R` file line into arguments like iptables-restore: blanks
/// separate, double quotes group, backslash escapes inside quotes.
pub fn split_line(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut escaped = false;
    let mut have = false;
    for ch in line.chars() {
        if in_quote {
            if escaped {
                cur.push(ch);
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_quote = false;
            } else {
                cur.push(ch);
            }
            continue;
        }
        match ch {
            '"' => {
                in_quote = true;
                have = true;
            }
            ' ' | '\t' | '\n' | '\r' => {
                if have || !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => cur.push(c),
        }
        if cur.len() >= 1024 {
            return Err("Parameter too long!".into());
        }
    }
    if have || !cur.is_empty() {
        args.push(cur);
    }
    if args.len() >= 255 {
        return Err("too many arguments".into());
    }
    Ok(args)
}

/// `-R FILE`: runs each line (only -I -A -U -D -F allowed) with no
/// summary, stopping at the first error (a failed -U or -D is reported
/// and the next line runs).
pub fn load_file(runner: &mut Runner, path: &str) -> Result<(), CliError> {
    let unreadable = || CliError::param(format!("Failed to open file {path} for reading"));
    let text = if path == "-" {
        let mut s = String::new();
        io::stdin()
            .read_to_string(&mut s)
            .map_err(|_| unreadable())?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|_| unreadable())?
    };
    let mut cmds = Vec::new();
    for line in text.lines() {
        let l = line.trim_start_matches([' ', '\t']);
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let argv = split_line(l).map_err(CliError::param)?;
        cmds.push(parse_command(argv)?);
    }
    for c in &cmds {
        let allowed = matches!(
            c.cmd,
            Some(Cmd::Create | Cmd::Add | Cmd::Update | Cmd::Delete | Cmd::Flush)
        );
        if !allowed {
            let name = match c.cmd {
                Some(Cmd::List) => "-L",
                Some(Cmd::Get) => "-G",
                Some(Cmd::Event) => "-E",
                Some(Cmd::Version) => "-V",
                Some(Cmd::Help) => "-h",
                Some(Cmd::Count) => "-C",
                Some(Cmd::Stats) => "-S",
                Some(Cmd::ExpList) => "-L expect",
                Some(Cmd::ExpCreate) => "-C expect",
                Some(Cmd::ExpDelete) => "-D expect",
                Some(Cmd::ExpGet) => "-G expect",
                Some(Cmd::ExpFlush) => "-F expect",
                Some(Cmd::ExpEvent) => "-E expect",
                Some(Cmd::ExpCount) => "-C expect",
                Some(Cmd::ExpStats) => "-S expect",
                _ => "unknown",
            };
            return Err(CliError::param(format!(
                "Cannot use command `{name}' with --load-file"
            )));
        }
    }
    runner.keep_table();
    for c in &cmds {
        match runner.run(c, false) {
            Ok(()) => {}
            Err(e) if matches!(c.cmd, Some(Cmd::Update | Cmd::Delete)) => {
                e.report();
            }
            Err(e) => return Err(e),
        }
    }
    let _ = io::stdout().flush();
    Ok(())
}
