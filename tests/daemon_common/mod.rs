//! A ctrackd for tests: started in a lab namespace with its files in a
//! scratch directory, stopped and cleaned up on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::lab::{self, Netns, wait_until};
use crate::support::TempDir;

/// A ctrackd running in a namespace with its files in a temp dir.
pub struct Daemon<'a> {
    pub ns: &'a Netns,
    pub dir: TempDir,
    pub child: Option<Child>,
}

pub fn config_text(dir: &TempDir, extra_general: &str, extra_blocks: &str) -> String {
    format!(
        "General {{\n  LockFile {}\n  UNIX {{ Path {} }}\n  LogFile {}\n{extra_general}\n}}\n{extra_blocks}\n",
        dir.join("lock").display(),
        dir.join("ctl").display(),
        dir.join("log").display()
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
            dir.join("ctrackd.conf"),
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
        self.dir.join("ctrackd.conf")
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
        let ctl = self.dir.join("ctl");
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
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
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
