//! The conntrackd.conf grammar, shared by the daemon and the rooms whose
//! blocks it holds (sync, web, wan): text becomes a tree of [`Item`]s (a
//! key, its arguments, maybe a block); a [`Checker`] checks a block
//! against a table of known keys and reads typed values, and its errors
//! and warnings name file, line and key.
//!
//! What the blocks mean is not here: daemon/config.rs knows the blocks
//! and keys of ctrackd.conf and parses General and Filter; each room
//! parses its own block's keys (`SyncConfig::from_block`,
//! `WebConfig::from_block`, `WanConfig::from_block`), so none of them
//! imports the daemon.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::flow::filter::Prefix;

/// A configuration error: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when not about one line).
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.msg)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.msg)
        }
    }
}

impl std::error::Error for ConfigError {}

/// One configuration statement: `Key arg...` or `Key arg... { items }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The keyword.
    pub key: String,
    /// Arguments on the same line.
    pub args: Vec<String>,
    /// 1-based line of the keyword.
    pub line: usize,
    /// The block's items, for block statements.
    pub block: Option<Vec<Item>>,
}

impl Item {
    /// The items of this statement's block (empty for a plain statement).
    pub fn items(&self) -> &[Item] {
        self.block.as_deref().unwrap_or(&[])
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

/// Longest word the grammar takes (conntrackd's longest values, paths,
/// are at most 256 bytes): a longer one is an error, so no message ever
/// echoes a huge line.
pub const MAX_WORD: usize = 1024;

/// Most characters of a value an error message shows.
const SHOWN: usize = 64;

/// `v` as an error message shows it: control characters escaped, and cut
/// to its first [`SHOWN`] characters (with `...`) when longer, so a huge
/// bad value does not make a huge message.
pub fn shown(v: &str) -> String {
    let mut out = String::new();
    for (n, c) in v.chars().enumerate() {
        if n == SHOWN {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// Splits the text into words, braces and line ends. `#` starts a comment
/// (except inside a path, where conntrackd's lexer keeps it, and inside
/// quotes); `"..."` quotes a value (spaces included); `;` separates.
fn lex(file: &str, text: &str) -> Result<Vec<(Tok, usize)>, ConfigError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let err = |msg: String| ConfigError {
            file: file.to_string(),
            line: line_no,
            msg,
        };
        let mut word = String::new();
        // a word was started (also by an empty pair of quotes)
        let mut in_word = false;
        let flush = |word: &mut String, in_word: &mut bool, out: &mut Vec<(Tok, usize)>| {
            if std::mem::take(in_word) {
                out.push((Tok::Word(std::mem::take(word)), line_no));
            }
        };
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    in_word = true;
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some(q) => word.push(q),
                            None => {
                                return Err(err(format!("unclosed quote: \"{}", shown(&word))));
                            }
                        }
                    }
                }
                '#' if !word.starts_with('/') => break,
                '{' => {
                    flush(&mut word, &mut in_word, &mut out);
                    out.push((Tok::Open, line_no));
                }
                '}' => {
                    flush(&mut word, &mut in_word, &mut out);
                    out.push((Tok::Close, line_no));
                }
                ';' => flush(&mut word, &mut in_word, &mut out),
                c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut out),
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
            if word.len() > MAX_WORD {
                return Err(err(format!(
                    "a word longer than {MAX_WORD} bytes: `{}'",
                    shown(&word)
                )));
            }
        }
        flush(&mut word, &mut in_word, &mut out);
        out.push((Tok::Newline, line_no));
    }
    Ok(out)
}

/// Parses configuration text into statements (no meaning checked yet).
///
/// conntrackd's grammar ignores line ends: every plain statement is a
/// keyword and one value, so several may share a line
/// (`Address Ignore { IPv4_address 10.0.0.1 IPv4_address 10.0.0.2 }`).
/// Here the words of a line that opens no block are read as such pairs;
/// the words before a `{` are the block statement's keyword and
/// arguments (`Filter From Userspace {`), and `for WORD` after its `}`
/// belongs to it too (`State Accept { ... } for TCP`).
pub fn parse_items(file: &str, text: &str) -> Result<Vec<Item>, ConfigError> {
    let toks = lex(file, text)?;
    let mut pos = 0;
    let items = parse_block(file, &toks, &mut pos, 0)?;
    Ok(items)
}

