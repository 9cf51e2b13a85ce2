//! The one normaliser of conntrack text lines (`-L`, `-E`, `-o save`,
//! `-o xml`, ctrackd's `-i`). Before two listings of the same table are
//! compared, what may differ between the two runs is masked or dropped:
//! a timeout or delta-time that ticked, entry and port ids, the program
//! name looked up when a line is printed, counters, `[active since Ns]`.
//! Each comparison picks one of the [`Mask`]s below; whatever its mask
//! does not name is compared. (JSON flows are keyed by
//! `tests/halab`'s `flow_key`.)

/// What a comparison ignores in a line. [`Mask::apply`] works in this
/// order: the event stamp, the cut, the words, the XML elements. The
/// words are the line split at single spaces, so padding is compared;
/// a mask that drops numbers or keeps only some fields splits at any
/// whitespace instead, and joins the words it keeps with one space.
#[derive(Clone, Copy, Debug)]
pub struct Mask {
    /// `[seconds.micros]\t` in front of a `-o timestamp` event line
    /// becomes `[TS]\t`.
    pub stamp: bool,
    /// The line ends where the first of these begins.
    pub cut_at: &'static [&'static str],
    /// The timeout (the number after the protocol number) and the value
    /// of `-t` (the save format) become `T`.
    pub timeout: bool,
    /// The timeout of an expectation line (the number before `proto=`)
    /// becomes `T`.
    pub exp_timeout: bool,
    /// `key=` fields whose value becomes `*`.
    pub hide: &'static [&'static str],
    /// `key=` fields left out.
    pub drop: &'static [&'static str],
    /// Bracketed words (`[ASSURED]`, `[UNREPLIED]`, `[active since Ns]`)
    /// left out.
    pub drop_flags: bool,
    /// Bare numbers (protocol numbers, the timeout) left out.
    pub drop_numbers: bool,
    /// When not empty: only the first word (the protocol) and these
    /// `key=` fields are kept.
    pub keep_only: &'static [&'static str],
    /// XML elements whose text becomes `*`.
    pub hide_xml: &'static [&'static str],
}

/// Ignores nothing (the base of the masks below).
const NOTHING: Mask = Mask {
    stamp: false,
    cut_at: &[],
    timeout: false,
    exp_timeout: false,
    hide: &[],
    drop: &[],
    drop_flags: false,
    drop_numbers: false,
    keep_only: &[],
    hide_xml: &[],
};

/// Two runs on one table or on copies of it (ctrack against conntrack,
/// tests/cli_diff.rs): the timeout, entry ids, port ids, program names and
/// delta-times, in text, save and XML.
pub const RUNS: Mask = Mask {
    timeout: true,
    hide: &["id=", "portid=", "progname=", "delta-time="],
    hide_xml: &["timeout", "id", "deltatime"],
    ..NOTHING
};

/// Event lines of two listeners (tests/cli_diff.rs): [`RUNS`], the
/// timestamp in front, the XML `<when>` (wall-clock time), and no
/// `progname=` (the program behind a port id is looked up when the event
/// arrives; the short-lived one that caused it may be gone for one
/// listener).
pub const EVENTS: Mask = Mask {
    stamp: true,
    drop: &["progname="],
    hide_xml: &["timeout", "id", "deltatime", "when"],
    ..RUNS
};

/// Expectation lines (`-L/-E expect`) of two runs or listeners
/// (tests/cli_expect.rs): the timeout, the `-o timestamp` stamp, and in
/// XML the `<timeout>` and `<when>`.
pub const EXPECT_RUNS: Mask = Mask {
    stamp: true,
    exp_timeout: true,
    hide_xml: &["timeout", "when"],
    ..NOTHING
};

/// A line printed at another moment (ctrack's text of a capture against
/// what conntrack printed when it was recorded,
/// tests/codec_captures.rs): the timeout and the delta-time.
pub const PRINT_TIME: Mask = Mask {
    timeout: true,
    hide: &["delta-time="],
    ..NOTHING
};

/// Event lines of two binaries on one table (tests/packaging_binary.rs):
/// without the ` progname=NAME` at their end, which races as in
/// [`EVENTS`].
pub const PROGNAME: Mask = Mask {
    cut_at: &[" progname="],
    ..NOTHING
};

