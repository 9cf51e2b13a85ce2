//! Packaging tests: the static binaries (ELF kind, size budget, i686 equal
//! to x86_64 on a live table, aarch64 under qemu-user), every shell script
//! under shellcheck, the init scripts (BusyBox init driving ctrackd in a lab
//! namespace, the OpenWrt init writing ctrackd.conf from UCI, the systemd
//! unit under `systemd-analyze verify`), and the Buildroot and OpenWrt
//! package files.
//!
//! The static binaries come from `make static` (the Makefile's `integration`
//! target builds them before `cargo test`). Without them these tests fail
//! with CI=true and skip otherwise, saying which make target to run.

mod lab;

use lab::{RouterLab, addr, must, run, stderr, stdout};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The size budget of the x86_64 static binary with every feature.
const SIZE_BUDGET: u64 = 1024 * 1024;

const X86_64: &str = "x86_64-unknown-linux-musl";
const I686: &str = "i686-unknown-linux-musl";
const AARCH64: &str = "aarch64-unknown-linux-musl";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (prints why, returns false) or, with CI=true, fails.
fn need(ok: bool, why: &str) -> bool {
    if !ok {
        if ci() {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    ok
}

/// The release binary `make static` built for `triple`, if it exists.
fn static_bin(triple: &str) -> Option<PathBuf> {
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

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `bin` has the daemon role; prints why not otherwise.
fn daemon_built(bin: &Path) -> bool {
    let o = run(Command::new(bin).args(["daemon", "-h"]));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    if text.contains("not built yet") {
        eprintln!("SKIPPED: ctrackd is not built yet (`ctrack daemon -h`: {text:?})");
        return false;
    }
    true
}

// ---------------------------------------------------------------------------
// ELF facts of the static binaries

struct Elf {
    bits: u8,
    big_endian: bool,
    machine: u16,
    interp: bool,
}

/// Reads the ELF header and program headers (enough to know the machine and
/// whether a dynamic loader is requested).
fn elf(path: &Path) -> Elf {
    let b = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(b.len() > 64 && &b[..4] == b"\x7fELF", "not an ELF file");
    let bits = if b[4] == 2 { 64 } else { 32 };
    let big_endian = b[5] == 2;
    let u16_at = |o: usize| {
        let v = [b[o], b[o + 1]];
        if big_endian {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    };
    let u32_at = |o: usize| {
        let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    };
    let (phoff, phentsize, phnum) = if bits == 64 {
        let lo = u32_at(32) as usize;
        let hi = u32_at(36) as usize;
        let off = if big_endian {
            lo << 32 | hi
        } else {
            hi << 32 | lo
        };
        (off, u16_at(54) as usize, u16_at(56) as usize)
    } else {
        (
            u32_at(28) as usize,
            u16_at(42) as usize,
            u16_at(44) as usize,
        )
    };
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32_at(o) == 3 // PT_INTERP
    });
    Elf {
        bits,
        big_endian,
        machine: u16_at(18),
        interp,
    }
}

#[test]
fn static_binaries_are_static_for_their_cpu() {
    for (triple, bits, machine) in [(X86_64, 64, 62), (I686, 32, 3), (AARCH64, 64, 183)] {
        let Some(bin) = static_bin(triple) else {
            return;
        };
        let e = elf(&bin);
        assert_eq!(
            (e.bits, e.big_endian, e.machine),
            (bits, false, machine),
            "{triple}: wrong ELF class/machine"
        );
        assert!(
            !e.interp,
            "{triple}: asks for a dynamic loader (not static)"
        );
    }
}

#[test]
fn x86_64_static_binary_within_size_budget() {
    let Some(bin) = static_bin(X86_64) else {
        return;
    };
    let size = fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: {size} bytes ({} KiB) of the {} KiB budget",
        bin.display(),
        size / 1024,
        SIZE_BUDGET / 1024
    );
    if size > SIZE_BUDGET {
        let report = run(&mut Command::new(root().join("scripts/size-report.sh")));
        panic!(
            "the static x86_64 binary is {size} bytes, over the budget of {SIZE_BUDGET} bytes \
             (1 MiB stripped, every feature).\nWhere the bytes go:\n{}{}",
            stdout(&report),
            stderr(&report)
        );
    }
}

#[test]
fn aarch64_binary_runs_under_qemu_user() {
    let Some(bin) = static_bin(AARCH64) else {
        return;
    };
    if !need(
        have("qemu-aarch64-static"),
        "qemu-aarch64-static is missing (apt-get install qemu-user-static)",
    ) {
        return;
    }
    let o = must(Command::new("qemu-aarch64-static").arg(&bin).arg("version"));
    let want = format!("ctrack {} ", env!("CARGO_PKG_VERSION"));
    assert!(stdout(&o).starts_with(&want), "{}", stdout(&o));
}

// ---------------------------------------------------------------------------
// i686 (32-bit) against x86_64 on a live table

/// Runs `args` with both binaries until their outputs agree, at most ten
/// times: a timeout or delta-time may tick between two runs (more so on a
/// loaded machine), but a real difference shows every time.
fn same_output(x86: &Path, i686: &Path, ns: &str, args: &[&str]) {
    let mut last = String::new();
    for _ in 0..10 {
        let a = run(Command::new(x86).arg("--netns").arg(ns).args(args));
        let b = run(Command::new(i686).arg("--netns").arg(ns).args(args));
        if a.stdout == b.stdout && a.stderr == b.stderr && a.status.code() == b.status.code() {
            assert!(a.status.success(), "ctrack {args:?} failed: {}", stderr(&a));
            return;
        }
        last = format!(
            "x86_64 ({:?}):\n{}{}\ni686 ({:?}):\n{}{}",
            a.status.code(),
            stdout(&a),
            stderr(&a),
            b.status.code(),
            stdout(&b),
            stderr(&b)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("ctrack {args:?}: the i686 binary differs from the x86_64 one:\n{last}");
}

fn file_has(path: &Path, needle: &str) -> bool {
    fs::read_to_string(path).is_ok_and(|s| s.contains(needle))
}

/// Creates (or re-creates) a UDP entry used as a marker in event streams.
fn marker(bin: &Path, ns: &str, port: &str, create: bool) {
    let mut c = Command::new(bin);
    c.arg("--netns").arg(ns);
    if create {
        c.args([
            "-I",
            "-p",
            "udp",
            "-s",
            "10.99.0.1",
            "-d",
            "10.99.0.2",
            "--sport",
            port,
            "--dport",
            port,
            "-t",
            "60",
        ]);
    } else {
        c.args(["-D", "-p", "udp", "-s", "10.99.0.1", "--sport", port]);
    }
    run(&mut c);
}

/// Event lines without their racy ` progname=NAME` suffix.
fn without_progname(events: &str) -> String {
    events
        .lines()
        .map(|line| match line.find(" progname=") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn i686_binary_equals_x86_64_on_a_live_table() {
    if !lab::can_run() {
        return;
    }
    let (Some(x86), Some(i686)) = (static_bin(X86_64), static_bin(I686)) else {
        return;
    };
    let lab = RouterLab::new("i686");
    let ns = lab.router.name.clone();

    // events: both listen, then the same traffic, then both must have seen
    // the same lines between a start and an end marker
    let tmp = tempdir("i686ev");
    let out_x = tmp.join("x86_64.out");
    let out_i = tmp.join("i686.out");
    let listen = |bin: &Path, out: &Path| {
        Command::new(bin)
            .arg("--netns")
            .arg(&ns)
            .arg("-E")
            .stdout(fs::File::create(out).expect("event output file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start ctrack -E")
    };
    let mut ev_x = listen(&x86, &out_x);
    let mut ev_i = listen(&i686, &out_i);
    // the start marker, repeated until both listeners show it (they are
    // subscribed from then on)
    let started = lab::wait_until(Duration::from_secs(10), || {
        marker(&x86, &ns, "1", false);
        marker(&x86, &ns, "1", true);
        std::thread::sleep(Duration::from_millis(100));
        file_has(&out_x, "sport=1 ") && file_has(&out_i, "sport=1 ")
    });
    assert!(started, "the event listeners saw no start marker");
    marker(&x86, &ns, "1", false);
    std::thread::sleep(Duration::from_millis(100));
    let skip_x = fs::read(&out_x).map(|b| b.len()).unwrap_or(0);
    let skip_i = fs::read(&out_i).map(|b| b.len()).unwrap_or(0);

    lab.ping(addr::SERVER);
    lab.ping(addr::SERVER6);
    lab.tcp(addr::SERVER, 8080);
    lab.udp(addr::SERVER, 5353);
    lab.udp(addr::SERVER6, 5353);
    marker(&x86, &ns, "2", true);
    let ended = lab::wait_until(Duration::from_secs(10), || {
        file_has(&out_x, "sport=2 ") && file_has(&out_i, "sport=2 ")
    });
    for child in [&mut ev_x, &mut ev_i] {
        // SAFETY: kill with a pid of our own live child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = child.wait();
    }
    assert!(ended, "the event listeners saw no end marker");
    let ev_x = fs::read(&out_x).expect("x86_64 events");
    let ev_i = fs::read(&out_i).expect("i686 events");
    let (ev_x, ev_i) = (
        String::from_utf8_lossy(&ev_x[skip_x.min(ev_x.len())..]).into_owned(),
        String::from_utf8_lossy(&ev_i[skip_i.min(ev_i.len())..]).into_owned(),
    );
    assert!(
        ev_x.contains("[NEW] tcp") && ev_x.contains("[NEW] icmp"),
        "{ev_x}"
    );
    // `progname=` is looked up in /proc when the event is printed; the
    // program that made the entry may be gone for one listener and not yet
    // for the other (conntrack races the same way), so it is left out
    assert_eq!(
        without_progname(&ev_x),
        without_progname(&ev_i),
        "ctrack -E: i686 and x86_64 differ"
    );

    // the table: text, JSON, extended, XML, save, count
    for args in [
        &["-L"][..],
        &["-L", "-o", "json"],
        &["-L", "-o", "extended,id"],
        &["-L", "-o", "xml"],
        &["-L", "-o", "save"],
        &["-L", "-f", "ipv6"],
        &["-C"],
    ] {
        same_output(&x86, &i686, &ns, args);
    }
    let listed = run(Command::new(&x86).args(["--netns", &ns, "-L"]));
    assert!(stdout(&listed).lines().count() >= 4, "{}", stdout(&listed));

    // the daemon's internal cache, once the daemon exists
    if daemon_built(&x86) {
        let a = daemon_dump(&lab, &x86, "x86_64");
        let b = daemon_dump(&lab, &i686, "i686");
        assert_eq!(a, b, "ctrackd -i: i686 and x86_64 differ");
    }
}

/// A directory under target/ for one test's files, made empty.
fn tempdir(tag: &str) -> PathBuf {
    let d = root()
        .join("target")
        .join("packaging-tests")
        .join(format!("{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("test directory");
    d
}

/// A ctrackd config whose lock and socket live in `dir`.
fn daemon_conf(dir: &Path) -> PathBuf {
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

/// Starts `bin` as ctrackd in the lab router, returns its sorted `-i`.
fn daemon_dump(lab: &RouterLab, bin: &Path, tag: &str) -> Vec<String> {
    let dir = tempdir(&format!("ctrackd-{tag}"));
    let conf = daemon_conf(&dir);
    let conf = conf.to_str().expect("utf-8 path");
    let bin = bin.to_str().expect("utf-8 path");
    let mut d = lab.router.spawn(&[bin, "daemon", "-C", conf]);
    let up = lab::wait_until(Duration::from_secs(10), || {
        lab.router
            .run(&[bin, "daemon", "-C", conf, "-s"])
            .status
            .success()
    });
    let dump = lab.router.run(&[bin, "daemon", "-C", conf, "-i"]);
    let _ = lab.router.run(&[bin, "daemon", "-C", conf, "-k"]);
    let _ = d.kill();
    let _ = d.wait();
    assert!(up, "ctrackd ({tag}) did not answer -s");
    assert!(dump.status.success(), "ctrackd -i: {}", stderr(&dump));
    // `[active since Ns]` may tick between the two daemons' runs
    let mut lines: Vec<String> = stdout(&dump)
        .lines()
        .map(|l| match l.find(" [active since ") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect();
    lines.sort();
    lines
}

/// Fails naming the first of `wants` that `text` (the file `what`) lacks.
fn assert_has(what: &str, text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "{what} lacks {want:?}");
    }
}

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
    let t = tempdir("bbinit");
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
    let t = tempdir(&format!("uci{}", env.len()));
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
    let t = tempdir("systemd");
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

// ---------------------------------------------------------------------------
// Buildroot external tree and OpenWrt feed package (cannot be built here)

fn cargo_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The value of a make variable assigned with `=`, `:=` or `?=`.
fn make_var(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.trim_start();
        let v = rest
            .strip_prefix(":=")
            .or_else(|| rest.strip_prefix("?="))
            .or_else(|| rest.strip_prefix('='))?;
        Some(v.trim().to_string())
    })
}

/// Lines inside `define ... endef` blocks must start with a tab (make
/// recipes; Buildroot's check-package demands it too).
fn defines_are_tab_indented(file: &str, text: &str, skip: &[&str]) {
    let mut inside: Option<&str> = None;
    for (n, l) in text.lines().enumerate() {
        if let Some(name) = l.strip_prefix("define ") {
            inside = Some(name);
            continue;
        }
        if l == "endef" {
            inside = None;
            continue;
        }
        if let Some(name) = inside {
            if skip.contains(&name) || l.is_empty() {
                continue;
            }
            assert!(
                l.starts_with('\t'),
                "{file}:{}: recipe line in `define {name}` not tab-indented: {l:?}",
                n + 1
            );
        }
    }
}

/// Paths `$(@D)/...` or `$(PKG_BUILD_DIR)/...` name in the source tree.
fn source_paths(text: &str, prefix: &str) -> Vec<String> {
    text.split(prefix)
        .skip(1)
        .map(|s| {
            s.chars()
                .take_while(|c| !c.is_whitespace() && *c != ';' && *c != '\\')
                .collect()
        })
        .filter(|p: &String| !p.contains("$(") && !p.starts_with("target/"))
        .collect()
}

fn sha256_of(rel: &str) -> String {
    let o = must(Command::new("sha256sum").arg(root().join(rel)));
    stdout(&o)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn buildroot_external_tree_is_complete() {
    let desc = read("buildroot/external.desc");
    assert!(desc.lines().any(|l| l == "name: CTRACK"), "{desc}");
    let cfg = read("buildroot/Config.in");
    assert!(cfg.contains("source \"$BR2_EXTERNAL_CTRACK_PATH/package/ctrack/Config.in\""));
    let ext = read("buildroot/external.mk");
    assert!(ext.contains("$(BR2_EXTERNAL_CTRACK_PATH)/package/*/*.mk"));

    let pcfg = read("buildroot/package/ctrack/Config.in");
    assert_has(
        "package Config.in",
        &pcfg,
        &[
            "config BR2_PACKAGE_CTRACK\n",
            "depends on BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS",
            "select BR2_PACKAGE_HOST_RUSTC",
            "config BR2_PACKAGE_CTRACK_WEB",
            "config BR2_PACKAGE_CTRACK_SYNC",
            "config BR2_PACKAGE_CTRACK_WAN",
            "config BR2_PACKAGE_CTRACK_CONNTRACK_LINKS",
            "depends on !BR2_PACKAGE_CONNTRACK_TOOLS",
        ],
    );

    let mk = read("buildroot/package/ctrack/ctrack.mk");
    assert_eq!(
        make_var(&mk, "CTRACK_VERSION").as_deref(),
        Some(cargo_version()),
        "CTRACK_VERSION must equal Cargo.toml's version"
    );
    for var in ["CTRACK_SITE", "CTRACK_LICENSE", "CTRACK_LICENSE_FILES"] {
        assert!(make_var(&mk, var).is_some(), "ctrack.mk lacks {var}");
    }
    assert_has(
        "ctrack.mk",
        &mk,
        &[
            "$(eval $(cargo-package))",
            "define CTRACK_INSTALL_INIT_SYSV",
            "/etc/init.d/S50ctrackd",
            "define CTRACK_INSTALL_INIT_SYSTEMD",
            "/usr/lib/systemd/system/ctrackd.service",
            "define CTRACK_LINUX_CONFIG_FIXUPS",
            "KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK)",
            "KCONFIG_ENABLE_OPT,CONFIG_NF_CT_NETLINK)",
            "KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK_EVENTS)",
            "--no-default-features",
            "$(TARGET_DIR)/usr/sbin/ctrackd",
        ],
    );
    defines_are_tab_indented("ctrack.mk", &mk, &[]);
    for p in source_paths(&mk, "$(@D)/") {
        assert!(root().join(&p).is_file(), "ctrack.mk installs {p}, missing");
    }
    // every license file is hashed, with its current hash
    let hash = read("buildroot/package/ctrack/ctrack.hash");
    let lic = make_var(&mk, "CTRACK_LICENSE_FILES").unwrap_or_default();
    for f in lic.split_whitespace() {
        let want = format!("sha256  {}  {f}", sha256_of(f));
        assert!(hash.contains(&want), "ctrack.hash lacks {want:?}");
    }

    // S50ctrackd follows Buildroot's check-package rules for SysV scripts
    let s50 = read("init/buildroot/S50ctrackd");
    assert!(s50.starts_with("#!/bin/sh\n"));
    assert!(s50.lines().any(|l| l == "DAEMON=\"ctrackd\""));
    assert!(s50.lines().any(|l| l == "PIDFILE=\"/var/run/$DAEMON.pid\""));
    for (n, l) in s50.lines().enumerate() {
        assert!(
            !l.starts_with(' ') && !l.starts_with("\t "),
            "S50ctrackd:{}: indent with tabs",
            n + 1
        );
        assert_eq!(l, l.trim_end(), "S50ctrackd:{}: trailing space", n + 1);
    }
    assert_has(
        "S50ctrackd",
        &s50,
        &[
            "start|stop|restart|reload)",
            "--make-pidfile",
            "--signal HUP",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root().join("init/buildroot/S50ctrackd"))
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    assert!(mode & 0o111 != 0, "S50ctrackd must be executable");
}

/// apk's version rule, as OpenWrt enforces it since the move to apk:
/// digits separated by dots, optional `_suffix[N]`, optional `~hash`.
fn apk_version_ok(v: &str) -> bool {
    let (v, _hash) = v.split_once('~').unwrap_or((v, ""));
    let (nums, suffix) = v.split_once('_').unwrap_or((v, ""));
    let nums_ok = !nums.is_empty()
        && nums
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix.is_empty()
        || ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]
            .iter()
            .any(|s| {
                suffix
                    .strip_prefix(s)
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            });
    nums_ok && suffix_ok
}

#[test]
fn apk_version_rule() {
    for ok in ["0.1.0", "1.2.3.4", "1.0_rc1", "2024.01.02~abc123"] {
        assert!(apk_version_ok(ok), "{ok}");
    }
    for bad in ["", "v0.1.0", "0.1.0-beta", "0.1.0-1", "1..2", "1.0_foo"] {
        assert!(!apk_version_ok(bad), "{bad}");
    }
}

#[test]
fn openwrt_feed_package_is_complete() {
    let mk = read("openwrt/ctrack/Makefile");
    assert_eq!(make_var(&mk, "PKG_NAME").as_deref(), Some("ctrack"));
    let version = make_var(&mk, "PKG_VERSION").unwrap_or_default();
    assert_eq!(
        version,
        cargo_version(),
        "PKG_VERSION must equal Cargo.toml's"
    );
    assert!(
        apk_version_ok(&version),
        "PKG_VERSION {version:?} is not apk-valid"
    );
    let release = make_var(&mk, "PKG_RELEASE").unwrap_or_default();
    assert!(
        !release.is_empty() && release.bytes().all(|b| b.is_ascii_digit()),
        "PKG_RELEASE must be a plain integer for apk: {release:?}"
    );
    for var in ["PKG_LICENSE", "PKG_LICENSE_FILES", "PKG_MAINTAINER"] {
        assert!(make_var(&mk, var).is_some(), "Makefile lacks {var}");
    }
    assert_eq!(
        make_var(&mk, "PKG_BUILD_DEPENDS").as_deref(),
        Some("rust/host")
    );
    assert_has(
        "openwrt/ctrack/Makefile",
        &mk,
        &[
            "include $(TOPDIR)/rules.mk",
            "include $(INCLUDE_DIR)/package.mk",
            "lang/rust/rust-package.mk",
            "DEPENDS:=$(RUST_ARCH_DEPENDS) +kmod-nf-conntrack-netlink",
            "define Package/ctrack/conffiles\n/etc/config/ctrack\n",
            "define Package/ctrack/install",
            "$(PKG_INSTALL_DIR)/bin/ctrack $(1)/usr/sbin/ctrackd",
            "$(LN) ../sbin/ctrackd $(1)/usr/bin/ctrack",
            "/etc/init.d/ctrack",
            "/etc/config/ctrack",
            "config CTRACK_CONNTRACK_LINKS",
            "depends on !PACKAGE_conntrack && !PACKAGE_conntrackd",
            "$(call Build/Compile/Cargo,,--no-default-features)",
            "$(eval $(call RustBinPackage,ctrack))",
            "$(eval $(call BuildPackage,ctrack))",
        ],
    );
    // the conntrack names are an option, off by default
    let links = mk
        .split("config CTRACK_CONNTRACK_LINKS")
        .nth(1)
        .unwrap_or("");
    let links = links.split("config ").next().unwrap_or(links);
    assert!(links.contains("default n"), "{links}");
    defines_are_tab_indented(
        "openwrt/ctrack/Makefile",
        &mk,
        &[
            "Package/ctrack",
            "Package/ctrack/description",
            "Package/ctrack/config",
            "Package/ctrack/conffiles",
        ],
    );
    for p in source_paths(&mk, "$(PKG_BUILD_DIR)/") {
        let optional = p.ends_with(".hotplug") || p.ends_with(".keepalived");
        assert!(
            optional || root().join(&p).is_file(),
            "the OpenWrt package installs {p}, missing"
        );
    }
    for f in make_var(&mk, "PKG_LICENSE_FILES")
        .unwrap_or_default()
        .split_whitespace()
    {
        assert!(root().join(f).is_file(), "license file {f} missing");
    }
}
