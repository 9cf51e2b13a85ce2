//! Helpers of the differential tests: run `ctrack` and Debian's
//! `conntrack` on the same namespace and compare what they print.
//!
//! Read-only commands run back to back on the same live table; when the
//! two differ the pair is run again (the table may have changed, or a
//! second ticked between the two runs), and only a difference that
//! persists counts. Modifying commands run on two identical tables built
//! from the same `-R` script, one per tool, and are compared after the
//! values that necessarily differ between two runs (entry ids, timeouts,
//! port ids) are masked ([`RUNS`]). Cases are written one per line as a
//! string and split by [`argv`].
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::lab::{Netns, ctrack_bin};
use crate::support::flowline::RUNS;

/// What one tool printed and how it exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
}

impl Run {
    /// From a finished process.
    pub fn of(o: &Output) -> Run {
        Run {
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
            code: o.status.code().unwrap_or(-1),
        }
    }

    /// With every line passed through `f`.
    pub fn map(&self, f: impl Fn(&str) -> String) -> Run {
        let m = |s: &str| {
            let mut o = String::new();
            for l in s.split_inclusive('\n') {
                let (body, nl) = match l.strip_suffix('\n') {
                    Some(b) => (b, "\n"),
                    None => (l, ""),
                };
                o.push_str(&f(body));
                o.push_str(nl);
            }
            o
        };
        Run {
            out: m(&self.out),
            err: m(&self.err),
            code: self.code,
        }
    }
}

/// Describes how two runs differ (None when equal).
pub fn describe(args: &[&str], ours: &Run, theirs: &Run) -> Option<String> {
    if ours == theirs {
        return None;
    }
    let mut s = format!("`{}`:\n", args.join(" "));
    if ours.code != theirs.code {
        s += &format!(
            "  exit code: ctrack {} conntrack {}\n",
            ours.code, theirs.code
        );
    }
    if ours.err != theirs.err {
        s += &format!(
            "  stderr:\n    ctrack:    {:?}\n    conntrack: {:?}\n",
            ours.err, theirs.err
        );
    }
    if ours.out != theirs.out {
        let a: Vec<&str> = ours.out.lines().collect();
        let b: Vec<&str> = theirs.out.lines().collect();
        s += &format!("  stdout: {} vs {} lines\n", a.len(), b.len());
        let mut shown = 0;
        for i in 0..a.len().max(b.len()) {
            let (x, y) = (a.get(i), b.get(i));
            if x != y && shown < 4 {
                // long lines (XML): from a little before the first difference
                let at = match (x, y) {
                    (Some(x), Some(y)) => x
                        .bytes()
                        .zip(y.bytes())
                        .position(|(a, b)| a != b)
                        .unwrap_or(x.len().min(y.len()))
                        .saturating_sub(60),
                    _ => 0,
                };
                let cut = |l: Option<&&str>| l.map(|l| l.get(at..).unwrap_or(l).to_string());
                s += &format!("    ctrack:    {:?}\n    conntrack: {:?}\n", cut(x), cut(y));
                shown += 1;
            }
        }
    }
    Some(s)
}

/// The arguments of a case written on one line: its words, split at
/// whitespace; `''` stands for an empty argument.
pub fn argv(case: &str) -> Vec<&str> {
    case.split_whitespace()
        .map(|w| if w == "''" { "" } else { w })
        .collect()
}

/// Runs ctrack with `--netns` on `ns`.
pub fn ctrack(ns: &Netns, args: &[&str]) -> Run {
    Run::of(&ns.ctrack(args))
}

/// Runs conntrack inside `ns`.
pub fn conntrack(ns: &Netns, args: &[&str]) -> Run {
    Run::of(&ns.conntrack(args))
}

/// Collects the differences of a test, so one run reports all of them.
#[derive(Default)]
pub struct Diffs {
    found: Vec<String>,
    /// How many comparisons were made.
    pub checked: usize,
}

impl Diffs {
    /// Records a difference (or nothing).
    pub fn add(&mut self, d: Option<String>) {
        self.checked += 1;
        if let Some(d) = d {
            self.found.push(d);
        }
    }

    /// Records a failed expectation of ctrack's own behaviour.
    pub fn fail(&mut self, what: String) {
        self.checked += 1;
        self.found.push(what);
    }

