//! A ctrackd for tests: started in a lab namespace with its files in a
//! scratch directory, stopped and cleaned up on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::lab::{self, Netns, wait_until};

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "ctrackd-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A ctrackd running in a namespace with its files in a temp dir.
pub struct Daemon<'a> {
    pub ns: &'a Netns,
    pub dir: TempDir,
    pub child: Option<Child>,
}

pub fn config_text(dir: &TempDir, extra_general: &str, extra_blocks: &str) -> String {
    format!(
        "General {{\n  LockFile {}\n  UNIX {{ Path {} }}\n  LogFile {}\n{extra_general}\n}}\n{extra_blocks}\n",
        dir.path("lock").display(),
        dir.path("ctl").display(),
        dir.path("log").display()
    )
}

impl<'a> Daemon<'a> {
    pub fn start(ns: &'a Netns, tag: &str, extra_general: &str) -> Daemon<'a> {
        Daemon::start_with(ns, tag, extra_general, "")
    }

    /// Starts with extra top-level blocks (`Web { ... }`, `WAN { ... }`).
    pub fn start_with(ns: &'a Netns, tag: &str, extra_general: &str, blocks: &str) -> Daemon<'a> {
        let dir = TempDir::new(tag);
        std::fs::write(
            dir.path("ctrackd.conf"),
            config_text(&dir, extra_general, blocks),
        )
        .unwrap();
        let mut d = Daemon {
            ns,
            dir,
            child: None,
        };
        d.spawn();
        d
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path("ctrackd.conf")
    }

    pub fn spawn(&mut self) {
        let child = self
            .ns
            .cmd(&[
                lab::ctrack_bin().to_str().unwrap(),
                "daemon",
                "-C",
                self.conf().to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ctrackd");
        self.child = Some(child);
        let ctl = self.dir.path("ctl");
        assert!(
            wait_until(Duration::from_secs(10), || ctl.exists()
                && self.client(&["-s"]).status.success()),
            "ctrackd did not come up; log:\n{}",
            self.log()
        );
    }

    pub fn client(&self, args: &[&str]) -> Output {
        let conf = self.conf();
        let mut argv = vec!["daemon", "-C", conf.to_str().unwrap()];
        argv.extend_from_slice(args);
        lab::run(Command::new(lab::ctrack_bin()).args(&argv))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("log")).unwrap_or_default()
    }

    /// Waits for the daemon process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let ok = wait_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        assert!(ok, "ctrackd did not stop");
        child.wait().ok().and_then(|s| s.code())
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        // the child is `ip netns exec`, which execs ctrackd in place
        lab::must(Command::new("kill").args([sig, &pid.to_string()]));
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
