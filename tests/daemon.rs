//! ctrackd in the namespace lab: its internal cache against the kernel
//! table through NEW/UPDATE/DESTROY, filters, overruns, reload, single
//! instance, clean shutdown, client errors and syslog reconnects.

mod daemon_common;
mod lab;
mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_common::{Daemon, config_text};
use lab::{Netns, RouterLab, addr, stdout, wait_until};
use support::TempDir;
use support::flowline::IDENTITY;

fn kernel_set(ns: &Netns) -> BTreeSet<String> {
    stdout(&ns.conntrack(&["-L"]))
        .lines()
        .map(|l| IDENTITY.apply(l))
        .collect()
}

fn cache_set(d: &Daemon) -> BTreeSet<String> {
    let o = d.client(&["-i"]);
    assert!(o.status.success(), "{}", lab::stderr(&o));
    stdout(&o).lines().map(|l| IDENTITY.apply(l)).collect()
}

fn wait_equal(d: &Daemon, ns: &Netns) {
    let ok = wait_until(Duration::from_secs(10), || cache_set(d) == kernel_set(ns));
    assert!(
        ok,
        "cache differs from the kernel table\ncache:  {:#?}\nkernel: {:#?}\nlog:\n{}",
        cache_set(d),
        kernel_set(ns),
        d.log()
    );
}

/// Gives every entry a long timeout, so none expires mid-test (an expired
/// entry leaves dumps at once but its DESTROY event waits for the
/// kernel's garbage collector).
fn keep_alive(ns: &Netns) {
    for f in ["ipv4", "ipv6"] {
        ns.run(&["conntrack", "-U", "-f", f, "-t", "3600"]);
    }
}

/// Creates `proto` flow `src`:10 -> 2.2.2.2:20 with conntrack, 300 s to
/// live (TCP ones ESTABLISHED).
fn insert_flow(ns: &Netns, proto: &str, src: &str) {
    let mut argv = vec![
        "conntrack",
        "-I",
        "-p",
        proto,
        "-s",
        src,
        "-d",
        "2.2.2.2",
        "--sport",
        "10",
        "--dport",
        "20",
        "-t",
        "300",
    ];
    if proto == "tcp" {
        argv.extend(["--state", "ESTABLISHED"]);
    }
    ns.must(&argv);
}

