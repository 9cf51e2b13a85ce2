//! Helpers of the packaging tests (tests/packaging_binary.rs,
//! tests/packaging_scripts.rs, tests/packaging_lint.rs): the repository's
//! files, the static binaries `make static` builds, and skipping (or,
//! with CI=true, failing) when a prerequisite is missing.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::lab::{run, stderr, stdout};

/// The x86_64 static target.
pub const X86_64: &str = "x86_64-unknown-linux-musl";
/// The i686 (32-bit) static target.
pub const I686: &str = "i686-unknown-linux-musl";
/// The aarch64 static target.
pub const AARCH64: &str = "aarch64-unknown-linux-musl";

/// The repository (the crate's manifest directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of the file `rel` (relative to [`root`]).
pub fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// True under CI=true, where a missing prerequisite fails the test.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (prints why, returns false) or, with CI=true, fails.
pub fn need(ok: bool, why: &str) -> bool {
    if !ok {
        if ci() {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    ok
}

/// The release binary `make static` built for `triple`, if it exists.
pub fn static_bin(triple: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let p = dir.join(triple).join("release").join("ctrack");
    if need(
        p.is_file(),
        &format!("{} is missing: run `make static` first", p.display()),
    ) {
        Some(p)
    } else {
        None
    }
}

/// True when `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `bin` has the daemon role; prints why not otherwise.
pub fn daemon_built(bin: &Path) -> bool {
    let o = run(Command::new(bin).args(["daemon", "-h"]));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    if text.contains("not built yet") {
        eprintln!("SKIPPED: ctrackd is not built yet (`ctrack daemon -h`: {text:?})");
        return false;
    }
    true
}

/// A ctrackd config whose lock and socket live in `dir`.
pub fn daemon_conf(dir: &Path) -> PathBuf {
    let conf = dir.join("ctrackd.conf");
    fs::write(
        &conf,
        format!(
            "General {{\n\tSyslog off\n\tLockFile {d}/ctrackd.lock\n\tUNIX {{\n\t\tPath {d}/ctrackd.ctl\n\t}}\n}}\n",
            d = dir.display()
        ),
    )
    .expect("write ctrackd.conf");
    conf
}

/// Fails naming the first of `wants` that `text` (the file `what`) lacks.
pub fn assert_has(what: &str, text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "{what} lacks {want:?}");
    }
}
