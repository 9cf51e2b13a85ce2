//! A `getopt_long` work-alike: the parsing rules conntrack users rely on
//! (bundled short flags, attached or separate values, unique prefixes of
//! long options, optional values, GNU argument permutation).
//!
//! It yields raw tokens only; the meaning of each flag lives in `args`.

/// Whether an option takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HasArg {
    /// No value.
    No,
    /// A value: attached (`-p6`, `--proto=6`) or the next argument.
    Required,
    /// A value only when attached (`-Lexpect`, `--dump=expect`).
    Optional,
}

/// One long option: its name, value kind and the key it reports.
#[derive(Clone, Copy, Debug)]
pub struct LongOpt {
    /// Name without the dashes.
    pub name: &'static str,
    /// Value kind.
    pub has_arg: HasArg,
    /// The key reported for it (a short option char or a private code).
    pub key: u32,
}

/// What the scanner found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// An option with its key and value (if any).
    Opt {
        /// The option's key.
        key: u32,
        /// The value, if one was given.
        value: Option<String>,
        /// The argument as written (for error messages).
        spelled: String,
    },
    /// An unknown or ambiguous option (as written).
    Unknown(String),
    /// A required value is missing (the option as written).
    MissingValue(String),
}

/// The scanner state over an argument vector (argv without argv[0]).
#[derive(Debug)]
pub struct Getopt {
    args: Vec<String>,
    /// Index of the next argument to scan.
    pub next: usize,
    /// Position inside a bundle of short options (`-abc`), 0 = none.
    pos: usize,
}

impl Getopt {
    /// A scanner over `args` (without the program name).
    pub fn new(args: Vec<String>) -> Getopt {
        Getopt {
            args,
            next: 0,
            pos: 0,
        }
    }

    /// The argument at the scan position if it is not an option (does not
    /// start with `-` or `!`): conntrack's `get_optional_arg`, which lets
    /// `-L expect` and `-n 1.2.3.4` take a separate optional value.
    pub fn take_optional_word(&mut self) -> Option<String> {
        if self.pos != 0 {
            return None;
        }
        let a = self.args.get(self.next)?;
        if a.starts_with('-') || a.starts_with('!') {
            return None;
        }
        let a = a.clone();
        self.next += 1;
        Some(a)
    }

    /// The next token, given the short option spec (`"L::p:h"` style) and
    /// the long options currently known. Non-option arguments are skipped
    /// (GNU permutation); `--` ends scanning.
    pub fn next_token(&mut self, shorts: &str, longs: &[LongOpt]) -> Option<Token> {
        if self.pos == 0 {
            loop {
                let a = self.args.get(self.next)?;
                if a == "--" {
                    self.next = self.args.len();
                    return None;
                }
                if a.starts_with("--") {
                    return Some(self.long(longs));
                }
                if a.len() > 1 && a.starts_with('-') {
                    self.pos = 1;
                    break;
                }
                // a non-option: skipped, as GNU getopt permutes it away
                self.next += 1;
            }
        }
        Some(self.short(shorts))
    }

    fn long(&mut self, longs: &[LongOpt]) -> Token {
        let arg = self.args[self.next].clone();
        self.next += 1;
        let body = &arg[2..];
        let (name, attached) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let exact = longs.iter().find(|o| o.name == name);
        let opt = match exact {
            Some(o) => *o,
            None => {
                let cands: Vec<&LongOpt> =
                    longs.iter().filter(|o| o.name.starts_with(name)).collect();
                match cands.first() {
                    Some(first)
                        if !name.is_empty()
                            && cands
                                .iter()
                                .all(|c| c.key == first.key && c.has_arg == first.has_arg) =>
                    {
                        **first
                    }
                    _ => return Token::Unknown(arg),
                }
            }
        };
        let value = match opt.has_arg {
            HasArg::No => {
                if attached.is_some() {
                    return Token::Unknown(arg);
                }
                None
            }
            HasArg::Optional => attached,
            HasArg::Required => match attached {
                Some(v) => Some(v),
                None => match self.args.get(self.next) {
                    Some(v) => {
                        self.next += 1;
                        Some(v.clone())
                    }
                    None => return Token::MissingValue(arg),
                },
            },
        };
        Token::Opt {
            key: opt.key,
            value,
            spelled: arg,
        }
    }

