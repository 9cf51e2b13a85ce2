//! Helpers every integration test may share, whatever it tests: a scratch
//! directory of its own ([`TempDir`]) and the one normaliser of conntrack
//! text lines ([`flowline`]). Each test file is a crate of its own and
//! says `mod support;`; the namespace lab is `tests/lab`.
#![allow(dead_code)]

pub mod captures;
pub mod flowline;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Directories made by this process so far (part of each name).
static MADE: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory for one test, removed with everything in it
/// when dropped (also when the test panics).
///
/// It lives in the system's temporary directory (`std::env::temp_dir()`:
/// `$TMPDIR`, else /tmp), named `ctrack-test-<tag>-<pid>-<n>-<time>`: the
/// process id, a counter of this process and the clock make every call's
/// name its own, so two calls with one tag (in one test process or in
/// two) never share a directory, and none deletes another's. The
/// directory is created, never reused: an existing one is an error.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes the directory; `tag` says which test it belongs to.
    pub fn new(tag: &str) -> TempDir {
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "ctrack-test-{tag}-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("cannot make {}: {e}", p.display()));
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// A `TempDir` is used as its path: `dir.join("ctl")`, `&dir` for a
/// `&Path`.
impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