    /// Checks a condition about ctrack's own behaviour.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.found.push(what());
        }
    }

    /// Read-only command: both tools on the same live table, retried
    /// when they differ (at most twice, a moment apart).
    pub fn same(&mut self, ns: &Netns, args: &[&str]) {
        self.same_with(ns, args, |l| l.to_string());
    }

    /// As [`Diffs::same`], comparing after `norm` is applied to each line.
    pub fn same_with(&mut self, ns: &Netns, args: &[&str], norm: impl Fn(&str) -> String) {
        self.compare(ns, args, norm, |r| r.clone());
    }

    /// Read-only command where ctrack deliberately differs: ctrack must
    /// print what `expect` makes of conntrack's run.
    pub fn same_as(&mut self, ns: &Netns, args: &[&str], expect: impl Fn(&Run) -> Run) {
        self.compare(ns, args, |l| l.to_string(), expect);
    }

    /// As [`Diffs::same_as`], comparing after `norm` is applied to each
    /// line of both runs.
    pub fn compare(
        &mut self,
        ns: &Netns,
        args: &[&str],
        norm: impl Fn(&str) -> String,
        expect: impl Fn(&Run) -> Run,
    ) {
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            let theirs = expect(&conntrack(ns, args).map(&norm));
            let ours = ctrack(ns, args).map(&norm);
            last = describe(args, &ours, &theirs);
            if last.is_none() {
                break;
            }
            // on a loaded machine a second may tick between the two runs
            // every time: the last try ignores timeouts and delta-times
            if attempt == 2 {
                let m = |r: &Run| r.map(|l| RUNS.apply(l));
                last = describe(args, &m(&ours), &m(&theirs));
            }
        }
        self.add(last);
    }

    /// Panics listing every difference found.
    pub fn finish(self, what: &str) {
        assert!(
            self.found.is_empty(),
            "{what}: {} of {} comparisons differ:\n{}",
            self.found.len(),
            self.checked,
            self.found.join("\n")
        );
        eprintln!("{what}: {} comparisons equal", self.checked);
    }
}

