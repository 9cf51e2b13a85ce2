//! The OpenWrt package's uci-defaults script (init/openwrt/ctrack.uci-defaults)
//! under BusyBox ash: it makes the web page's admin token once (64 hex
//! digits, mode 600), points `ctrack.web.token_file` at it, and keeps an
//! existing token and setting on a second run (a sysupgrade).
#![cfg(feature = "web")]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::TempDir;

fn have_busybox() -> bool {
    let ok = Command::new("busybox")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "busybox is missing (apt-get install busybox)"
        );
        eprintln!("skipping: busybox is not installed");
    }
    ok
}

/// Runs the script with a stand-in `uci` that keeps its settings in
/// `dir/uci`; returns that file's text.
fn run(dir: &TempDir) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let uci = bin.join("uci");
    std::fs::write(
        &uci,
        format!(
            "#!/bin/sh\n[ \"$1\" = -q ] && shift\nf={}\ncase \"$1\" in\n\
             get) sed -n \"s/^$2=//p\" \"$f\" 2>/dev/null ;;\n\
             set) echo \"$2\" >> \"$f\" ;;\n\
             commit) echo commit >> \"$f\" ;;\nesac\n",
            dir.join("uci").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&uci, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("busybox")
        .args(["sh", "init/openwrt/ctrack.uci-defaults"])
        .env("PATH", path)
        .env("CTRACK_WEB_TOKEN", dir.join("web.token"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(dir.join("uci")).unwrap_or_default()
}

#[test]
fn uci_defaults_make_the_admin_token_once() {
    if !have_busybox() {
        return;
    }
    let dir = TempDir::new("ucidef");
    let uci = run(&dir);
    let token_path = dir.join("web.token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert_eq!(token.len(), 64, "{token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token:?}");
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        uci,
        format!("ctrack.web.token_file={}\ncommit\n", token_path.display())
    );
    // the server takes it as it is
    assert!(ctrack::web::access::token_text(&token).is_ok());
    // a second run (a sysupgrade) keeps the token and the setting
    let again = run(&dir);
    assert_eq!(std::fs::read_to_string(&token_path).unwrap(), token);
    assert_eq!(again, uci, "nothing set twice");
}