fn parse_block(
    file: &str,
    toks: &[(Tok, usize)],
    pos: &mut usize,
    depth: usize,
) -> Result<Vec<Item>, ConfigError> {
    let err = |line, msg: String| ConfigError {
        file: file.to_string(),
        line,
        msg,
    };
    if depth > 8 {
        return Err(err(
            toks.get(*pos).map_or(0, |t| t.1),
            "blocks nested too deeply".into(),
        ));
    }
    let mut items = Vec::new();
    while let Some((tok, line)) = toks.get(*pos) {
        match tok {
            Tok::Newline => *pos += 1,
            Tok::Close => {
                if depth == 0 {
                    return Err(err(*line, "unexpected `}'".into()));
                }
                *pos += 1;
                return Ok(items);
            }
            Tok::Open => return Err(err(*line, "`{' without a keyword before it".into())),
            Tok::Word(_) => {
                // the run of words on this line
                let mut words = Vec::new();
                let line = *line;
                while let Some((Tok::Word(w), l)) = toks.get(*pos) {
                    if *l != line {
                        break;
                    }
                    words.push(w.clone());
                    *pos += 1;
                }
                // a block opens after them, on this line or alone on a later one
                let mut look = *pos;
                while let Some((Tok::Newline, _)) = toks.get(look) {
                    look += 1;
                }
                if let Some((Tok::Open, _)) = toks.get(look) {
                    *pos = look + 1;
                    let mut words = words.into_iter();
                    let mut item = Item {
                        key: words.next().unwrap_or_default(),
                        args: words.collect(),
                        line,
                        block: None,
                    };
                    item.block = Some(parse_block(file, toks, pos, depth + 1)?);
                    // `for WORD` after the block, on its line or the next
                    // ones (no statement starts with `for`)
                    let words_after: Vec<(usize, &String)> = toks[*pos..]
                        .iter()
                        .enumerate()
                        .filter(|(_, (t, _))| *t != Tok::Newline)
                        .take(2)
                        .map_while(|(i, (t, _))| match t {
                            Tok::Word(w) => Some((i, w)),
                            _ => None,
                        })
                        .collect();
                    if let [(_, f), (last, w)] = words_after.as_slice()
                        && *f == "for"
                    {
                        item.args.push("for".into());
                        item.args.push((*w).clone());
                        *pos += last + 1;
                    }
                    items.push(item);
                } else {
                    for pair in words.chunks(2) {
                        items.push(Item {
                            key: pair[0].clone(),
                            args: pair[1..].to_vec(),
                            line,
                            block: None,
                        });
                    }
                }
            }
        }
    }
    if depth > 0 {
        return Err(err(
            toks.last().map_or(0, |t| t.1),
            "missing `}' at the end of the file".into(),
        ));
    }
    Ok(items)
}

/// What a key's value must look like.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `on|off|yes|no`.
    Bool,
    /// A non-negative number.
    Uint,
    /// An absolute path.
    Path,
    /// An address or prefix.
    Addr,
    /// One word.
    Word,
    /// A block with these keys.
    Block(&'static [Key]),
    /// Known to conntrackd, ignored by ctrackd (warning).
    Ignored,
}

/// A known key: name, value kind.
pub type Key = (&'static str, Kind);

/// Checks the statements of one file and collects its warnings; errors
/// and warnings name the file and the statement's line.
#[derive(Debug)]
pub struct Checker<'a> {
    file: &'a str,
    warnings: Vec<String>,
}

