//! The keepalived notify script (init/keepalived/ctrack-notify.sh) and the
//! OpenWrt hotplug hook run the right ctrackd commands in the right order
//! (checked with a stand-in ctrackd that records its arguments).
#![cfg(feature = "sync")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::TempDir;

fn script(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

struct Fake {
    dir: TempDir,
}

impl Fake {
    /// A fake ctrackd that logs its arguments; `-s` fails when `down`.
    fn new(tag: &str, down: bool) -> Fake {
        let dir = TempDir::new(&format!("notify-{tag}"));
        let bin = dir.join("ctrackd");
        let fail_s = if down {
            "[ \"$3\" = -s ] && exit 1"
        } else {
            ":"
        };
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n{fail_s}\nexit 0\n",
                dir.join("calls").display()
            ),
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&bin).status().unwrap();
        Fake { dir }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.replace(&format!("-C {} ", self.conf().display()), ""))
            .collect()
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("ctrackd.conf")
    }

    fn run(&self, script: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut c = Command::new("sh");
        c.arg(script)
            .args(args)
            .env("CTRACKD", self.dir.join("ctrackd"))
            .env("CTRACKD_CONF", self.conf())
            .env("CTRACKD_LOCK", self.dir.join("lock"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

#[test]
fn primary_backup_fault_run_conntrackds_sequence() {
    let s = script("init/keepalived/ctrack-notify.sh");
    let f = Fake::new("p", false);
    assert!(f.run(&s, &["primary"], &[]).status.success());
    assert_eq!(f.calls(), ["-c", "-f", "-R", "-B"]);

    let f = Fake::new("b", false);
    assert!(f.run(&s, &["backup"], &[]).status.success());
    assert_eq!(f.calls(), ["-s", "-t", "-n"]);

    let f = Fake::new("f", false);
    // keepalived's generic notify form: TYPE NAME STATE
    assert!(f.run(&s, &["GROUP", "G1", "FAULT"], &[]).status.success());
    assert_eq!(f.calls(), ["-t"]);

    let f = Fake::new("x", false);
    assert!(!f.run(&s, &["bogus"], &[]).status.success());
}

#[test]
fn backup_starts_a_dead_daemon_and_removes_a_stale_lock() {
    let s = script("init/keepalived/ctrack-notify.sh");
    let f = Fake::new("d", true);
    std::fs::write(f.dir.join("lock"), "").unwrap();
    let o = f.run(&s, &["backup"], &[]);
    assert!(o.status.success());
    assert_eq!(f.calls(), ["-s", "-d", "-t", "-n"]);
    assert!(!f.dir.join("lock").exists());
}

#[test]
fn openwrt_hotplug_maps_actions() {
    // the hook calls the installed script; point it at ours through a
    // copy with the paths rewritten
    let f = Fake::new("o", false);
    let hook = std::fs::read_to_string(script("init/openwrt/keepalived.hotplug"))
        .unwrap()
        .replace(
            "/usr/libexec/ctrack/ctrack-notify.sh",
            &script("init/keepalived/ctrack-notify.sh")
                .display()
                .to_string(),
        )
        .replace("[ -x /usr/sbin/ctrackd ] || exit 0", "")
        .replace(
            "$(uci -q get ctrack.sync.keepalived_name)",
            "${WANT_NAME:-}",
        );
    let h = f.dir.join("60-ctrack");
    std::fs::write(&h, hook).unwrap();
    let o = f.run(
        &h,
        &[],
        &[
            ("ACTION", "NOTIFY_MASTER"),
            ("TYPE", "GROUP"),
            ("NAME", "G1"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(f.calls(), ["-c", "-f", "-R", "-B"]);
    // another instance's notification is ignored when a name is set
    let o = f.run(
        &h,
        &[],
        &[
            ("ACTION", "NOTIFY_BACKUP"),
            ("TYPE", "INSTANCE"),
            ("NAME", "LAN"),
            ("WANT_NAME", "G1"),
        ],
    );
    assert!(o.status.success());
    assert_eq!(f.calls().len(), 4);
}
