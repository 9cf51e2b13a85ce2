//! The OpenWrt pieces of the web page under BusyBox ash: the package's
//! uci-defaults script (init/openwrt/ctrack.uci-defaults) makes the admin
//! token once (64 hex digits, mode 600), points `ctrack.web.token_file`
//! at it, and keeps an existing token and setting on a second run (a
//! sysupgrade); the CGI that puts the page behind LuCI's login
//! (init/openwrt/ctrack-luci.cgi) relays only for a valid LuCI session,
//! adds the read token, and refuses what it must.
#![cfg(feature = "web")]

mod lab;
mod support;
mod webtest;

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

/// Runs the LuCI CGI in `ns` against `port`, with a stand-in `ubus`
/// that knows one session; returns its output.
fn cgi(ns: &lab::Netns, dir: &TempDir, port: u16, env: &[(&str, &str)]) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let ubus = bin.join("ubus");
    std::fs::write(
        &ubus,
        "#!/bin/sh\ncase \"$4\" in *0123456789abcdef0123456789abcdef*) echo '{}' ;; *) exit 4 ;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&ubus, std::fs::Permissions::from_mode(0o755)).unwrap();
    // busybox's nc, as on OpenWrt
    let nc = bin.join("nc");
    if !nc.exists() {
        std::os::unix::fs::symlink("/bin/busybox", &nc).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = ns.cmd(&["env"]);
    c.arg(format!("PATH={path}"))
        .arg(format!("CTRACK_PORT={port}"))
        .arg(format!(
            "CTRACK_READ_TOKEN_FILE={}",
            dir.join("read").display()
        ));
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.args(["busybox", "sh", "init/openwrt/ctrack-luci.cgi"]);
    let o = c.output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn luci_cgi_relays_for_a_logged_in_session_only() {
    if !lab::can_run() || !have_busybox() {
        return;
    }
    let ns = lab::Netns::new("wluci");
    webtest::load_flows(&ns, &webtest::volume_lines(30));
    let dir = TempDir::new("lucicgi");
    let mut cfg = webtest::config();
    cfg.read_token_file = Some(webtest::token_file(&dir, "read", "read-token-0123456789"));
    let web = webtest::start(&ns, cfg, ctrack::web::Hub::default());
    let port = web.local_addr().port();
    let good = "sysauth_http=0123456789abcdef0123456789abcdef";
    // logged in: the list, with the read token added by the CGI
    let out = cgi(
        &ns,
        &dir,
        port,
        &[
            ("HTTP_COOKIE", &format!("other=1; {good}")),
            ("PATH_INFO", "/api/v1/connections"),
            ("QUERY_STRING", "mark=77&limit=5&sort=-id"),
            ("REQUEST_METHOD", "GET"),
        ],
    );
    assert!(out.starts_with("Status: 200 OK\r\n"), "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["matched"], 30);
    assert_eq!(v["items"].as_array().unwrap().len(), 5);
    // the page itself, relative to the CGI
    let out = cgi(
        &ns,
        &dir,
        port,
        &[("HTTP_COOKIE", good), ("PATH_INFO", "/")],
    );
    assert!(
        out.starts_with("Status: 200 OK\r\n") && out.contains("<title>"),
        "{out}"
    );
    // no session, a bad one, an ended one: 403, nothing relayed
    for cookie in [
        "",
        "sysauth_http=xyz",
        "sysauth_http=0123456789ABCDEF0123456789ABCDEF",
        "sysauth=ffffffffffffffffffffffffffffffff",
    ] {
        let out = cgi(
            &ns,
            &dir,
            port,
            &[("HTTP_COOKIE", cookie), ("PATH_INFO", "/api/v1/stats")],
        );
        assert!(
            out.starts_with("Status: 403 Forbidden\r\n"),
            "{cookie}: {out}"
        );
    }
    // what it refuses to relay
    for (path, query, method, status) in [
        ("/api/v1/events", "", "GET", "404"),
        ("/api/v1/stats\r\nX: y", "", "GET", "400"),
        ("/api/v1/connections", "q=a b", "GET", "400"),
        ("/api/v1/connections", "", "POST", "405"),
    ] {
        let out = cgi(
            &ns,
            &dir,
            port,
            &[
                ("HTTP_COOKIE", good),
                ("PATH_INFO", path),
                ("QUERY_STRING", query),
                ("REQUEST_METHOD", method),
            ],
        );
        assert!(
            out.starts_with(&format!("Status: {status} ")),
            "{path} {query}: {out}"
        );
    }
    // a token of the browser's own goes through instead (wrong: 401)
    let out = cgi(
        &ns,
        &dir,
        port,
        &[
            ("HTTP_COOKIE", good),
            ("PATH_INFO", "/api/v1/stats"),
            ("HTTP_AUTHORIZATION", "Bearer wrong-token-0123456789"),
        ],
    );
    assert!(out.starts_with("Status: 401 Unauthorized\r\n"), "{out}");
    web.stop();
}
