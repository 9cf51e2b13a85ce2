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

fn lex(text: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.split('#').next().unwrap_or("");
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut Vec<(Tok, usize)>| {
            if !word.is_empty() {
                out.push((Tok::Word(std::mem::take(word)), line_no));
            }
        };
        for c in line.chars() {
            match c {
                '{' => {
                    flush(&mut word, &mut out);
                    out.push((Tok::Open, line_no));
                }
                '}' => {
                    flush(&mut word, &mut out);
                    out.push((Tok::Close, line_no));
                }
                ';' => flush(&mut word, &mut out),
                c if c.is_whitespace() => flush(&mut word, &mut out),
                c => word.push(c),
            }
        }
        flush(&mut word, &mut out);
        out.push((Tok::Newline, line_no));
    }
    out
}

/// Parses configuration text into statements (no meaning checked yet).
pub fn parse_items(file: &str, text: &str) -> Result<Vec<Item>, ConfigError> {
    let toks = lex(text);
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
            Tok::Word(key) => {
                let mut item = Item {
                    key: key.clone(),
                    args: Vec::new(),
                    line: *line,
                    block: None,
                };
                *pos += 1;
                // arguments, then maybe a block opened on this or the next line
                loop {
                    match toks.get(*pos) {
                        Some((Tok::Word(w), l)) if *l == item.line => {
                            item.args.push(w.clone());
                            *pos += 1;
                        }
                        Some((Tok::Newline, _)) => {
                            // a `{` alone on the next line still opens a block
                            let mut look = *pos;
                            while let Some((Tok::Newline, _)) = toks.get(look) {
                                look += 1;
                            }
                            if let Some((Tok::Open, _)) = toks.get(look) {
                                *pos = look;
                                continue;
                            }
                            break;
                        }
                        Some((Tok::Open, _)) => {
                            *pos += 1;
                            item.block = Some(parse_block(file, toks, pos, depth + 1)?);
                            // words after the closing brace on its line belong to
                            // this statement (`State Accept { ... } for TCP`)
                            let close_line = toks.get(*pos - 1).map_or(0, |t| t.1);
                            while let Some((Tok::Word(w), l)) = toks.get(*pos) {
                                if *l != close_line {
                                    break;
                                }
                                item.args.push(w.clone());
                                *pos += 1;
                            }
                            break;
                        }
                        _ => break,
                    }
                }
                items.push(item);
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
                return Err(self.err(it, format!("unknown key `{}' in {block}", it.key)));
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
                        format!("bad value `{v}' for `{}': use on or off", it.key),
                    )
                })?;
            }
            Kind::Uint => {
                let v = one(self)?;
                v.parse::<u64>().map_err(|_| {
                    self.err(
                        it,
                        format!("bad value `{v}' for `{}': not a number", it.key),
                    )
                })?;
            }
            Kind::Path => {
                let v = one(self)?;
                if !v.starts_with('/') {
                    return Err(self.err(
                        it,
                        format!("bad value `{v}' for `{}': must be an absolute path", it.key),
                    ));
                }
            }
            Kind::Addr => {
                let v = one(self)?;
                Prefix::parse(v)
                    .ok_or_else(|| self.err(it, format!("bad address `{v}' for `{}'", it.key)))?;
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
                "bad value `{v}' for `{}': expected a number from {min} to {max}",
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
            format!("bad value `{v}' for `{}': must be an absolute path", it.key),
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
            format!("bad value `{v}' for `{}': use on or off", it.key),
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
