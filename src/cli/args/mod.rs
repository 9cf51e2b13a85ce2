//! conntrack 1.4.7's command line: flags in, a validated [`CtCommand`] out.
//!
//! Two stages, as ripgrep does: the getopt scanner (`cli::getopt`) yields
//! raw tokens, and [`parse`] turns them into settings, checking each value
//! ([`values`]) and then the legality matrix of commands and options
//! (`legality`: conntrack's `commands_v_options` and the per-protocol
//! tables), so the same command lines are accepted and refused with the
//! same messages. [`command`] holds what comes out.

pub mod command;
pub mod expect;
mod legality;
mod parse;
pub mod values;

pub use command::{Cmd, CtCommand, LabelChange, Output, Table};
pub use expect::ExpectArgs;
pub use parse::parse;
