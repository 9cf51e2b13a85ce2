//! Packaging tests of the shell scripts and the three init systems: every
//! shell script under shellcheck, the BusyBox init script driving a real
//! ctrackd in a lab namespace, the OpenWrt init script (procd service,
//! ctrackd.conf written from UCI) and the systemd unit under
//! `systemd-analyze verify`.
//!
//! The BusyBox test runs the x86_64 static binary from `make static`;
//! without it it fails with CI=true and skips otherwise.

mod lab;
mod packaging;
mod support;

use lab::{RouterLab, addr, must, run, stderr, stdout};
use packaging::{
    X86_64, assert_has, daemon_built, daemon_conf, have, need, read, root, static_bin,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::TempDir;

// ---------------------------------------------------------------------------
// Shell scripts

/// Every shell script in the repository: files with a shell shebang, `*.sh`
/// files and the hook and init files under init/ (OpenWrt's hotplug.d
/// scripts are sourced and carry no shebang).
fn shell_scripts() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(
                    name.as_str(),
                    "target" | ".git" | "corpus" | "artifacts" | "node_modules"
                ) {
                    walk(&p, out);
                }
                continue;
            }
            let head = fs::read(&p)
                .map(|b| b[..b.len().min(64)].to_vec())
                .unwrap_or_default();
            let first = String::from_utf8_lossy(&head);
            let first = first.lines().next().unwrap_or("");
            let shebang_sh = first.starts_with("#!")
                && ["/sh", "/bash", "/ash", "/dash", "env sh", "env bash"]
                    .iter()
                    .any(|s| first.contains(s));
            let under_init = p.strip_prefix(root()).is_ok_and(|r| r.starts_with("init"));
            let data = [
                ".conf", ".config", ".service", ".md", ".json", ".txt", ".key",
            ]
            .iter()
            .any(|x| name.ends_with(x));
            if shebang_sh || name.ends_with(".sh") || (under_init && !data) {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&root(), &mut v);
    v.sort();
    v
}

#[test]
fn every_shell_script_passes_shellcheck() {
    if !need(
        have("shellcheck"),
        "shellcheck is missing (apt-get install shellcheck)",
    ) {
        return;
    }
    let scripts = shell_scripts();
    for must_have in ["init/buildroot/S50ctrackd", "init/openwrt/ctrack.init"] {
        assert!(
            scripts.contains(&root().join(must_have)),
            "{must_have} not found among {scripts:?}"
        );
    }
    let mut failures = String::new();
    for p in &scripts {
        let text = fs::read_to_string(p).unwrap_or_default();
        let rel = p.strip_prefix(root()).unwrap_or(p).display().to_string();
        let first = text.lines().next().unwrap_or("");
        // Scripts that run on routers (OpenWrt ash, BusyBox sh) must be
        // POSIX sh; `local` (dash dialect) is the one extension allowed.
        if rel.starts_with("init/openwrt") || rel.starts_with("init/buildroot") {
            assert!(
                !first.contains("bash"),
                "{rel}: router scripts must be POSIX sh, not bash"
            );
            if let Some(d) = text
                .lines()
                .find_map(|l| l.split("shellcheck shell=").nth(1))
            {
                let d = d.split_whitespace().next().unwrap_or("");
                assert!(
                    d == "sh" || d == "dash",
                    "{rel}: shell={d}: router scripts are checked as sh (or dash for `local`)"
                );
            }
        }
        let mut c = Command::new("shellcheck");
        c.arg("--external-sources");
        // init/ (what ships to routers) at shellcheck's strictest level,
        // the repository's other scripts from warnings up
        if !rel.starts_with("init/") {
            c.arg("--severity=warning");
        }
        if !first.starts_with("#!") && !text.contains("shellcheck shell=") {
            c.args(["--shell", "sh"]);
        }
        let o = run(c.arg(p).current_dir(root()));
        if !o.status.success() {
            failures.push_str(&format!("--- {rel}\n{}{}", stdout(&o), stderr(&o)));
        }
    }
    assert!(failures.is_empty(), "shellcheck:\n{failures}");
    println!("shellcheck: {} scripts clean", scripts.len());
}

// ---------------------------------------------------------------------------
// BusyBox init script: start, reload, stop of a real ctrackd

