//! Packaging tests of the static binaries: ELF kind and CPU, the size
//! budget, aarch64 under qemu-user, and the i686 binary equal to the
//! x86_64 one on a live table (listings, events, ctrackd's cache).
//!
//! The static binaries come from `make static` (the Makefile's `integration`
//! target builds them before `cargo test`). Without them these tests fail
//! with CI=true and skip otherwise, saying which make target to run.

mod lab;
mod packaging;
mod support;

use lab::{Netns, RouterLab, addr, must, run, stderr, stdout};
use packaging::{AARCH64, I686, X86_64, daemon_built, daemon_conf, have, need, root, static_bin};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::TempDir;
use support::flowline::{ACTIVE_SINCE, PROGNAME};

/// The size budget of the x86_64 static binary with every feature.
const SIZE_BUDGET: u64 = 1024 * 1024;

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
fn same_output(x86: &Path, i686: &Path, ns: &Netns, args: &[&str]) {
    let mut last = String::new();
    for _ in 0..10 {
        let a = run(Command::new(x86).arg("--netns").arg(&ns.name).args(args));
        let b = run(Command::new(i686).arg("--netns").arg(&ns.name).args(args));
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
fn marker(bin: &Path, ns: &Netns, port: &str, create: bool) {
    let mut c = Command::new(bin);
    c.arg("--netns").arg(&ns.name);
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

#[test]
fn i686_binary_equals_x86_64_on_a_live_table() {
    if !lab::can_run() {
        return;
    }
    let (Some(x86), Some(i686)) = (static_bin(X86_64), static_bin(I686)) else {
        return;
    };
    let lab = RouterLab::new("i686");
    let ns = &lab.router;

    // events: both listen, then the same traffic, then both must have seen
    // the same lines between a start and an end marker
    let tmp = TempDir::new("i686ev");
    let out_x = tmp.join("x86_64.out");
    let out_i = tmp.join("i686.out");
    let listen = |bin: &Path, out: &Path| {
        Command::new(bin)
            .arg("--netns")
            .arg(&ns.name)
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
        marker(&x86, ns, "1", false);
        marker(&x86, ns, "1", true);
        std::thread::sleep(Duration::from_millis(100));
        file_has(&out_x, "sport=1 ") && file_has(&out_i, "sport=1 ")
    });
    assert!(started, "the event listeners saw no start marker");
    marker(&x86, ns, "1", false);
    std::thread::sleep(Duration::from_millis(100));
    let skip_x = fs::read(&out_x).map(|b| b.len()).unwrap_or(0);
    let skip_i = fs::read(&out_i).map(|b| b.len()).unwrap_or(0);

    lab.ping(addr::SERVER);
    lab.ping(addr::SERVER6);
    lab.tcp(addr::SERVER, 8080);
    lab.udp(addr::SERVER, 5353);
    lab.udp(addr::SERVER6, 5353);
    marker(&x86, ns, "2", true);
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
    let without_progname = |ev: &str| {
        ev.lines()
            .map(|l| PROGNAME.apply(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
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
        same_output(&x86, &i686, ns, args);
    }
    let listed = run(Command::new(&x86).args(["--netns", &ns.name, "-L"]));
    assert!(stdout(&listed).lines().count() >= 4, "{}", stdout(&listed));

    // the daemon's internal cache, once the daemon exists
    if daemon_built(&x86) {
        let a = daemon_dump(&lab, &x86, "x86_64");
        let b = daemon_dump(&lab, &i686, "i686");
        assert_eq!(a, b, "ctrackd -i: i686 and x86_64 differ");
    }
}

/// Starts `bin` as ctrackd in the lab router, returns its sorted `-i`.
fn daemon_dump(lab: &RouterLab, bin: &Path, tag: &str) -> Vec<String> {
    let dir = TempDir::new(&format!("ctrackd-{tag}"));
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
        .map(|l| ACTIVE_SINCE.apply(l))
        .collect();
    lines.sort();
    lines
}
