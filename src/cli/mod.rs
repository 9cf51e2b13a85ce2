//! `ctrack` as a drop-in for the `conntrack` CLI, plus ctrack's own
//! subcommands.

pub mod args;
pub mod getopt;
pub mod output;
pub mod run;

use args::exit;
use run::{Runner, report_arg_error};

/// Takes `--netns NAME` / `--netns=NAME` out of the arguments: ctrack's
/// option to work on another network namespace, valid with every command.
pub fn take_netns(args: &mut Vec<String>) -> Result<Option<String>, String> {
    let mut netns = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--netns" {
            if i + 1 >= args.len() {
                return Err("option `--netns' requires an argument".into());
            }
            netns = Some(args.remove(i + 1));
            args.remove(i);
        } else if let Some(v) = args[i].strip_prefix("--netns=") {
            netns = Some(v.to_string());
            args.remove(i);
        } else {
            i += 1;
        }
    }
    Ok(netns)
}

/// Runs the conntrack-compatible CLI on `args` (without argv[0]) and
/// returns the exit code.
pub fn main(mut args: Vec<String>) -> i32 {
    let netns = match take_netns(&mut args) {
        Ok(n) => n,
        Err(m) => {
            eprintln!("ctrack: {m}");
            return exit::PARAMETER;
        }
    };
    let mut runner = Runner::new(netns);
    if args.len() > 1 && (args[0] == "-R" || args[0] == "--load-file") {
        return run::load_file(&mut runner, &args[1]);
    }
    match args::parse(args) {
        Ok((cmd, warnings)) => {
            for w in warnings {
                eprintln!("{w}");
            }
            runner.run(&cmd, true)
        }
        Err(e) => report_arg_error(&e),
    }
}