#[test]
fn busybox_init_script_starts_reloads_and_stops_ctrackd() {
    if !lab::can_run() {
        return;
    }
    let Some(bin) = static_bin(X86_64) else {
        return;
    };
    if !daemon_built(&bin) {
        return;
    }
    if !need(
        have("busybox") && have("unshare"),
        "busybox or unshare is missing",
    ) {
        return;
    }
    let lab = RouterLab::new("bbinit");
    lab.ping(addr::SERVER);
    let t = TempDir::new("bbinit");
    // BusyBox applets first in PATH: its start-stop-daemon, sleep, mount
    let bb = t.join("bb");
    fs::create_dir_all(&bb).expect("bb dir");
    for applet in [
        "start-stop-daemon",
        "sleep",
        "sh",
        "modprobe",
        "mkdir",
        "rm",
    ] {
        std::os::unix::fs::symlink(
            String::from_utf8_lossy(
                &must(Command::new("sh").args(["-c", "command -v busybox"])).stdout,
            )
            .trim(),
            bb.join(applet),
        )
        .expect("busybox applet link");
    }
    let etc_default = t.join("default");
    fs::create_dir_all(&etc_default).expect("default dir");
    let conf = daemon_conf(&t);
    fs::write(
        etc_default.join("ctrackd"),
        format!("CTRACKD_CONF=\"{}\"\n", conf.display()),
    )
    .expect("/etc/default/ctrackd");
    let script = root().join("init/buildroot/S50ctrackd");
    // In a private mount namespace inside the lab's network namespace:
    // /usr/sbin, /run and /etc/default are replaced there only, so the
    // script runs with its real paths and the host sees nothing.
    let steps = format!(
        r#"
set -u
T={t}
mount -t tmpfs ctrack-test /run
mount -t tmpfs ctrack-test /usr/sbin
mount --bind "$T/default" /etc/default
cp {bin} /usr/sbin/ctrackd
PATH="$T/bb:$PATH"
export PATH
S={script}
busybox sh "$S" start; echo "start=$?"
pid1=$(cat /run/ctrackd.pid 2>/dev/null)
echo "pid1=$pid1"
/usr/sbin/ctrackd -C {conf} -s >/dev/null 2>&1; echo "stats=$?"
busybox sh "$S" reload; echo "reload=$?"
sleep 0.5
pid2=$(cat /run/ctrackd.pid 2>/dev/null)
echo "pid2=$pid2"
kill -0 "$pid2" 2>/dev/null; echo "alive_after_reload=$?"
/usr/sbin/ctrackd -C {conf} -s >/dev/null 2>&1; echo "stats_after_reload=$?"
busybox sh "$S" stop; echo "stop=$?"
# gone, or a zombie nobody reaped yet (the daemon's parent exited)
if [ -e "/proc/$pid1" ] && ! grep -q '^State:.*Z' "/proc/$pid1/status" 2>/dev/null; then echo "alive_after_stop=0"; else echo "alive_after_stop=1"; fi
[ -e /run/ctrackd.pid ]; echo "pidfile_after_stop=$?"
[ -e "$T/ctrackd.ctl" ]; echo "socket_after_stop=$?"
busybox sh "$S" bogus >/dev/null; echo "bogus=$?"
"#,
        t = t.display(),
        bin = bin.display(),
        script = script.display(),
        conf = conf.display(),
    );
    let o = lab.router.run(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "busybox",
        "sh",
        "-c",
        &steps,
    ]);
    let out = stdout(&o);
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let ctx = format!("{out}\n{}", stderr(&o));
    assert_eq!(get("start"), "0", "start: {ctx}");
    assert!(!get("pid1").is_empty(), "no pid file: {ctx}");
    assert_eq!(get("stats"), "0", "ctrackd -s after start: {ctx}");
    assert_eq!(get("reload"), "0", "reload: {ctx}");
    assert_eq!(get("pid1"), get("pid2"), "reload restarted ctrackd: {ctx}");
    assert_eq!(get("alive_after_reload"), "0", "{ctx}");
    assert_eq!(get("stats_after_reload"), "0", "{ctx}");
    assert_eq!(get("stop"), "0", "stop: {ctx}");
    assert_eq!(get("alive_after_stop"), "1", "still running: {ctx}");
    assert_eq!(get("pidfile_after_stop"), "1", "pid file left: {ctx}");
    assert_eq!(get("socket_after_stop"), "1", "socket left: {ctx}");
    assert_eq!(get("bogus"), "1", "{ctx}");
}