#[test]
fn cache_follows_the_kernel_table() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("dcache");
    // before the daemon: found by the startup dump. With the kernel's
    // default nf_conntrack_events=2 a flow created while nobody listens
    // never sends events, so its end is caught by the periodic resync.
    lab.ping(addr::SERVER);
    keep_alive(&lab.router);
    let d = Daemon::start(&lab.router, "cache", "  ResyncInterval 1");
    wait_equal(&d, &lab.router);
    // NEW
    lab.ping(addr::SERVER6);
    lab.tcp(addr::SERVER, 8081);
    lab.udp(addr::SERVER, 5353);
    insert_flow(&lab.router, "tcp", "1.1.1.1");
    wait_equal(&d, &lab.router);
    // UPDATE: state and mark change
    lab.router.must(&[
        "conntrack",
        "-U",
        "-f",
        "ipv4",
        "-p",
        "tcp",
        "-s",
        "1.1.1.1",
        "-m",
        "5",
    ]);
    let marked = wait_until(Duration::from_secs(5), || {
        stdout(&d.client(&["-i"])).contains("src=1.1.1.1 dst=2.2.2.2 sport=10 dport=20")
            && stdout(&d.client(&["-i"])).contains("mark=5")
    });
    assert!(marked, "{}", stdout(&d.client(&["-i"])));
    // DESTROY
    lab.router.must(&["conntrack", "-D", "-s", "1.1.1.1"]);
    wait_equal(&d, &lab.router);
    lab.router.must(&["conntrack", "-F"]);
    wait_equal(&d, &lab.router);
    assert!(cache_set(&d).is_empty());

    // the counters add up: created - destroyed = active
    let s = stdout(&d.client(&["-s"]));
    let num = |label: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or_else(|| panic!("no `{label}' in {s}"))
    };
    let active = num("current active connections:");
    let created = num("connections created:");
    let destroyed = num("connections destroyed:");
    assert_eq!(active, 0);
    assert_eq!(created, destroyed, "{s}");
    assert!(created >= 5, "{s}");
    let rt = stdout(&d.client(&["-s", "runtime"]));
    assert!(
        rt.contains("daemon uptime:") && rt.contains("events received:"),
        "{rt}"
    );
    // JSON and XML dumps of the cache parse
    lab.router.must(&[
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        "3.3.3.3",
        "-d",
        "4.4.4.4",
        "--sport",
        "1",
        "--dport",
        "2",
        "-t",
        "300",
    ]);
    wait_equal(&d, &lab.router);
    let j = stdout(&d.client(&["-i", "ct", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(j.lines().next().unwrap()).unwrap();
    assert_eq!(v["orig"]["src"], "3.3.3.3");
    let x = stdout(&d.client(&["-i", "-x"]));
    assert!(
        x.starts_with("<?xml") && x.contains("<src>3.3.3.3</src>"),
        "{x}"
    );
}

#[test]
fn filter_keeps_only_what_it_accepts() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("dfilt");
    let d = Daemon::start(
        &ns,
        "filter",
        "  Filter {\n    Protocol Accept { TCP }\n    Address Ignore { IPv4_address 10.66.0.0/16 }\n  }",
    );
    insert_flow(&ns, "tcp", "1.1.1.1");
    insert_flow(&ns, "tcp", "10.66.1.1");
    insert_flow(&ns, "udp", "1.1.1.2");
    let ok = wait_until(Duration::from_secs(5), || {
        let c = cache_set(&d);
        c.len() == 1 && c.iter().next().unwrap().contains("src=1.1.1.1")
    });
    assert!(ok, "{:#?}", cache_set(&d));
    let rt = stdout(&d.client(&["-s", "runtime"]));
    assert!(
        rt.contains("events filtered:\t                   2"),
        "{rt}"
    );
}

#[test]
fn overrun_ends_with_a_resync_equal_to_the_kernel() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("dburst");
    let d = Daemon::start(
        &ns,
        "burst",
        "  NetlinkBufferSize 8192\n  NetlinkBufferSizeMaxGrowth 16384\n  NetlinkOverrunResync 1",
    );
    // a burst far beyond 16 KiB of events
    let mut lines = String::new();
    for i in 0..6000u32 {
        lines.push_str(&format!(
            "-I -p udp -s 10.{}.{}.{} -d 10.200.0.1 --sport 1000 --dport 53 -t 600\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    let file = d.dir.join("burst.txt");
    std::fs::write(&file, lines).unwrap();
    ns.must(&["conntrack", "-R", file.to_str().unwrap()]);
    let ok = wait_until(Duration::from_secs(20), || {
        stdout(&d.client(&["-s"])).contains("current active connections:\t        6000")
    });
    assert!(ok, "{}\n{}", stdout(&d.client(&["-s"])), d.log());
    let rt = stdout(&d.client(&["-s", "runtime"]));
    let overruns: u64 = rt
        .lines()
        .find(|l| l.contains("netlink overrun:"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap();
    assert!(
        overruns > 0,
        "the burst should overrun a 16 KiB buffer: {rt}"
    );
    assert!(
        d.log()
            .contains("resync with kernel table (after netlink overrun)"),
        "{}",
        d.log()
    );
    wait_equal(&d, &ns);
    // -R forces the same resync on request
    assert!(d.client(&["-R"]).status.success());
    assert!(d.log().contains("resync with kernel table (requested)"));
}

#[test]
fn reload_good_and_bad_config() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("dhup");
    let mut d = Daemon::start(&ns, "hup", "");
    insert_flow(&ns, "tcp", "1.1.1.1");
    insert_flow(&ns, "udp", "1.1.1.2");
    wait_equal(&d, &ns);
    // a good new config: only TCP, and a second log file
    let good = config_text(&d.dir, "  Filter { Protocol Accept { TCP } }", "");
    std::fs::write(d.conf(), good).unwrap();
    d.signal("-HUP");
    let ok = wait_until(Duration::from_secs(5), || cache_set(&d).len() == 1);
    assert!(ok, "{:#?}\n{}", cache_set(&d), d.log());
    assert!(d.log().contains("configuration reloaded"));
    // a bad one: logged, the old one kept
    std::fs::write(d.conf(), "General {\n  Bogus 1\n}\n").unwrap();
    d.signal("-HUP");
    let logged = wait_until(Duration::from_secs(5), || {
        d.log()
            .contains("reload failed, keeping the old configuration")
    });
    assert!(logged, "{}", d.log());
    assert!(d.log().contains("unknown key `Bogus' in General"));
    // SIGUSR1 writes the statistics to the log
    d.signal("-USR1");
    let logged = wait_until(Duration::from_secs(5), || d.log().contains("stats: {"));
    assert!(logged, "{}", d.log());
    // the daemon still answers (at the old socket path: restore the file)
    std::fs::write(d.conf(), config_text(&d.dir, "", "")).unwrap();
    assert_eq!(cache_set(&d).len(), 1);
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!d.dir.join("ctl").exists(), "socket left behind");
    assert!(!d.dir.join("lock").exists(), "lock file left behind");
}

#[test]
fn single_instance_kill_and_client_errors() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("dlock");
    let mut d = Daemon::start(&ns, "lock", "");
    let second = ns.run(&[
        lab::ctrack_bin().to_str().unwrap(),
        "daemon",
        "-C",
        d.conf().to_str().unwrap(),
    ]);
    assert_eq!(second.status.code(), Some(1));
    let err = lab::stderr(&second);
    assert!(err.contains("another ctrackd is running (pid"), "{err}");
    // commands that need sync fail with a reason and a non-zero exit
    let c = d.client(&["-c"]);
    assert_eq!(c.status.code(), Some(1));
    assert!(
        lab::stderr(&c).contains("needs sync"),
        "{}",
        lab::stderr(&c)
    );
    let k = d.client(&["-k"]);
    assert!(k.status.success());
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!d.dir.join("ctl").exists() && !d.dir.join("lock").exists());
    let none = d.client(&["-s"]);
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(
        lab::stderr(&none).trim(),
        format!(
            "ctrackd is not running (no socket at {})",
            d.dir.join("ctl").display()
        )
    );
    // bad flags and bad configs: one line, exit 1, nothing started
    let bad = lab::run(Command::new(lab::ctrack_bin()).args(["daemon", "-Z"]));
    assert_eq!(bad.status.code(), Some(1));
    assert!(lab::stderr(&bad).starts_with("ctrackd: unknown option `-Z'"));
    std::fs::write(d.conf(), "General {\n HashSize -3\n}\n").unwrap();
    let badconf = ns.run(&[
        lab::ctrack_bin().to_str().unwrap(),
        "daemon",
        "-C",
        d.conf().to_str().unwrap(),
    ]);
    assert_eq!(badconf.status.code(), Some(1));
    assert!(
        lab::stderr(&badconf).contains("ctrackd.conf:2: bad value `-3' for `HashSize'"),
        "{}",
        lab::stderr(&badconf)
    );
    // a client command with that config names the parse error too, as
    // conntrackd's does, not a missing socket
    let client = d.client(&["-s"]);
    assert_eq!(client.status.code(), Some(1));
    assert_eq!(
        lab::stderr(&client).trim(),
        format!(
            "ctrackd: {}:2: bad value `-3' for `HashSize': expected a number from 1 to 16777216",
            d.conf().display()
        )
    );
}

/// Sends raw bytes to the control socket and reads the answer.
fn raw_request(ctl: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(ctl).unwrap();
    let _ = s.write_all(bytes);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn control_socket_runs_only_whole_requests_and_serves_past_idle_clients() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("dctl");
    let mut d = Daemon::start(&ns, "ctl", "");
    let ctl = d.dir.join("ctl");
    // `kill', 252 spaces and garbage: refused, the daemon stays
    let mut attack = b"kill".to_vec();
    attack.resize(256, b' ');
    attack.extend_from_slice(b"garbage");
    assert_eq!(
        raw_request(&ctl, &attack),
        "ERR request too long (at most 256 bytes)\n"
    );
    // a flush with padding and garbage on its line is no flush
    insert_flow(&ns, "udp", "1.1.1.1");
    wait_equal(&d, &ns);
    let mut flush = b"flush internal".to_vec();
    flush.resize(100, b' ');
    flush.extend_from_slice(b"garbage\n");
    assert!(raw_request(&ctl, &flush).starts_with("ERR unknown request"));
    assert_eq!(cache_set(&d).len(), 1, "the cache was flushed");
    // over-long: an answer, not a reset
    assert_eq!(
        raw_request(&ctl, &[b'x'; 1 << 20]),
        "ERR request too long (at most 256 bytes)\n"
    );
    // a request cut short
    let mut cut = UnixStream::connect(&ctl).unwrap();
    cut.write_all(b"kill").unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    cut.read_to_string(&mut out).unwrap();
    assert_eq!(out, "ERR incomplete request (no newline)\n");
    // ten idle clients do not delay -s
    let idle: Vec<UnixStream> = (0..10)
        .map(|_| UnixStream::connect(&ctl).unwrap())
        .collect();
    let t = std::time::Instant::now();
    let o = d.client(&["-s"]);
    assert!(o.status.success(), "{}", lab::stderr(&o));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "-s took {:?}",
        t.elapsed()
    );
    drop(idle);
    // what was refused is counted
    let runtime = stdout(&d.client(&["-s", "runtime"]));
    let count = |label: &str| -> u64 {
        runtime
            .lines()
            .find(|l| l.contains(label))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("local read failed:") >= 3, "{runtime}");
    assert_eq!(count("local unknown request:"), 1, "{runtime}");
    // and the daemon still runs until a real kill
    assert!(d.client(&["-k"]).status.success());
    assert_eq!(d.wait_exit(), Some(0));
}