/// Loads `-R` lines into the namespace's table with conntrack.
pub fn load(ns: &Netns, script: &str) {
    let mut child = ns
        .cmd(&["conntrack", "-R", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("conntrack -R");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let o = child.wait_with_output().expect("conntrack -R");
    assert!(
        o.status.success(),
        "conntrack -R failed on:\n{script}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Empties the namespace's table (both families).
pub fn flush(ns: &Netns) {
    let o = ns.conntrack(&["-F"]);
    assert!(o.status.success(), "conntrack -F: {o:?}");
}

/// The table as sorted `-o save` lines with timeouts masked.
pub fn table(ns: &Netns) -> Vec<String> {
    let o = ns.conntrack(&["-L", "-o", "save"]);
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| RUNS.apply(l))
        .collect();
    v.sort();
    v
}

/// A modifying command: runs it with conntrack on a table loaded from
/// `setup`, then with ctrack on the same table loaded again, and compares
/// the outputs (volatile values masked) and the tables left behind.
/// `theirs_args` lets the reference run use other arguments where 1.4.7
/// needs them (`-U -f ipv4`).
pub fn modify_case(
    d: &mut Diffs,
    ns: &Netns,
    setup: &str,
    args: &[&str],
    theirs_args: Option<&[&str]>,
) {
    modify_case_with(d, ns, setup, args, theirs_args, |o, t| describe(args, o, t));
}

/// `-U`: 1.4.7 sends every per-entry request with the same sequence
/// number and so pairs replies with the wrong requests: it updates every
/// matching entry but prints only some of them (and miscounts entries in
/// zones). So: same exit code and resulting table; ctrack prints every
/// line conntrack printed, and exactly as many lines as its summary
/// counts; when conntrack printed all it counted, everything is equal.
pub fn update_case(d: &mut Diffs, ns: &Netns, setup: &str, args: &[&str], theirs_args: &[&str]) {
    modify_case_with(d, ns, setup, args, Some(theirs_args), |o, t| {
        let count = |r: &Run| -> Option<usize> {
            r.err
                .lines()
                .find_map(|l| l.strip_suffix(" flow entries have been updated."))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
        };
        let flows = |r: &Run| {
            r.out
                .lines()
                .filter(|l| !l.starts_with("<?xml") && *l != "<conntrack>" && *l != "</conntrack>")
                .count()
        };
        let (oc, tc) = (count(o), count(t));
        if o.code != 0 || t.code != 0 || tc == Some(flows(t)) && oc == tc {
            return describe(args, o, t);
        }
        let mut why = Vec::new();
        if o.code != t.code {
            why.push(format!("exit code {} vs {}", o.code, t.code));
        }
        if oc != Some(flows(o)) {
            why.push(format!("ctrack counted {oc:?} but printed {}", flows(o)));
        }
        for l in t.out.lines() {
            if !o.out.lines().any(|x| x == l) {
                why.push(format!("conntrack printed {l:?}, ctrack did not"));
            }
        }
        (!why.is_empty()).then(|| format!("`{}`: {}\n", args.join(" "), why.join("; ")))
    });
}

fn modify_case_with(
    d: &mut Diffs,
    ns: &Netns,
    setup: &str,
    args: &[&str],
    theirs_args: Option<&[&str]>,
    compare: impl Fn(&Run, &Run) -> Option<String>,
) {
    let run = |tool: &dyn Fn(&Netns, &[&str]) -> Run, a: &[&str]| {
        flush(ns);
        if !setup.trim().is_empty() {
            load(ns, setup);
        }
        let r = tool(ns, a).map(|l| RUNS.apply(l));
        (r, table(ns))
    };
    let mut last = None;
    for _ in 0..2 {
        let (theirs, t_table) = run(&conntrack, theirs_args.unwrap_or(args));
        let (ours, o_table) = run(&ctrack, args);
        let mut diff = compare(&ours, &theirs);
        if o_table != t_table {
            diff = Some(format!(
                "{}  table after `{}`:\n    ctrack:    {:?}\n    conntrack: {:?}\n",
                diff.unwrap_or_else(|| format!("`{}`:\n", args.join(" "))),
                args.join(" "),
                o_table,
                t_table
            ));
        }
        last = diff;
        if last.is_none() {
            break;
        }
    }
    d.add(last);
}

/// Runs ctrack directly (not in a namespace) for argument errors that
/// never reach the kernel, and conntrack the same way, in `ns` so that a
/// command that does reach the kernel touches only the test's table.
pub fn both_in(ns: &Netns, args: &[&str]) -> (Run, Run) {
    let ours = Run::of(
        &Command::new(ctrack_bin())
            .arg("--netns")
            .arg(&ns.name)
            .args(args)
            .output()
            .expect("ctrack"),
    );
    (ours, conntrack(ns, args))
}

/// conntrack 1.4.7's usage (in `r`) with the line of 1.4.9's
/// `--labelmap`, as ctrack prints it.
pub fn labelmap_line(r: &Run) -> Run {
    let label = "  -l, --label label[,...]\t\tconntrack labels\n";
    let with = format!("{label}  --labelmap path\t\t\tconnlabel file to use instead of default\n");
    Run {
        out: r.out.replacen(label, &with, 1),
        ..r.clone()
    }
}

/// Whether ctrack dumps once per family for `args`: a TCP or UDP port
/// selected, and no family given (by `-f` or an address).
pub fn dumped_per_family(args: &[&str]) -> bool {
    let port = args.iter().any(|a| {
        [
            "--sport",
            "--dport",
            "--orig-port-src",
            "--orig-port-dst",
            "--reply-port-src",
            "--reply-port-dst",
        ]
        .contains(a)
    });
    let tcp_udp = args
        .windows(2)
        .any(|w| w[0] == "-p" && (w[1] == "tcp" || w[1] == "udp"));
    let family = args.iter().any(|a| {
        matches!(
            *a,
            "-f" | "--family"
                | "-s"
                | "--src"
                | "--orig-src"
                | "-d"
                | "--dst"
                | "--orig-dst"
                | "-r"
                | "--reply-src"
                | "-q"
                | "--reply-dst"
        )
    });
    port && tcp_udp && !family
}

/// conntrack's output with its IPv6 flows moved after the IPv4 ones
/// (each family keeping its order), in text and XML: lines before the
/// first flow and after the last (XML's header and footer) stay put.
pub fn ipv4_first(r: &Run) -> Run {
    let is_flow = |l: &str| l.contains("src=") || l.contains("<flow>");
    let v6 = |l: &&str| {
        l.contains("protoname=\"ipv6\"")
            || l.split(' ')
                .any(|w| w.starts_with("src=") && w.contains(':'))
    };
    let lines: Vec<&str> = r.out.lines().collect();
    let first = lines.iter().position(|l| is_flow(l)).unwrap_or(lines.len());
    let last = lines
        .iter()
        .rposition(|l| is_flow(l))
        .map_or(first, |i| i + 1);
    let (six, four): (Vec<&str>, Vec<&str>) = lines[first..last].iter().copied().partition(v6);
    let mut out = String::new();
    for l in lines[..first]
        .iter()
        .chain(&four)
        .chain(&six)
        .chain(&lines[last..])
    {
        out.push_str(l);
        out.push('\n');
    }
    Run { out, ..r.clone() }
}
