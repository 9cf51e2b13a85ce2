//! Stats mode and the `-s` family side by side with Debian's conntrackd
//! 1.4.7: both daemons run in one namespace, see the same kernel events,
//! and must answer the same (`-s`, its sections, `-i`) and log the same
//! line for every destroyed flow. Also ctrackd's own additions: the JSON
//! lines, reopening the log on SIGHUP (logrotate) and syslog.

mod daemon_common;
mod lab;
mod support;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use daemon_common::Daemon;
use lab::{Netns, stdout, wait_until};
use support::TempDir;

/// Debian's conntrackd in Stats mode (stopped on drop).
struct StatsConntrackd<'a> {
    ns: &'a Netns,
    conf: PathBuf,
    log: PathBuf,
    stats_log: PathBuf,
}

impl<'a> StatsConntrackd<'a> {
    fn start(ns: &'a Netns, dir: &Path) -> Self {
        let conf = dir.join("conntrackd.conf");
        let log = dir.join("conntrackd.log");
        let stats_log = dir.join("conntrackd-stats.log");
        std::fs::write(
            &conf,
            format!(
                "Stats {{\n\tLogFile {}\n}}\nGeneral {{\n\tSystemd off\n\tHashSize 8192\n\tHashLimit 65535\n\
                 \tLogFile {}\n\tSyslog off\n\tLockFile {}\n\tUNIX {{ Path {} }}\n\
                 \tNetlinkBufferSize 2097152\n\tNetlinkBufferSizeMaxGrowth 8388608\n}}\n",
                stats_log.display(),
                log.display(),
                dir.join("conntrackd.lock").display(),
                dir.join("conntrackd.ctl").display(),
            ),
        )
        .unwrap();
        let c = StatsConntrackd {
            ns,
            conf,
            log,
            stats_log,
        };
        let o = c.run(&["-d"]);
        assert!(o.status.success(), "conntrackd: {}", lab::stderr(&o));
        assert!(
            wait_until(Duration::from_secs(5), || c.run(&["-s"]).status.success()),
            "conntrackd not answering: {}",
            std::fs::read_to_string(&c.log).unwrap_or_default()
        );
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let conf = self.conf.display().to_string();
        let mut argv = vec!["conntrackd", "-C", conf.as_str()];
        argv.extend_from_slice(args);
        self.ns.run(&argv)
    }
}

impl Drop for StatsConntrackd<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["-k"]);
    }
}

fn stats_block(log: &Path, extra: &str) -> String {
    format!("Stats {{\n  LogFile {}\n{extra}\n}}\n", log.display())
}

/// The flows of a stats log: each line without its time.
fn logged(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (when, flow) = l.split_once('\t').unwrap_or_else(|| panic!("no tab: {l}"));
            // ctime: "Thu Dec  3 08:20:16 2026"
            assert_eq!(when.len(), 24, "{l}");
            flow.to_string()
        })
        .collect()
}

/// `-i` lines without the seconds of `[active since Ns]`.
fn cache_lines(o: &Output) -> BTreeSet<String> {
    assert!(o.status.success(), "{}", lab::stderr(o));
    stdout(o)
        .lines()
        .map(|l| l.split(" [active since").next().unwrap_or(l).to_string())
        .collect()
}

/// Flows with counters, a mark, a zone, IPv6 and ICMPv6.
fn make_flows(ns: &Netns) {
    for args in [
        &[
            "-I",
            "-s",
            "192.0.2.1",
            "-d",
            "198.51.100.1",
            "-p",
            "tcp",
            "--sport",
            "1000",
            "--dport",
            "80",
            "--state",
            "ESTABLISHED",
            "-t",
            "300",
            "-u",
            "SEEN_REPLY,ASSURED",
            "-m",
            "5",
        ][..],
        &[
            "-I",
            "-s",
            "192.0.2.2",
            "-d",
            "198.51.100.2",
            "-p",
            "udp",
            "--sport",
            "1000",
            "--dport",
            "53",
            "-t",
            "300",
            "-w",
            "3",
        ],
        &[
            "-I",
            "-s",
            "2001:db8::1",
            "-d",
            "2001:db8::2",
            "-p",
            "icmpv6",
            "--icmpv6-type",
            "128",
            "--icmpv6-code",
            "0",
            "--icmpv6-id",
            "7",
            "-t",
            "300",
        ],
    ] {
        ns.must(&[&["conntrack"][..], args].concat());
    }
}

/// Real traffic, so the destroyed flows carry non-zero counters (a rule
/// that uses conntrack makes the namespace track packets).
fn ping_flow(ns: &Netns) {
    ns.nft("table inet t {\n chain out { type filter hook output priority 0; ct state new counter; }\n}\n");
    ns.must(&["ip", "link", "set", "lo", "up"]);
    ns.must(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "127.0.0.1"]);
}