impl<'a> Checker<'a> {
    /// A checker for statements read from `file`.
    pub fn new(file: &'a str) -> Checker<'a> {
        Checker {
            file,
            warnings: Vec::new(),
        }
    }

    /// The warnings collected so far, each `file:line: what`.
    pub fn into_warnings(self) -> Vec<String> {
        self.warnings
    }

    /// An error about statement `it`.
    pub fn err(&self, it: &Item, msg: String) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: it.line,
            msg,
        }
    }

    /// A warning about statement `it`.
    pub fn warn(&mut self, it: &Item, msg: &str) {
        self.warnings
            .push(format!("{}:{}: {msg}", self.file, it.line));
    }

    /// Warns that `it` is a conntrackd setting ctrackd ignores.
    pub fn warn_ignored(&mut self, it: &Item) {
        self.warn(
            it,
            &format!("`{}' is a conntrackd setting that ctrackd ignores", it.key),
        );
    }

    /// Checks every item of a block against `keys`.
    pub fn check(&mut self, block: &str, items: &[Item], keys: &[Key]) -> Result<(), ConfigError> {
        for it in items {
            let Some((_, kind)) = keys.iter().find(|(k, _)| *k == it.key) else {
                return Err(self.err(it, format!("unknown key `{}' in {block}", shown(&it.key))));
            };
            self.check_value(it, *kind)?;
        }
        Ok(())
    }

    /// Checks that `it`'s value (or block) is of `kind`.
    pub fn check_value(&mut self, it: &Item, kind: Kind) -> Result<(), ConfigError> {
        let one = |c: &Self| -> Result<&str, ConfigError> {
            if it.block.is_some() {
                return Err(c.err(it, format!("`{}' takes a value, not a block", it.key)));
            }
            match it.args.as_slice() {
                [v] => Ok(v.as_str()),
                [] => Err(c.err(it, format!("`{}' needs a value", it.key))),
                _ => Err(c.err(it, format!("`{}' takes one value", it.key))),
            }
        };
        match kind {
            Kind::Ignored => self.warn_ignored(it),
            Kind::Bool => {
                let v = one(self)?;
                parse_bool(v).ok_or_else(|| {
                    self.err(
                        it,
                        format!("bad value `{}' for `{}': use on or off", shown(v), it.key),
                    )
                })?;
            }
            Kind::Uint => {
                let v = one(self)?;
                v.parse::<u64>().map_err(|_| {
                    self.err(
                        it,
                        format!("bad value `{}' for `{}': not a number", shown(v), it.key),
                    )
                })?;
            }
            Kind::Path => {
                let v = one(self)?;
                if !v.starts_with('/') {
                    return Err(self.err(
                        it,
                        format!(
                            "bad value `{}' for `{}': must be an absolute path",
                            shown(v),
                            it.key
                        ),
                    ));
                }
            }
            Kind::Addr => {
                let v = one(self)?;
                Prefix::parse(v).ok_or_else(|| {
                    self.err(it, format!("bad address `{}' for `{}'", shown(v), it.key))
                })?;
            }
            Kind::Word => {
                one(self)?;
            }
            Kind::Block(keys) => {
                let Some(items) = &it.block else {
                    return Err(self.err(it, format!("`{}' needs a {{ ... }} block", it.key)));
                };
                self.check(&it.key, items, keys)?;
            }
        }
        Ok(())
    }
}

/// Parses `on|off|yes|no` (any case).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "yes" => Some(true),
        "off" | "no" => Some(false),
        _ => None,
    }
}

/// The one value of a plain statement.
pub fn single<'a>(c: &Checker, it: &'a Item) -> Result<&'a str, ConfigError> {
    match it.args.as_slice() {
        [v] if it.block.is_none() => Ok(v),
        _ => Err(c.err(it, format!("`{}' takes one value", it.key))),
    }
}

/// A number from `min` to `max`.
pub fn uint(c: &Checker, it: &Item, min: u64, max: u64) -> Result<u64, ConfigError> {
    let v = single(c, it)?;
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(c.err(
            it,
            format!(
                "bad value `{}' for `{}': expected a number from {min} to {max}",
                shown(v),
                it.key
            ),
        )),
    }
}

/// An absolute path.
pub fn path(c: &Checker, it: &Item) -> Result<PathBuf, ConfigError> {
    let v = single(c, it)?;
    if !v.starts_with('/') {
        return Err(c.err(
            it,
            format!(
                "bad value `{}' for `{}': must be an absolute path",
                shown(v),
                it.key
            ),
        ));
    }
    Ok(PathBuf::from(v))
}

