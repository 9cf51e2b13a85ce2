//! The `ctrack` role: a drop-in for the `conntrack` CLI, plus ctrack's own
//! `flush-wan` command.
//!
//! The conntrack command line is parsed by [`args`] (on the GNU getopt
//! scanner of [`getopt`]), run by [`run`] with the requests of
//! [`request`], printed by [`output`]; `-R` files are read by [`load`],
//! whose lines select from the one [`table`] dump the run keeps.
//! Every failure comes back as a [`CliError`], printed once by
//! [`CliError::report`].

pub mod args;
pub mod error;
pub mod expect;
#[cfg(feature = "wan")]
pub mod flush_wan;
pub mod getopt;
pub mod load;
pub mod output;
pub mod progname;
pub mod request;
pub mod run;
pub mod table;
pub mod usage;

pub use error::CliError;

use crate::exit;
use crate::opts::take_netns;
use args::CtCommand;
use run::Runner;

/// Parses a conntrack command line, printing its warnings (deprecated or
/// ignored options) on stderr as conntrack does.
pub fn parse_command(argv: Vec<String>) -> Result<CtCommand, CliError> {
    let (cmd, warnings) = args::parse(argv)?;
    for w in warnings {
        eprintln!("{w}");
    }
    Ok(cmd)
}

/// Runs the conntrack-compatible CLI on `args` (without `argv[0]`; `--netns`
/// anywhere) and returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    match conntrack(args) {
        Ok(()) => exit::OK,
        Err(e) => e.report(),
    }
}

/// The conntrack CLI: `-R FILE`, or one command.
fn conntrack(mut args: Vec<String>) -> Result<(), CliError> {
    let netns = take_netns(&mut args).map_err(|_| CliError::netns_missing())?;
    let mut runner = Runner::new(netns);
    if args.len() > 1 && (args[0] == "-R" || args[0] == "--load-file") {
        return load::load_file(&mut runner, &args[1]);
    }
    runner.run(&parse_command(args)?, true)
}