#[test]
fn stats_mode_answers_and_logs_as_conntrackd_does() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("stm");
    ns.sysctl(&[
        "net.netfilter.nf_conntrack_acct=1",
        "net.netfilter.nf_conntrack_timestamp=1",
    ]);
    let dir = TempDir::new("stats-mode");
    let cd = StatsConntrackd::start(&ns, &dir);
    let ours = Daemon::start_with(
        &ns,
        "stm",
        "",
        &stats_block(&dir.join("ctrackd-stats.log"), ""),
    );
    let ctx = || {
        format!(
            "--- ctrackd log:\n{}\n--- conntrackd log:\n{}",
            ours.log(),
            std::fs::read_to_string(&cd.log).unwrap_or_default()
        )
    };
    make_flows(&ns);
    ping_flow(&ns);
    // -s: the same text once both caches hold the flows
    let same_s = || {
        let (a, b) = (ours.client(&["-s"]), cd.run(&["-s"]));
        a.status.success() && b.status.success() && stdout(&a) == stdout(&b)
    };
    assert!(
        wait_until(Duration::from_secs(10), || same_s()
            && stdout(&ours.client(&["-s"]))
                .contains("current active connections:\t           4")),
        "-s differs:\n{}\n{}\n{}",
        stdout(&ours.client(&["-s"])),
        stdout(&cd.run(&["-s"])),
        ctx()
    );
    assert!(stdout(&ours.client(&["-s"])).starts_with("cache stats:\n"));
    assert_eq!(
        cache_lines(&ours.client(&["-i"])),
        cache_lines(&cd.run(&["-i"]))
    );
    // the sections conntrackd answers with nothing, exit 0: so does ctrackd
    for section in ["network", "queue", "expect", "link", "rsqueue", "process"] {
        let (a, b) = (ours.client(&["-s", section]), cd.run(&["-s", section]));
        assert_eq!(b.status.code(), Some(0), "conntrackd -s {section}");
        assert_eq!(
            a.status.code(),
            Some(0),
            "-s {section}: {}",
            lab::stderr(&a)
        );
        assert_eq!(stdout(&a), stdout(&b), "-s {section}");
        assert_eq!(stdout(&a), "", "-s {section}");
    }
    // -s cache: conntrackd's lines (ctrackd adds the memory it uses)
    let ours_cache = stdout(&ours.client(&["-s", "cache"]));
    let theirs_cache = stdout(&cd.run(&["-s", "cache"]));
    let without_memory: String = ours_cache
        .lines()
        .filter(|l| !l.contains("memory (bytes)"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(without_memory, theirs_cache);
    assert!(ours_cache.starts_with("cache:stats\t"), "{ours_cache}");
    // the external cache conntrackd does not have in Stats mode: empty
    let e = ours.client(&["-e"]);
    assert!(e.status.success() && stdout(&e).is_empty());

    // every flow destroyed: one line each, the same in both logs
    ns.must(&["conntrack", "-F"]);
    let ours_log = dir.join("ctrackd-stats.log");
    let ok = wait_until(Duration::from_secs(10), || {
        logged(&ours_log).len() == 4 && logged(&cd.stats_log).len() == 4
    });
    assert!(
        ok,
        "ours: {:#?}\ntheirs: {:#?}\n{}",
        logged(&ours_log),
        logged(&cd.stats_log),
        ctx()
    );
    assert_eq!(logged(&ours_log), logged(&cd.stats_log), "{}", ctx());
    let lines = logged(&ours_log);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("icmp     1 ") && !l.contains("packets=0 ")),
        "the ping's counters: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("mark=5")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("zone=3")), "{lines:#?}");
    // and -s after the destroys: traffic processed and destroyed counts
    assert!(
        wait_until(Duration::from_secs(5), same_s),
        "-s after destroys:\n{}\n{}",
        stdout(&ours.client(&["-s"])),
        stdout(&cd.run(&["-s"]))
    );
}

#[test]
fn stats_log_reopens_on_sighup_and_writes_json_and_syslog() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("stj");
    ns.sysctl(&["net.netfilter.nf_conntrack_acct=1"]);
    let dir = TempDir::new("stats-json");
    let log = dir.join("stats.json");
    let devlog = dir.join("devlog");
    let _ = std::fs::remove_file(&devlog);
    let syslog = UnixDatagram::bind(&devlog).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let d = Daemon::start_with(
        &ns,
        "stj",
        &format!("  SyslogSocket {}", devlog.display()),
        &stats_block(
            &log,
            "  LogFormat json\n  Syslog local1\n  NetlinkEventsReliable on",
        ),
    );
    let destroy = |sport: &str| {
        ns.must(&[
            "conntrack",
            "-I",
            "-s",
            "192.0.2.9",
            "-d",
            "198.51.100.9",
            "-p",
            "udp",
            "--sport",
            sport,
            "--dport",
            "53",
            "-t",
            "300",
        ]);
        // the cache has it before it goes
        assert!(wait_until(Duration::from_secs(5), || stdout(
            &d.client(&["-i"])
        )
        .contains(&format!("sport={sport} "))));
        ns.must(&["conntrack", "-D", "-p", "udp", "--sport", sport]);
    };
    let lines = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    destroy("1001");
    assert!(
        wait_until(Duration::from_secs(5), || lines(&log).len() == 1),
        "{}",
        d.log()
    );
    let v = &lines(&log)[0];
    assert_eq!(v["event"], "destroy");
    assert_eq!(v["orig"]["sport"], 1001);
    assert!(v["time"].as_i64().unwrap() > 1_600_000_000);
    // syslog: the flow at local1.info (17*8 + 6 = 142)
    let mut buf = [0u8; 2048];
    let got = (0..25).find_map(|_| {
        let n = syslog.recv(&mut buf).ok()?;
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        m.contains("\"sport\":1001").then_some(m)
    });
    let m = got.expect("the flow reaches syslog");
    assert!(m.starts_with("<142>"), "{m}");
    // logrotate: move the file away, SIGHUP, the next flow goes to a new one
    let rotated = dir.join("stats.json.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.signal("-HUP");
    assert!(
        wait_until(Duration::from_secs(5), || log.exists()),
        "{}",
        d.log()
    );
    destroy("1002");
    assert!(
        wait_until(Duration::from_secs(5), || lines(&log).len() == 1),
        "{}",
        d.log()
    );
    assert_eq!(lines(&log)[0]["orig"]["sport"], 1002);
    assert_eq!(lines(&rotated).len(), 1);
}
