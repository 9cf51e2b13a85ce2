//! The small option parser of ctrack's own commands (`ctrack flush-wan`,
//! `ctrack web`, `ctrackd`), and `--netns`, which every `ctrack` role takes
//! the same way.
//!
//! conntrack's command line keeps GNU getopt_long's rules (`cli::getopt`);
//! these commands have simpler ones: each argument is an option of the
//! command's table, a value follows its option as the next argument (or,
//! for a `--long` option, after `=`), and there are no positional words.
//! Errors are typed: each command words them its own way.

/// What an option takes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takes {
    /// Nothing: a flag.
    Nothing,
    /// A value: the next argument whatever it looks like, or `=VALUE`.
    Value,
    /// A word when the next argument does not start with `-` (conntrackd's
    /// `-s [section]`), or `=VALUE`.
    OptionalWord,
}

/// One option of a command: its spelling (`-o`, `--old-address`) and what
/// follows it.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The option as typed, dashes included.
    pub name: &'static str,
    /// What follows it.
    pub takes: Takes,
}

impl Spec {
    /// A flag.
    pub const fn flag(name: &'static str) -> Spec {
        Spec {
            name,
            takes: Takes::Nothing,
        }
    }

    /// An option with a value.
    pub const fn value(name: &'static str) -> Spec {
        Spec {
            name,
            takes: Takes::Value,
        }
    }

    /// An option with an optional word after it.
    pub const fn optional_word(name: &'static str) -> Spec {
        Spec {
            name,
            takes: Takes::OptionalWord,
        }
    }
}

/// A command line the table does not accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptError {
    /// An option that needs a value came last.
    MissingValue {
        /// The option, as in its spec.
        name: &'static str,
    },
    /// `--flag=VALUE` for a flag.
    UnexpectedValue {
        /// The option, as in its spec.
        name: &'static str,
        /// The argument as given.
        arg: String,
    },
    /// An argument that is no option of the command, as given.
    Unknown(String),
}

/// The options of a command line, in order: each `(name, value)` with the
/// name as in its spec. Stops after the first error.
pub struct Opts<'a> {
    args: &'a [String],
    specs: &'static [Spec],
    next: usize,
}

impl<'a> Opts<'a> {
    /// Walks `args` (the command's arguments, without its name) against
    /// the command's table `specs`.
    pub fn new(args: &'a [String], specs: &'static [Spec]) -> Opts<'a> {
        Opts {
            args,
            specs,
            next: 0,
        }
    }

    fn spec(&self, name: &str) -> Option<&'static Spec> {
        self.specs.iter().find(|s| s.name == name)
    }

    fn step(&mut self) -> Result<(&'static str, Option<&'a str>), OptError> {
        let arg = self.args[self.next].as_str();
        self.next += 1;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (arg, None),
        };
        let spec = self
            .spec(name)
            .ok_or_else(|| OptError::Unknown(arg.to_string()))?;
        let following = self.args.get(self.next).map(String::as_str);
        let value = match (spec.takes, inline) {
            (_, Some(v)) if spec.takes != Takes::Nothing => Some(v),
            (Takes::Nothing, Some(_)) => {
                return Err(OptError::UnexpectedValue {
                    name: spec.name,
                    arg: arg.to_string(),
                });
            }
            (Takes::Nothing, None) => None,
            (Takes::Value, _) => {
                let v = following.ok_or(OptError::MissingValue { name: spec.name })?;
                Some(v)
            }
            (Takes::OptionalWord, _) => following.filter(|w| !w.starts_with('-')),
        };
        if inline.is_none() && value.is_some() {
            self.next += 1;
        }
        Ok((spec.name, value))
    }
}

impl<'a> Iterator for Opts<'a> {
    type Item = Result<(&'static str, Option<&'a str>), OptError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.args.len() {
            return None;
        }
        let item = self.step();
        if item.is_err() {
            self.next = self.args.len();
        }
        Some(item)
    }
}