/// ctrackd's `-i` of two daemons run one after the other: without the
/// `[active since Ns]` that ticks between them.
pub const ACTIVE_SINCE: Mask = Mask {
    cut_at: &[" [active since "],
    ..NOTHING
};

/// The identity of a flow, the same in the kernel's table and in
/// ctrackd's cache (tests/daemon.rs): protocol name, state and tuples;
/// no numbers, status flags, counters, `use`, ids, marks or times.
pub const IDENTITY: Mask = Mask {
    cut_at: &[" [active since "],
    drop: &["packets=", "bytes=", "use=", "delta-time=", "id=", "mark="],
    drop_flags: true,
    drop_numbers: true,
    ..NOTHING
};

/// A flow's protocol and tuples only (tests/wan_common): what stays the
/// same when its state, timeout or counters move. `id=` is kept for the
/// ICMP id (in a listing with `-o id` the entry id would stay too).
pub const TUPLES: Mask = Mask {
    keep_only: &["src=", "dst=", "sport=", "dport=", "type=", "code=", "id="],
    ..NOTHING
};

impl Mask {
    /// `line` with what this mask ignores masked or left out.
    pub fn apply(&self, line: &str) -> String {
        let mut line = line.to_string();
        if self.stamp
            && let Some((ts, rest)) = line.split_once("]\t")
            && ts.starts_with('[')
        {
            line = format!("[TS]\t{rest}");
        }
        if let Some(at) = self.cut_at.iter().filter_map(|c| line.find(c)).min() {
            line.truncate(at);
        }
        let mut words: Vec<String> = if self.drop_numbers || !self.keep_only.is_empty() {
            line.split_whitespace().map(str::to_string).collect()
        } else {
            line.split(' ').map(str::to_string).collect()
        };
        if self.timeout {
            mask_timeouts(&mut words);
        }
        if self.exp_timeout
            && let Some(i) = words.iter().position(|w| w.starts_with("proto="))
            && i > 0
            && words[i - 1].bytes().all(|b| b.is_ascii_digit())
            && !words[i - 1].is_empty()
        {
            words[i - 1] = "T".into();
        }
        for w in words.iter_mut() {
            if let Some(key) = self.hide.iter().find(|k| w.starts_with(*k)) {
                *w = format!("{key}*");
            }
        }
        words.retain(|w| !self.drops(w));
        if !self.keep_only.is_empty() {
            let first = words.first().cloned().unwrap_or_default();
            let kept = words
                .into_iter()
                .filter(|w| self.keep_only.iter().any(|k| w.starts_with(k)));
            words = std::iter::once(first).chain(kept).collect();
        }
        let mut s = words.join(" ");
        for tag in self.hide_xml {
            s = hide_element(&s, tag);
        }
        s
    }

    /// True when word `w` is left out.
    fn drops(&self, w: &str) -> bool {
        let number = w.bytes().all(|b| b.is_ascii_digit());
        let flag = w.starts_with('[') || w.ends_with(']');
        (self.drop_numbers && number)
            || (self.drop_flags && flag)
            || self.drop.iter().any(|k| w.starts_with(k))
    }
}

/// The timeout is the second of the first two numbers in a row after the
/// first word (`tcp      6 431999 ESTABLISHED`); `-t N` in the save
/// format is one too.
fn mask_timeouts(words: &mut [String]) {
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    for i in 1..words.len().saturating_sub(1) {
        if num(&words[i]) && num(&words[i + 1]) {
            words[i + 1] = "T".into();
            break;
        }
    }
    let mut after_t = false;
    for w in words.iter_mut() {
        if after_t && num(w) {
            *w = "T".into();
        }
        after_t = w == "-t";
    }
}

/// `s` with the text of every `<tag>...</tag>` replaced by `*`.
fn hide_element(s: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&open) {
        out.push_str(&rest[..i + open.len()]);
        rest = &rest[i + open.len()..];
        match rest.find(&close) {
            Some(j) => {
                out.push('*');
                rest = &rest[j..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}