// ---------------------------------------------------------------------------
// OpenWrt init script: UCI -> ctrackd.conf

/// Stand-ins for the few OpenWrt shell functions ctrack.init's config
/// writer calls (/lib/functions.sh's config_* on a UCI file, network.sh's
/// lookups from NET_* variables, logger), so it runs under BusyBox ash.
const UCI_SHIM: &str = r#"
config_load() {
	eval "$(awk '
		function val(s) { sub(/^["'\'']/, "", s); sub(/["'\'']$/, "", s); return s }
		$1 == "config" { sec = val($3); if (sec == "") sec = "anon" NR; print "CONFIG_" sec "_TYPE=" val($2) }
		$1 == "option" { v = $0; sub(/^[ \t]*option[ \t]+[^ \t]+[ \t]+/, "", v); printf "CONFIG_%s_%s=%c%s%c\n", sec, $2, 39, val(v), 39 }
		$1 == "list"   { v = $0; sub(/^[ \t]*list[ \t]+[^ \t]+[ \t]+/, "", v); printf "CONFIG_%s_%s=\"${CONFIG_%s_%s:+$CONFIG_%s_%s }%s\"\n", sec, $2, sec, $2, sec, $2, val(v) }
	' "$UCI_DIR/$1")"
}
config_get() {
	local __v
	eval "__v=\${CONFIG_$2_$3-}"
	[ -n "$__v" ] || __v="${4-}"
	eval "$1=\$__v"
}
config_get_bool() {
	local __b
	config_get __b "$2" "$3" "${4-0}"
	case "$__b" in 1|on|true|yes|enabled) __b=1 ;; *) __b=0 ;; esac
	eval "$1=\$__b"
}
config_list_foreach() {
	local __l __i
	config_get __l "$1" "$2"
	for __i in $__l; do "$3" "$__i"; done
}
network_get_ipaddr() { eval "$1=\${NET_$2_ADDR-}"; eval "[ -n \"\${NET_$2_ADDR-}\" ]"; }
network_get_device() { eval "$1=\${NET_$2_DEV-}"; eval "[ -n \"\${NET_$2_DEV-}\" ]"; }
network_get_physdev() { eval "$1=\${NET_$2_PHYS-}"; eval "[ -n \"\${NET_$2_PHYS-}\" ]"; }
logger() { echo "logger: $*" >&2; }
"#;