/// ctrack's option to work in another network namespace, valid anywhere
/// on every `ctrack` command line.
pub const NETNS: &str = "--netns";

/// How many arguments from `args[i]` spell `--netns NAME` or
/// `--netns=NAME` (0: none), and the name (None: `--netns` came last).
fn netns_at(args: &[String], i: usize) -> (usize, Option<&str>) {
    let arg = args[i].as_str();
    if arg == NETNS {
        match args.get(i + 1) {
            Some(name) => (2, Some(name.as_str())),
            None => (1, None),
        }
    } else if let Some(name) = arg.strip_prefix("--netns=") {
        (1, Some(name))
    } else {
        (0, None)
    }
}

/// Takes every `--netns NAME` / `--netns=NAME` out of `args`; the last one
/// wins. The one error: `--netns` came last, without its name.
pub fn take_netns(args: &mut Vec<String>) -> Result<Option<String>, OptError> {
    let mut netns = None;
    let mut i = 0;
    while i < args.len() {
        match netns_at(args, i) {
            (0, _) => i += 1,
            (n, Some(name)) => {
                netns = Some(name.to_string());
                args.drain(i..i + n);
            }
            (_, None) => return Err(OptError::MissingValue { name: NETNS }),
        }
    }
    Ok(netns)
}

/// Index of the command word (`flush-wan`, `web`): the first argument
/// that is not `--netns NAME`/`--netns=NAME`.
pub fn command_word(args: &[String]) -> Option<usize> {
    let mut i = 0;
    while i < args.len() {
        match netns_at(args, i) {
            (0, _) => return Some(i),
            (n, _) => i += n,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        Spec::flag("--dry-run"),
        Spec::value("--old-address"),
        Spec::value("-o"),
        Spec::optional_word("-s"),
    ];

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn walk(s: &str) -> Vec<Result<(&'static str, Option<String>), OptError>> {
        let args = words(s);
        Opts::new(&args, SPECS)
            .map(|r| r.map(|(n, v)| (n, v.map(str::to_string))))
            .collect()
    }

    #[test]
    fn values_follow_or_are_attached() {
        assert_eq!(
            walk("--old-address 1.2.3.4 --old-address=::1 -o -x --dry-run"),
            [
                Ok(("--old-address", Some("1.2.3.4".into()))),
                Ok(("--old-address", Some("::1".into()))),
                Ok(("-o", Some("-x".into()))),
                Ok(("--dry-run", None)),
            ]
        );
        assert_eq!(
            walk("-s runtime -s -s=x"),
            [
                Ok(("-s", Some("runtime".into()))),
                Ok(("-s", None)),
                Err(OptError::Unknown("-s=x".into())),
            ]
        );
    }

    #[test]
    fn errors_are_typed_and_stop_the_walk() {
        assert_eq!(
            walk("--dry-run --old-address"),
            [
                Ok(("--dry-run", None)),
                Err(OptError::MissingValue {
                    name: "--old-address"
                }),
            ]
        );
        assert_eq!(
            walk("--dry-run=yes --bogus"),
            [Err(OptError::UnexpectedValue {
                name: "--dry-run",
                arg: "--dry-run=yes".into()
            })]
        );
        assert_eq!(
            walk("--bogus=1 --dry-run"),
            [Err(OptError::Unknown("--bogus=1".into()))]
        );
    }

    #[test]
    fn netns_anywhere() {
        let mut a = words("--netns a flush-wan --netns=b -x --netns c");
        assert_eq!(command_word(&a), Some(2));
        assert_eq!(take_netns(&mut a), Ok(Some("c".into())));
        assert_eq!(a, words("flush-wan -x"));
        let mut a = words("-L --netns");
        assert_eq!(
            take_netns(&mut a),
            Err(OptError::MissingValue { name: NETNS })
        );
        assert_eq!(command_word(&words("--netns=x")), None);
        assert_eq!(command_word(&words("--netns")), None);
        assert_eq!(command_word(&words("--netns x --netns=y web")), Some(3));
    }
}