/// `on|off|yes|no` (any case).
pub fn flag(c: &Checker, it: &Item) -> Result<bool, ConfigError> {
    let v = single(c, it)?;
    parse_bool(v).ok_or_else(|| {
        c.err(
            it,
            format!("bad value `{}' for `{}': use on or off", shown(v), it.key),
        )
    })
}

/// Looks up a plain `Key value` statement in a block's items.
pub fn value<'a>(items: &'a [Item], key: &str) -> Option<&'a str> {
    items
        .iter()
        .find(|i| i.key == key)
        .and_then(|i| i.args.first())
        .map(String::as_str)
}

/// An address value (`IPv4_address 10.0.0.1`) of a block's items.
pub fn addr_value(items: &[Item], key: &str) -> Option<IpAddr> {
    value(items, key).and_then(Prefix::parse).map(|p| p.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &str) -> Vec<Item> {
        parse_items("t.conf", text).unwrap()
    }

    fn err(text: &str) -> String {
        parse_items("t.conf", text).unwrap_err().to_string()
    }

    /// (key, args) of each statement, blocks flattened in order.
    fn flat(its: &[Item]) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for it in its {
            out.push((it.key.clone(), it.args.clone()));
            out.extend(flat(it.items()));
        }
        out
    }

    fn kv(k: &str, a: &[&str]) -> (String, Vec<String>) {
        (k.into(), a.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn several_directives_share_a_line_as_in_conntrackd() {
        let its = items("Address Ignore { IPv4_address 10.0.0.1 IPv4_address 10.0.0.2/8 }\n");
        assert_eq!(
            flat(&its),
            vec![
                kv("Address", &["Ignore"]),
                kv("IPv4_address", &["10.0.0.1"]),
                kv("IPv4_address", &["10.0.0.2/8"]),
            ]
        );
        assert!(its[0].items().iter().all(|i| i.line == 1));
        // a whole Sync block on one line, and `;` as a separator
        let its = items(
            "Sync { Mode FTFW { ResendQueueSize 10 } UDP Default { Port 1; Interface eth0 } }",
        );
        assert_eq!(
            flat(&its),
            vec![
                kv("Sync", &[]),
                kv("Mode", &["FTFW"]),
                kv("ResendQueueSize", &["10"]),
                kv("UDP", &["Default"]),
                kv("Port", &["1"]),
                kv("Interface", &["eth0"]),
            ]
        );
        // a value alone at the end: the key reports it needs one
        let its = items("UNIX { Path /x Backlog }");
        assert_eq!(flat(&its)[2], kv("Backlog", &[]));
    }

    #[test]
    fn block_openers_keep_their_words() {
        let its = items(
            "Filter From Userspace\n{\n State Accept { ESTABLISHED CLOSED } for TCP\n Protocol Accept {\n TCP UDP\n SCTP }\n}\n",
        );
        assert_eq!(
            flat(&its),
            vec![
                kv("Filter", &["From", "Userspace"]),
                kv("State", &["Accept", "for", "TCP"]),
                kv("ESTABLISHED", &["CLOSED"]),
                kv("Protocol", &["Accept"]),
                kv("TCP", &["UDP"]),
                kv("SCTP", &[]),
            ]
        );
        assert_eq!(its[0].items()[1].line, 4);
        // conntrackd ignores line ends there too
        let its = items("State Ignore { CLOSED }\n  for\n TCP\nX 1");
        assert_eq!(
            flat(&its),
            vec![
                kv("State", &["Ignore", "for", "TCP"]),
                kv("CLOSED", &[]),
                kv("X", &["1"]),
            ]
        );
        // only `for` joins the block statement
        let its = items("A { }\nB 1");
        assert_eq!(flat(&its), vec![kv("A", &[]), kv("B", &["1"])]);
    }

    #[test]
    fn comments_and_quotes() {
        let its = items(
            "General { # a comment\n LogFile \"/var/log/my log\" # trailing\n LockFile /run/a#b\n HashSize 8#c\n Path \"\" }",
        );
        assert_eq!(
            flat(&its),
            vec![
                kv("General", &[]),
                kv("LogFile", &["/var/log/my log"]),
                kv("LockFile", &["/run/a#b"]),
                kv("HashSize", &["8"]),
                kv("Path", &[""]),
            ]
        );
        assert_eq!(
            err("General {\n LogFile \"/var/log/x\n}"),
            "t.conf:2: unclosed quote: \"/var/log/x"
        );
    }

    #[test]
    fn value_readers_say_what_is_wrong() {
        let its = items("A 5\nB 70000\nC 1 { }\nD\nE maybe\nF rel\nG /abs\nH on\n");
        let msg = |r: Result<u64, ConfigError>| r.unwrap_err().msg;
        let c = Checker::new("t.conf");
        assert_eq!(uint(&c, &its[0], 1, 10).unwrap(), 5);
        assert_eq!(
            msg(uint(&c, &its[1], 1, 65535)),
            "bad value `70000' for `B': expected a number from 1 to 65535"
        );
        assert_eq!(single(&c, &its[2]).unwrap_err().msg, "`C' takes one value");
        assert_eq!(single(&c, &its[3]).unwrap_err().msg, "`D' takes one value");
        assert_eq!(
            flag(&c, &its[4]).unwrap_err().msg,
            "bad value `maybe' for `E': use on or off"
        );
        assert!(flag(&c, &its[7]).unwrap());
        assert_eq!(
            path(&c, &its[5]).unwrap_err().msg,
            "bad value `rel' for `F': must be an absolute path"
        );
        assert_eq!(path(&c, &its[6]).unwrap(), PathBuf::from("/abs"));
        let mut c = Checker::new("t.conf");
        let kind_err =
            |c: &mut Checker, i: usize, k: Kind| c.check_value(&its[i], k).unwrap_err().msg;
        assert_eq!(kind_err(&mut c, 3, Kind::Uint), "`D' needs a value");
        assert_eq!(
            kind_err(&mut c, 2, Kind::Word),
            "`C' takes a value, not a block"
        );
        assert_eq!(
            kind_err(&mut c, 0, Kind::Block(&[])),
            "`A' needs a { ... } block"
        );
        assert_eq!(
            kind_err(&mut c, 4, Kind::Bool),
            "bad value `maybe' for `E': use on or off"
        );
        assert_eq!(
            kind_err(&mut c, 4, Kind::Uint),
            "bad value `maybe' for `E': not a number"
        );
        assert_eq!(
            kind_err(&mut c, 5, Kind::Path),
            "bad value `rel' for `F': must be an absolute path"
        );
        assert_eq!(
            kind_err(&mut c, 4, Kind::Addr),
            "bad address `maybe' for `E'"
        );
        assert!(c.check_value(&its[0], Kind::Uint).is_ok());
        c.check_value(&its[7], Kind::Ignored).unwrap();
        assert_eq!(
            c.into_warnings(),
            vec!["t.conf:8: `H' is a conntrackd setting that ctrackd ignores".to_string()]
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |n: usize| format!("{}{}", "A {\n".repeat(n), "}\n".repeat(n));
        assert!(parse_items("t.conf", &nested(8)).is_ok());
        assert_eq!(err(&nested(9)), "t.conf:9: blocks nested too deeply");
        assert!(err(&nested(10_000)).ends_with("blocks nested too deeply"));
    }

    #[test]
    fn huge_lines_make_short_errors() {
        let huge = "a".repeat(1 << 20);
        for text in [
            format!("General {{\n LockFile {huge}\n}}"),
            format!("General {{\n LockFile \"{huge}\n}}"),
            format!("{huge} {{\n}}"),
        ] {
            let e = err(&text);
            assert!(e.len() < 200, "{} bytes: {}", e.len(), &e[..200]);
        }
        // what parses is echoed at most SHOWN characters long
        let long = format!("General {{\n LockFile {}\n}}", "b".repeat(MAX_WORD));
        let its = items(&long);
        let mut c = Checker::new("t.conf");
        let e = c
            .check_value(&its[0].items()[0], Kind::Path)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{e}");
        assert!(e.contains(&format!("`{}...'", "b".repeat(SHOWN))), "{e}");
        assert_eq!(shown("a\nb"), "a\\nb");
    }
}