/// Runs ctrack.init's `ctrack_conf` on a UCI file under BusyBox ash.
fn openwrt_conf(uci: &str, env: &[(&str, &str)]) -> (String, String) {
    let t = TempDir::new(&format!("uci{}", env.len()));
    fs::write(t.join("ctrack"), uci).expect("uci file");
    let script = format!(
        "{UCI_SHIM}\nUCI_DIR={dir}\n. {init}\nconfig_load ctrack\nctrack_conf\n",
        dir = t.display(),
        init = root().join("init/openwrt/ctrack.init").display()
    );
    let mut c = Command::new("busybox");
    c.args(["sh", "-c", &script]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = must(&mut c);
    (stdout(&o), stderr(&o))
}

#[test]
fn openwrt_init_writes_ctrackd_conf_from_uci() {
    if !need(
        have("busybox"),
        "busybox is missing (apt-get install busybox)",
    ) {
        return;
    }
    let defaults = read("init/openwrt/ctrack.config");
    let net = [
        ("NET_lan_ADDR", "192.168.1.1"),
        ("NET_lan_DEV", "br-lan"),
        ("NET_wan_DEV", "pppoe-wan"),
        ("NET_wan6_PHYS", "eth1"),
    ];
    let (conf, log) = openwrt_conf(&defaults, &net);
    for want in [
        "General {\n\tSyslog on\n",
        "\tUNIX {\n\t\tPath /var/run/ctrackd.ctl\n\t}\n",
        "\tNetlinkBufferSize 2097152\n",
        "Web {\n\tAddress 192.168.1.1\n\tPort 8088\n}\n",
        "WAN {\n\tInterface eth1\n\tInterface pppoe-wan\n\tFlush stale\n\tDebounce 1000\n}\n",
    ] {
        assert!(conf.contains(want), "missing {want:?} in:\n{conf}");
    }
    assert!(!conf.contains("Sync"), "sync is off by default:\n{conf}");
    assert!(log.is_empty(), "{log}");
    assert_eq!(
        conf.matches('{').count(),
        conf.matches('}').count(),
        "unbalanced braces:\n{conf}"
    );

    // LAN not up yet: no Web block, a log line saying why
    let (conf, log) = openwrt_conf(&defaults, &net[2..]);
    assert!(!conf.contains("Web"), "{conf}");
    assert!(log.contains("no IPv4 address"), "{log}");

    // sync on, with a peer and a key
    let sync_on = defaults
        .replace(
            "config sync 'sync'\n\toption enabled '0'",
            "config sync 'sync'\n\toption enabled '1'",
        )
        .replace("option peer ''", "option peer '10.0.0.2'")
        .replace(
            "#option key_file '/etc/ctrack/sync.key'",
            "option key_file '/etc/ctrack/sync.key'",
        );
    assert_ne!(sync_on, defaults, "the sync section changed its shape");
    let (conf, _) = openwrt_conf(&sync_on, &net);
    for want in [
        "Sync {\n\tMode FTFW {\n\t}\n\tUDP {\n\t\tIPv4_address 192.168.1.1\n",
        "\t\tIPv4_Destination_Address 10.0.0.2\n\t\tPort 3780\n\t\tInterface br-lan\n",
        "Auth {\n\tKeyFile /etc/ctrack/sync.key\n}\n",
    ] {
        assert!(conf.contains(want), "missing {want:?} in:\n{conf}");
    }
}

#[test]
fn openwrt_init_script_is_a_procd_service() {
    let init = read("init/openwrt/ctrack.init");
    assert!(init.starts_with("#!/bin/sh /etc/rc.common\n"));
    assert_has(
        "ctrack.init",
        &init,
        &[
            "USE_PROCD=1",
            "START=",
            "STOP=",
            "start_service()",
            "reload_service()",
            "service_triggers()",
            "config_load ctrack",
            "procd_open_instance",
            "procd_set_param command \"$PROG\" -C \"$CONF\"",
            "procd_set_param respawn",
            "procd_close_instance",
            "procd_add_reload_trigger ctrack",
            "procd_add_reload_interface_trigger",
            "procd_send_signal ctrack '*' HUP",
            "PROG=/usr/sbin/ctrackd",
        ],
    );
    // foreground under procd: no -d
    assert!(
        !init.contains(" -d"),
        "procd needs ctrackd in the foreground"
    );

    let uci = read("init/openwrt/ctrack.config");
    assert_has(
        "ctrack.config",
        &uci,
        &[
            "config ctrack 'main'\n\toption enabled '1'",
            "config web 'web'\n\toption enabled '1'\n\toption interface 'lan'",
            "config wan 'wan'\n\toption enabled '1'\n\tlist interface 'wan'",
            "config sync 'sync'\n\toption enabled '0'",
        ],
    );
}

// ---------------------------------------------------------------------------
// systemd unit

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = read("init/systemd/ctrackd.service");
    assert_has(
        "ctrackd.service",
        &unit,
        &[
            "Type=simple",
            "ExecStart=/usr/sbin/ctrackd -C /etc/ctrack/ctrackd.conf\n",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "Restart=on-failure",
            "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE\n",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "RuntimeDirectory=ctrack",
            "WantedBy=multi-user.target",
        ],
    );
    // the shipped config puts socket and lock where the unit may write
    let conf = read("init/ctrackd.conf");
    assert!(conf.contains("Path /var/run/ctrack/ctrackd.ctl"));
    assert!(conf.contains("LockFile /var/run/ctrack/ctrackd.lock"));

    if !have("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze verify (systemd-analyze is not installed)");
        return;
    }
    // verify checks that ExecStart exists: point it at a real binary
    let t = TempDir::new("systemd");
    let bin = t.join("ctrackd");
    let src = static_bin(X86_64).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ctrack")));
    fs::copy(&src, &bin).expect("copy binary");
    let u = t.join("ctrackd.service");
    fs::write(
        &u,
        unit.replace("/usr/sbin/ctrackd", bin.to_str().expect("utf-8")),
    )
    .expect("unit copy");
    let o = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&u));
    assert!(
        o.status.success() && stderr(&o).trim().is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&o),
        stderr(&o)
    );
}