    fn short(&mut self, shorts: &str) -> Token {
        let arg = self.args[self.next].clone();
        let bytes = arg.as_bytes();
        let c = bytes[self.pos];
        self.pos += 1;
        let at_end = self.pos >= bytes.len();
        let finish = |s: &mut Self| {
            s.pos = 0;
            s.next += 1;
        };
        let spec = shorts
            .as_bytes()
            .iter()
            .position(|&b| b == c && c != b':')
            .map(|i| {
                let rest = &shorts.as_bytes()[i + 1..];
                if rest.starts_with(b"::") {
                    HasArg::Optional
                } else if rest.starts_with(b":") {
                    HasArg::Required
                } else {
                    HasArg::No
                }
            });
        let Some(has_arg) = spec else {
            if at_end {
                finish(self);
            }
            return Token::Unknown(arg);
        };
        let value = match has_arg {
            HasArg::No => {
                if at_end {
                    finish(self);
                }
                None
            }
            HasArg::Optional => {
                let v = (!at_end).then(|| arg[self.pos..].to_string());
                finish(self);
                v
            }
            HasArg::Required => {
                if !at_end {
                    let v = arg[self.pos..].to_string();
                    finish(self);
                    Some(v)
                } else {
                    finish(self);
                    match self.args.get(self.next) {
                        Some(v) => {
                            let v = v.clone();
                            self.next += 1;
                            Some(v)
                        }
                        None => return Token::MissingValue(arg),
                    }
                }
            }
        };
        Token::Opt {
            key: c as u32,
            value,
            spelled: arg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONGS: &[LongOpt] = &[
        LongOpt {
            name: "dump",
            has_arg: HasArg::Optional,
            key: 'L' as u32,
        },
        LongOpt {
            name: "counter",
            has_arg: HasArg::Optional,
            key: 'C' as u32,
        },
        LongOpt {
            name: "src",
            has_arg: HasArg::Required,
            key: 's' as u32,
        },
        LongOpt {
            name: "orig-src",
            has_arg: HasArg::Required,
            key: 's' as u32,
        },
        LongOpt {
            name: "orig-dst",
            has_arg: HasArg::Required,
            key: 'd' as u32,
        },
        LongOpt {
            name: "stats",
            has_arg: HasArg::No,
            key: 'S' as u32,
        },
    ];

    fn all(args: &[&str]) -> Vec<Token> {
        let mut g = Getopt::new(args.iter().map(|s| s.to_string()).collect());
        let mut v = Vec::new();
        while let Some(t) = g.next_token("L::C::s:d:Sz", LONGS) {
            v.push(t);
        }
        v
    }

    fn opt(k: char, v: Option<&str>, s: &str) -> Token {
        Token::Opt {
            key: k as u32,
            value: v.map(str::to_string),
            spelled: s.to_string(),
        }
    }

    #[test]
    fn shorts_longs_prefixes() {
        assert_eq!(
            all(&["-Lz", "-s1.2.3.4", "-d", "5.6.7.8"]),
            vec![
                opt('L', Some("z"), "-Lz"),
                opt('s', Some("1.2.3.4"), "-s1.2.3.4"),
                opt('d', Some("5.6.7.8"), "-d"),
            ]
        );
        assert_eq!(
            all(&["--count", "--src=1", "--orig-s", "2"]),
            vec![
                opt('C', None, "--count"),
                opt('s', Some("1"), "--src=1"),
                opt('s', Some("2"), "--orig-s"),
            ]
        );
        assert_eq!(all(&["--orig", "x"]), vec![Token::Unknown("--orig".into())]);
        assert_eq!(
            all(&["--stats=1"]),
            vec![Token::Unknown("--stats=1".into())]
        );
        assert_eq!(all(&["-s"]), vec![Token::MissingValue("-s".into())]);
        assert_eq!(all(&["--src"]), vec![Token::MissingValue("--src".into())]);
        assert_eq!(all(&["-x"]), vec![Token::Unknown("-x".into())]);
        assert_eq!(all(&["word", "-S"]), vec![opt('S', None, "-S")]);
        assert_eq!(
            all(&["-zS"]),
            vec![opt('z', None, "-zS"), opt('S', None, "-zS")]
        );
    }

    #[test]
    fn optional_words() {
        let mut g = Getopt::new(vec!["-L".into(), "expect".into(), "-n".into(), "-x".into()]);
        assert_eq!(g.next_token("L::n::", &[]), Some(opt('L', None, "-L")));
        assert_eq!(g.take_optional_word(), Some("expect".into()));
        assert_eq!(g.next_token("L::n::", &[]), Some(opt('n', None, "-n")));
        assert_eq!(g.take_optional_word(), None);
    }
}