/// A syslog listener on a datagram socket, as syslogd on /dev/log.
struct SyslogListener {
    path: PathBuf,
    sock: UnixDatagram,
}

impl SyslogListener {
    fn bind(path: &Path) -> SyslogListener {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        SyslogListener {
            path: path.to_path_buf(),
            sock,
        }
    }

    fn wait_for(&self, needle: &str) -> Option<String> {
        let mut buf = [0u8; 4096];
        for _ in 0..50 {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if m.contains(needle) {
                    return Some(m);
                }
            }
        }
        None
    }
}

#[test]
fn syslog_survives_a_syslogd_restart() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("dsys");
    let dir = TempDir::new("syslog-sock");
    let sock = dir.join("devlog");
    let listener = SyslogListener::bind(&sock);
    let d = Daemon::start(
        &ns,
        "syslog",
        &format!("  Syslog local4\n  SyslogSocket {}", sock.display()),
    );
    let m = listener
        .wait_for("ready:")
        .expect("the start message reaches syslog");
    // RFC 3164: <PRI> with facility local4 (20*8) + notice (5) = 165
    assert!(m.starts_with("<165>"), "{m}");
    assert!(m.contains("ctrackd["), "{m}");
    // syslogd restarts: its socket goes away and comes back
    drop(listener);
    let _ = std::fs::remove_file(&sock);
    let listener = SyslogListener::bind(&sock);
    assert!(d.client(&["-R"]).status.success());
    let m = listener
        .wait_for("resync with kernel table (requested)")
        .expect("the next message arrives after the restart");
    assert!(m.contains("ctrackd["), "{m}");
    let _ = &listener.path;
}

#[test]
fn daemonizes_with_a_pid_file() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("dfork");
    let dir = TempDir::new("fork");
    let conf = dir.join("ctrackd.conf");
    std::fs::write(
        &conf,
        config_text(
            &dir,
            &format!("  PidFile {}", dir.join("pid").display()),
            "",
        ),
    )
    .unwrap();
    // -d returns at once; the daemon lives on in the background
    let o = ns.run(&[
        lab::ctrack_bin().to_str().unwrap(),
        "daemon",
        "-d",
        "-C",
        conf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", lab::stderr(&o));
    let up = wait_until(Duration::from_secs(10), || {
        dir.join("pid").exists() && dir.join("ctl").exists()
    });
    assert!(up);
    let pid: u32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let client = |a: &str| {
        lab::run(Command::new(lab::ctrack_bin()).args(["daemon", "-C", conf.to_str().unwrap(), a]))
    };
    assert!(client("-s").status.success());
    assert!(client("-k").status.success());
    let gone = wait_until(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "daemon still running");
    assert!(!dir.join("pid").exists() && !dir.join("ctl").exists() && !dir.join("lock").exists());
}
