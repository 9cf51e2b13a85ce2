//! Differential tests of the expectation table: `ctrack` against Debian's
//! `conntrack` 1.4.7 on the same live kernel table, in an FTP lab
//! (tests/ftplab): real FTP control sessions through a NAT router with
//! the `ftp` helper make the kernel's expectations (PASV and PORT, IPv4
//! and IPv6), held open while both tools list them; completed and held
//! transfers make RELATED flows with their master. stdout, stderr and the
//! exit code must be identical for `-L/-G/-C/-S expect` in every format,
//! for `-I/-D/-F expect` (each tool on an equivalent table, compared with
//! the table it leaves), for `-E expect` and `-E` while FTP runs, and for
//! the command-line errors and `-R` lines. Where ctrack deliberately
//! differs (README: `-I expect` with a TCP tuple port, `-E expect -e`,
//! `-o json`), the test asserts ctrack's documented behaviour.

mod diff;
mod ftplab;
mod lab;
mod support;

use std::time::Duration;

use diff::{Diffs, Run, argv, conntrack, ctrack};
use ftplab::{FtpLab, HELD_PORT, Hold, Session};
use lab::{Netns, addr};
use support::flowline::{EVENTS, EXPECT_RUNS, RUNS};

/// The listing formats conntrack has for expectations (all but `xml` and
/// `timestamp` print the default line).
const FORMATS: &[&str] = &[
    "",
    "-o xml",
    "-o timestamp",
    "-o xml,timestamp",
    "-o extended",
    "-o id",
    "-o extended,id",
    "-o save",
    "-o ktimestamp",
    "-o labels",
    "-o userspace",
    "--output xml",
];

/// Both tools with the expectation masks (timeouts, stamps).
fn same(d: &mut Diffs, ns: &Netns, args: &[&str]) {
    d.same_with(ns, args, |l| EXPECT_RUNS.apply(l));
}

/// The expectation lines of the router's table (IPv4 or IPv6), as
/// conntrack prints them.
fn expectations(ns: &Netns, family: &str) -> Vec<String> {
    let o = ns.conntrack(&["-L", "expect", "-f", family]);
    lab::stdout(&o).lines().map(str::to_string).collect()
}

/// The value of `key=` in the expected-tuple part of an expectation line
/// (`dport=` is the expected port).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ').find_map(|w| w.strip_prefix(key))
}

/// The expected destination port of the one expectation whose master has
/// source port `sport`.
fn expected_port(ns: &Netns, family: &str, sport: u16) -> u16 {
    let want = format!(" sport={sport} ");
    expectations(ns, family)
        .iter()
        .find(|l| {
            l.split("master-src=")
                .nth(1)
                .is_some_and(|m| m.contains(&want))
        })
        .and_then(|l| field(l, "dport="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no expectation of master sport {sport}"))
}

/// A live table: held PASV and PORT sessions over IPv4 and IPv6, a held
/// transfer (an established RELATED flow), and completed transfers
/// (RELATED flows in TIME_WAIT).
fn populated(tag: &str) -> (FtpLab, Vec<Session>) {
    let ftp = FtpLab::new(tag);
    for (server, active) in [
        (addr::SERVER, false),
        (addr::SERVER, true),
        (addr::SERVER6, false),
        (addr::SERVER6, true),
    ] {
        assert_eq!(ftp.transfer(server, active), "hello\n", "{server} {active}");
    }
    let held = vec![
        ftp.hold(addr::SERVER, Hold::Passive),
        ftp.hold(addr::SERVER, Hold::Active),
        ftp.hold(addr::SERVER6, Hold::Passive),
        ftp.hold(addr::SERVER6, Hold::Active),
        ftp.hold(addr::SERVER, Hold::Transfer),
    ];
    (ftp, held)
}

#[test]
fn list_get_count_stats_match_conntrack() {
    if !ftplab::can_run() {
        return;
    }
    let (ftp, held) = populated("exl");
    let ns = &ftp.lab.router;
    let v4 = expectations(ns, "ipv4");
    let v6 = expectations(ns, "ipv6");
    assert_eq!(
        (v4.len(), v6.len()),
        (2, 2),
        "held expectations: {v4:?} {v6:?}"
    );
    assert!(
        v4.iter()
            .any(|l| l.contains(&format!("dport={HELD_PORT} "))),
        "the PORT expectation: {v4:?}"
    );
    let mut d = Diffs::default();
    for table in [
        "-L expect",
        "-L expect -f ipv4",
        "-L expect -f ipv6",
        "--dump expect",
        "-L exp",
    ] {
        for f in FORMATS {
            let mut a = argv(table);
            a.extend(argv(f));
            same(&mut d, ns, &a);
        }
    }
    for a in ["-C expect", "--count expect", "-C exp"] {
        same(&mut d, ns, &argv(a));
    }
    // -S expect: the same lines and names; the values move with traffic
    let shape = |l: &str| {
        l.split(['\t', ' '])
            .map(|t| match t.split_once('=') {
                Some((k, _)) if k != "cpu" => format!("{k}=N"),
                _ => t.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    d.same_with(ns, &["-S", "expect"], shape);
    // -G expect finds by the expected tuple (the master tuple misses)
    let passive = &held[0];
    let port = expected_port(ns, "ipv4", passive.sport);
    let port6 = expected_port(ns, "ipv6", held[2].sport);
    let c = addr::CLIENT;
    let s = addr::SERVER;
    for a in [
        format!(
            "-G expect -s {c} -d {s} -p tcp --sport 0 --dport {port} --reply-port-src 0 --reply-port-dst 0"
        ),
        format!(
            "-G expect -s {c} -d {s} -p tcp --sport 9 --dport {port} --reply-port-src 0 --reply-port-dst 0"
        ),
        format!(
            "-G expect -s {c} -d {s} -p tcp --sport {} --dport 21 --reply-port-src 21 --reply-port-dst 1",
            passive.sport
        ),
        format!(
            "-G expect -s {c} -d {s} -p tcp --sport 0 --dport 1 --reply-port-src 0 --reply-port-dst 0"
        ),
        format!(
            "--get expect -s {} -d {} -p tcp --sport 0 --dport {port6} --reply-port-src 0 --reply-port-dst 0",
            addr::CLIENT6,
            addr::SERVER6
        ),
        format!(
            "-G expect -s {} -d {} -p tcp --sport 0 --dport {HELD_PORT} --reply-port-src 0 --reply-port-dst 0",
            addr::SERVER,
            addr::ROUTER_WAN
        ),
    ] {
        same(&mut d, ns, &argv(&a));
    }
    // RELATED flows: conntrack prints no master; -u EXPECTED selects them
    for a in [
        "-L -u EXPECTED",
        "-L -u EXPECTED -o extended,id",
        "-L -u EXPECTED -o xml",
        "-L -u EXPECTED -o save",
        "-L -u EXPECTED -p tcp",
        "-L -u EXPECTED -f ipv6",
        "-L --status expected,ASSURED",
        "-L -p tcp --dport 21",
        "-L -p tcp --dport 21 -o xml",
    ] {
        let a = argv(a);
        if diff::dumped_per_family(&a) {
            d.compare(ns, &a, |l| RUNS.apply(l), diff::ipv4_first);
        } else {
            d.same_with(ns, &a, |l| RUNS.apply(l));
        }
    }
    let related = conntrack(ns, &argv("-L -u EXPECTED -f ipv4"));
    // passive and active transfers, and the held one
    d.check(related.out.lines().count() >= 3, || {
        format!("RELATED flows: {related:?}")
    });
    d.finish("expect listings");
    drop(held);
}

/// `-o json`: one object per expectation and per RELATED flow, with the
/// fields of conntrack's line; a RELATED flow's `master` is its control
/// connection.
#[test]
fn json_expectations_and_masters() {
    if !ftplab::can_run() {
        return;
    }
    let (ftp, held) = populated("exj");
    let ns = &ftp.lab.router;
    let mut d = Diffs::default();
    for fam in ["ipv4", "ipv6"] {
        let text = ctrack(ns, &["-L", "expect", "-f", fam]);
        let json = ctrack(ns, &["-L", "expect", "-f", fam, "-o", "json"]);
        d.check(json.code == 0 && json.err == text.err, || {
            format!("json -f {fam}: {json:?}")
        });
        let lines: Vec<&str> = text.out.lines().collect();
        let objs: Vec<serde_json::Value> = json
            .out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        d.check(lines.len() == objs.len() && lines.len() == 2, || {
            format!("{fam}: {lines:?} vs {objs:?}")
        });
        for (l, j) in lines.iter().zip(&objs) {
            // the three tuples of the line, in order
            let words: Vec<&str> = l.split(' ').collect();
            let vals = |key: &str| -> Vec<String> {
                words
                    .iter()
                    .filter_map(|w| w.split_once('=').filter(|(k, _)| k.ends_with(key)))
                    .map(|(_, v)| v.to_string())
                    .collect()
            };
            let (srcs, dsts, sports, dports) =
                (vals("src"), vals("dst"), vals("sport"), vals("dport"));
            for (i, t) in ["expected", "mask", "master"].iter().enumerate() {
                d.check(
                    j[t]["src"] == srcs[i].as_str()
                        && j[t]["dst"] == dsts[i].as_str()
                        && sports[i].parse::<u64>().is_ok_and(|p| j[t]["sport"] == p)
                        && dports[i].parse::<u64>().is_ok_and(|p| j[t]["dport"] == p),
                    || format!("{t} of {j} vs {l}"),
                );
            }
            d.check(
                j["layer4"] == "tcp"
                    && j["protonum"] == 6
                    && j["helper"] == "ftp"
                    && j["class"] == 0
                    && j["layer3"] == fam
                    && j.get("id").is_some(),
                || format!("{j} vs {l}"),
            );
        }
        // the PORT expectation behind NAT carries the NAT and its function
        if fam == "ipv4" {
            let nat = objs.iter().find(|j| j["expected"]["dport"] == HELD_PORT);
            d.check(
                // the client's own port, saved before NAT (no address: the
                // FTP helper keeps the master's)
                nat.is_some_and(|j| {
                    j["nat"]["dir"] == "reply"
                        && j["nat"]["tuple"]["sport"] == HELD_PORT
                        && j["expectfn"] == "nat-follow-master"
                        && j["flags"] == serde_json::json!([])
                }),
                || format!("NAT expectation: {nat:?}"),
            );
        }
    }
    // RELATED flows carry their master; control connections do not
    let masters: Vec<u16> = held.iter().map(|s| s.sport).collect();
    let related = ctrack(ns, &argv("-L -u EXPECTED -o json"));
    let flows: Vec<serde_json::Value> = related
        .out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    d.check(flows.len() >= 4, || format!("{related:?}"));
    for f in &flows {
        d.check(
            f["master"]["dport"] == 21 && f["status"][0] == "EXPECTED",
            || format!("RELATED flow without its master: {f}"),
        );
    }
    let held_transfer = flows
        .iter()
        .find(|f| f["state"] == "ESTABLISHED" && f["master"]["sport"] == masters[4]);
    d.check(held_transfer.is_some(), || {
        format!(
            "no established data connection of master {}: {flows:?}",
            masters[4]
        )
    });
    let control = ctrack(ns, &argv("-L -p tcp --dport 21 -o json"));
    d.check(
        control.out.lines().count() >= 5 && !control.out.contains("\"master\""),
        || format!("control connections: {control:?}"),
    );
    d.finish("json");
}

/// Makes a table for one run of a modifying command: its arguments, and
/// the sessions that must live until it ran.
type Setup<'a> = dyn Fn(&FtpLab) -> (Vec<String>, Vec<Session>) + 'a;

/// One modifying command, run by each tool on an equivalent table that
/// `setup` makes (it returns the command's arguments and what must live
/// as long as the run); compares the outputs and the expectation tables
/// left behind (IPv4 and IPv6), with `norm` applied to every line.
fn modify(
    d: &mut Diffs,
    ftp: &FtpLab,
    what: &str,
    setup: &Setup<'_>,
    norm: &dyn Fn(&str) -> String,
) -> (Run, Vec<String>) {
    let ns = &ftp.lab.router;
    let mut runs = Vec::new();
    for tool in [conntrack as fn(&Netns, &[&str]) -> Run, ctrack] {
        let _ = ns.conntrack(&["-F", "expect"]);
        let (args, sessions) = setup(ftp);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = tool(ns, &a);
        let mut tables = String::new();
        for fam in ["ipv4", "ipv6"] {
            tables += &lab::stdout(&ns.conntrack(&["-L", "expect", "-f", fam]));
        }
        drop(sessions);
        let norm_run = r.map(|l| norm(&EXPECT_RUNS.apply(l)));
        let norm_tables: Vec<String> = tables
            .lines()
            .map(|l| norm(&EXPECT_RUNS.apply(l)))
            .collect();
        runs.push((norm_run, norm_tables));
    }
    let (theirs, ours) = (&runs[0], &runs[1]);
    let mut diff = diff::describe(&[what], &ours.0, &theirs.0);
    if ours.1 != theirs.1 {
        diff = Some(format!(
            "{}  expectations after `{what}`:\n    ctrack:    {:?}\n    conntrack: {:?}\n",
            diff.unwrap_or_default(),
            ours.1,
            theirs.1
        ));
    }
    d.add(diff);
    runs.swap_remove(1)
}

/// An expectation line with its master's source port (a client's
/// ephemeral port, another one in each run) masked.
fn master_sport(l: &str) -> String {
    let Some(at) = l.find("master-dst=") else {
        return l.to_string();
    };
    let (head, tail) = l.split_at(at);
    let tail: Vec<String> = tail
        .split(' ')
        .map(|w| match w.strip_prefix("sport=") {
            Some(_) => "sport=M".to_string(),
            None => w.to_string(),
        })
        .collect();
    format!("{head}{}", tail.join(" "))
}

/// The arguments of `-I expect` for a master on `sport` (TCP to port 21,
/// or UDP to 69 with `udp`), expecting `tuple` with `extra` options.
fn create_args(family6: bool, udp: bool, sport: u16, tuple_dport: u16, extra: &str) -> Vec<String> {
    let (c, s) = if family6 {
        (addr::CLIENT6, addr::SERVER6)
    } else {
        (addr::CLIENT, addr::SERVER)
    };
    let full = if family6 {
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    } else {
        "255.255.255.255"
    };
    let (p, dport) = if udp { ("udp", 69) } else { ("tcp", 21) };
    let line = format!(
        "-I expect -s {c} -d {s} -p {p} --sport {sport} --dport {dport} --tuple-src {c} \
         --tuple-dst {s} --tuple-port-src 0 --tuple-port-dst {tuple_dport} --mask-src {full} \
         --mask-dst {full} --mask-port-src 0 --mask-port-dst 65535 -t 60 {extra}"
    );
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn modifying_expect_commands() {
    if !ftplab::can_run() {
        return;
    }
    let ftp = FtpLab::new("exm");
    let mut d = Diffs::default();
    let (c, s, c6, s6) = (addr::CLIENT, addr::SERVER, addr::CLIENT6, addr::SERVER6);
    // -D expect: a fresh PASV expectation per tool, deleted by its tuple
    // (1.4.7 counts nothing: "0 expectations have been shown.", exit 1)
    for v6 in [false, true] {
        let setup = |f: &FtpLab| {
            let (server, fam, cl) = if v6 { (s6, "ipv6", c6) } else { (s, "ipv4", c) };
            let keep = f.hold(addr::SERVER, Hold::Active);
            let sess = f.hold(server, Hold::Passive);
            let port = expected_port(&f.lab.router, fam, sess.sport);
            let args = format!(
                "-D expect -s {cl} -d {server} -p tcp --sport 0 --dport {port} --reply-port-src 0 --reply-port-dst 0"
            );
            (
                argv(&args).iter().map(|a| a.to_string()).collect(),
                vec![keep, sess],
            )
        };
        let (run, table) = modify(&mut d, &ftp, "-D expect", &setup, &master_sport);
        d.check(
            run.code == 1 && table.len() == 1 && table[0].contains(&format!("dport={HELD_PORT} ")),
            || format!("-D expect left {table:?}: {run:?}"),
        );
    }
    // -D expect of nothing
    let miss = |_: &FtpLab| {
        let a = format!(
            "--delete expect -s {c} -d {s} -p tcp --sport 0 --dport 1 --reply-port-src 0 --reply-port-dst 0"
        );
        (a.split(' ').map(str::to_string).collect(), Vec::new())
    };
    modify(&mut d, &ftp, "-D expect miss", &miss, &|l| l.to_string());
    // -F expect: both families go
    let flush = |f: &FtpLab| {
        let held = vec![
            f.hold(addr::SERVER, Hold::Passive),
            f.hold(addr::SERVER6, Hold::Passive),
            f.hold(addr::SERVER, Hold::Active),
        ];
        (vec!["-F".to_string(), "expect".to_string()], held)
    };
    let (run, table) = modify(&mut d, &ftp, "-F expect", &flush, &master_sport);
    d.check(run.code == 0 && table.is_empty(), || {
        format!("-F expect left {table:?}: {run:?}")
    });
    let flush_long = |f: &FtpLab| {
        let held = vec![f.hold(addr::SERVER, Hold::Passive)];
        (vec!["--flush".to_string(), "exp".to_string()], held)
    };
    modify(&mut d, &ftp, "--flush exp", &flush_long, &master_sport);

    // -I expect on masters with a helper and nothing expected yet (the
    // helpers allow one expectation per master: a new one replaces it)
    let idle = ftp.hold(addr::SERVER, Hold::Idle);
    let idle6 = ftp.hold(addr::SERVER6, Hold::Idle);
    let tftp = ftp.tftp_master(4069);
    let _ = ftp
        .lab
        .router
        .conntrack(&["-U", "-f", "ipv4", "-p", "udp", "-t", "3000"]);
    let (m4, m6) = (idle.sport, idle6.sport);
    // a TCP tuple port of 1536-1791 makes 1.4.7's protocol byte 6 (TCP):
    // the same expectation from both tools
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("-I expect tcp", create_args(false, false, m4, 1600, "")),
        ("-I expect tcp6", create_args(true, false, m6, 1700, "")),
        ("-I expect udp", create_args(false, true, tftp, 4069, "")),
        (
            "-I expect cidr tuple",
            // a --tuple-src prefix after --mask-src: the last one is the mask
            create_args(false, true, tftp, 5000, "--tuple-src 10.9.0.0/16"),
        ),
        (
            "-I expect no master",
            create_args(false, false, 1, 1600, ""),
        ),
        (
            "-I expect udp no master",
            create_args(false, true, 1, 1600, ""),
        ),
        (
            "--create expect -u",
            create_args(false, false, m4, 1601, "-u ASSURED -r 10.9.2.2 -q 10.9.1.2"),
        ),
    ];
    for (what, args) in cases {
        let a = args.clone();
        let setup = move |_: &FtpLab| (a.clone(), Vec::new());
        let (run, table) = modify(&mut d, &ftp, what, &setup, &master_sport);
        // what the cases must do, so that "equal" is not "both failed"
        let made = table.len() == 1 && table[0].contains(" proto=");
        let want_made = !what.contains("no master");
        d.check(made == want_made && (run.code == 0) == want_made, || {
            format!("{what}: {run:?} {table:?}")
        });
    }
    // a master without a helper: the kernel refuses
    ftp.lab.router.must(&argv(
        "conntrack -I -s 10.9.1.77 -d 10.9.2.2 -p tcp --sport 1000 --dport 21 --state ESTABLISHED -t 3000",
    ));
    let no_helper = |_: &FtpLab| {
        (
            create_args(false, false, 1000, 1600, "")
                .into_iter()
                .map(|a| {
                    if a == addr::CLIENT {
                        "10.9.1.77".into()
                    } else {
                        a
                    }
                })
                .collect(),
            Vec::new(),
        )
    };
    modify(&mut d, &ftp, "-I expect no helper", &no_helper, &|l| {
        l.to_string()
    });
    // a TCP tuple port outside 1536-1791: 1.4.7 puts its high byte in the
    // protocol (5000 = 0x1388: protocol 19, no ports); ctrack the TCP of -p
    let ns = &ftp.lab.router;
    let args = create_args(false, false, m4, 5000, "");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let _ = ns.conntrack(&["-F", "expect"]);
    let theirs = conntrack(ns, &a);
    let their_table = expectations(ns, "ipv4");
    let _ = ns.conntrack(&["-F", "expect"]);
    let ours = ctrack(ns, &a);
    let our_table = expectations(ns, "ipv4");
    d.check(
        theirs.code == 0 && ours.code == 0 && ours.err.is_empty(),
        || format!("-I expect 5000: {ours:?} {theirs:?}"),
    );
    d.check(
        their_table.len() == 1
            && their_table[0].contains(" proto=19 src=10.9.1.2 dst=10.9.2.2 mask-src="),
        || format!("1.4.7's -I expect 5000: {their_table:?}"),
    );
    d.check(
        our_table.len() == 1
            && our_table[0].contains(
                " proto=6 src=10.9.1.2 dst=10.9.2.2 sport=0 dport=5000 mask-src=255.255.255.255 \
                 mask-dst=255.255.255.255 sport=0 dport=65535 master-src=10.9.1.2",
            ),
        || format!("ctrack's -I expect 5000: {our_table:?}"),
    );
    // and that expectation works: a connection to it is RELATED to the master
    drop((idle, idle6));
    d.finish("modifying expect commands");
}

/// Command-line errors of the expect commands (the same message and exit
/// code), and `-R` files with expect lines (refused as conntrack refuses
/// them).
#[test]
fn expect_command_line_errors_and_load_file() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("exerr");
    let mut d = Diffs::default();
    let full = "--tuple-src 1.1.1.1 --tuple-dst 2.2.2.2 --tuple-port-src 0 --tuple-port-dst 5 \
                --mask-src 255.255.255.255 --mask-dst 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535";
    let cases: Vec<String> = [
        "-L expect -p tcp",
        "-L expect -s 1.1.1.1",
        "-L expect -z",
        "-L expect -m 1",
        "-L expect nope",
        "-L expect -o bogus",
        "-G expect",
        "-G expect -o xml -s 1.1.1.1 -d 2.2.2.2 -p tcp",
        "-G expect -s 1.1.1.1 -d 2.2.2.2",
        "-G expect -s 1.1.1.1 -d 2.2.2.2 -p tcp",
        "-G expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2",
        "-G expect -s 1.1.1.1 -d 2.2.2.2 -p icmp --icmp-type 8",
        "-G expect -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1 -t 5",
        "-D expect",
        "-D expect -s 1.1.1.1 -p tcp",
        "-D expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2",
        "-D expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1 -u ASSURED",
        "-I expect",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp -t 5",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 --tuple-src 1.1.1.1",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 FULL --state ESTABLISHED",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 FULL --reply-port-src 1",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 FULL",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 FULL --helper ftp",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 FULL --flags PERMANENT",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 FULL -m 1",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 FULL -w 1",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 FULL -f ipv4",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 --tuple-src 1.1.1.1 --tuple-dst 2.2.2.2 --mask-src 255.0.0.0/8",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 --tuple-src 1.1.1.1/40",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 --tuple-src nope",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 --tuple-src fd00::1",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p icmp -t 5 --tuple-src 1.1.1.1 --tuple-dst 2.2.2.2 --mask-src 1.1.1.1 --mask-dst 1.1.1.1 --icmp-type 8",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p sctp --sport 1 --dport 2 -t 5 FULL",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p dccp --sport 1 --dport 2 -t 5 FULL",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p gre --srckey 1 --dstkey 2 -t 5 --tuple-src 1.1.1.1 --tuple-dst 2.2.2.2 --mask-src 1.1.1.1 --mask-dst 1.1.1.1",
        "-F expect -f ipv4",
        "-F expect -s 1.1.1.1",
        "-C expect -f ipv4",
        "-C expect -p tcp",
        "-S expect -f ipv4",
        "-E expect -f ipv4",
        "-E expect -t 1",
        "-E expect -p tcp",
        "-E expect -b 100000",
        "-U expect",
        "-A expect",
        "-L expect -L",
        "-I expect -D",
        "-V expect",
        "-h expect",
    ]
    .iter()
    .map(|c| c.replace("FULL", full))
    .collect();
    for c in &cases {
        let a = argv(c);
        let (ours, mut theirs) = diff::both_in(&ns, &a);
        if a.first() == Some(&"-h") {
            // the usage has 1.4.9's --labelmap line (README)
            theirs = diff::labelmap_line(&theirs);
        }
        d.add(diff::describe(&a, &ours, &theirs));
    }
    // kernel answers without a table: nothing to get, delete, or be master of
    for c in [
        "-G expect -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1",
        "-D expect -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1",
        "-D expect -s fd00::1 -d fd00::2 -p udp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1",
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t 5 --tuple-src 1.1.1.1 --tuple-dst 2.2.2.2 --tuple-port-src 0 --tuple-port-dst 5 --mask-src 255.255.255.255 --mask-dst 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535",
        "-L expect",
        "-C expect",
        "-F expect",
    ] {
        let a = argv(c);
        let (ours, mut theirs) = diff::both_in(&ns, &a);
        if a.first() == Some(&"-h") {
            // the usage has 1.4.9's --labelmap line (README)
            theirs = diff::labelmap_line(&theirs);
        }
        d.add(diff::describe(&a, &ours, &theirs));
    }
    // -R with expect lines: refused (1.4.7 calls -I expect "-C expect")
    let tmp = support::TempDir::new("exr");
    let file = tmp.join("r.txt");
    let f = file.to_str().expect("path");
    for line in [
        "-I expect -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t 5 --tuple-src 1.1.1.1 --tuple-dst 2.2.2.2 --tuple-port-src 0 --tuple-port-dst 5 --mask-src 255.255.255.255 --mask-dst 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535",
        "-D expect -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1",
        "-F expect",
        "-L expect",
        "-G expect -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 --reply-port-src 2 --reply-port-dst 1",
        "-E expect",
        "-C expect",
        "-S expect",
        "-I -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t 5\n-F expect",
        "-I expect -s 1.1.1.1",
    ] {
        std::fs::write(&file, format!("{line}\n")).expect("write");
        let (ours, theirs) = diff::both_in(&ns, &["-R", f]);
        d.add(diff::describe(&["-R", line], &ours, &theirs));
        let (ours, theirs) = (ctrack(&ns, &["-L"]), conntrack(&ns, &["-L"]));
        d.add(diff::describe(&["-L after -R", line], &ours, &theirs));
    }
    d.finish("expect errors");
}

/// Kills the listed processes when dropped (a test that fails midway).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: plain kill(2) on children we started and did not reap.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// `-E expect` (and `-E` on the conntrack table) while FTP sessions make,
/// use and time out expectations, and `-I/-D/-F expect` change them: both
/// tools listen at once and must print the same lines.
#[test]
fn expect_events_match_conntrack() {
    if !ftplab::can_run() {
        return;
    }
    let ftp = FtpLab::new("exe");
    let ns = &ftp.lab.router;
    let both: &[&str] = &[
        "-E expect",
        "-E expect -o xml",
        "-E expect -o timestamp",
        "-E expect -o xml,timestamp",
        "-E expect -o extended,id",
        "--event expect",
        "-E -p tcp",
        "-E -p tcp -o xml",
        "-E -f ipv6 -o extended",
    ];
    // ctrack's own: -e on expectations (1.4.7 refuses it), JSON
    let ours_only: &[&str] = &[
        "-E expect -e NEW",
        "-E expect -e DESTROY",
        "-E expect -e NEW,DESTROY",
        "-E expect -o json",
    ];
    let mut kids = Vec::new();
    for c in both.iter().chain(ours_only) {
        let a = argv(c);
        let theirs = both.contains(c).then(|| {
            let mut t = vec!["conntrack"];
            t.extend_from_slice(&a);
            ns.spawn(&t)
        });
        let ours = std::process::Command::new(lab::ctrack_bin())
            .arg("--netns")
            .arg(&ns.name)
            .args(&a)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ctrack -E");
        kids.push((c, theirs, ours));
    }
    let guard = KillOnDrop(
        kids.iter()
            .flat_map(|(_, t, o)| t.iter().map(|t| t.id()).chain([o.id()]))
            .collect(),
    );
    let bound = lab::wait_until(Duration::from_secs(10), || {
        let want = kids
            .iter_mut()
            .map(|(_, t, o)| {
                t.as_mut()
                    .map_or(0, |t| t.try_wait().ok().flatten().is_none() as usize)
                    + o.try_wait().ok().flatten().is_none() as usize
            })
            .sum::<usize>();
        let o = ns.run(&["cat", "/proc/net/netlink"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.get(1) == Some(&"12") && w.get(3).is_some_and(|g| *g != "00000000")
            })
            .count()
            >= want
    });
    assert!(bound, "event listeners did not start");
    // expectations made and used by real transfers, over both families
    for (server, active) in [
        (addr::SERVER, false),
        (addr::SERVER, true),
        (addr::SERVER6, false),
        (addr::SERVER6, true),
    ] {
        assert_eq!(ftp.transfer(server, active), "hello\n");
    }
    // one made by -I expect, one deleted by -D expect, the rest flushed
    let idle = ftp.hold(addr::SERVER, Hold::Idle);
    let args = create_args(false, false, idle.sport, 1600, "");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = ns.conntrack(&a);
    assert!(r.status.success(), "-I expect: {r:?}");
    let held = ftp.hold(addr::SERVER, Hold::Passive);
    let port = expected_port(ns, "ipv4", held.sport);
    ns.run(&argv(&format!(
        "conntrack -D expect -s {} -d {} -p tcp --sport 0 --dport {port} --reply-port-src 0 --reply-port-dst 0",
        addr::CLIENT,
        addr::SERVER
    )));
    let _h6 = ftp.hold(addr::SERVER6, Hold::Passive);
    let _ = ns.conntrack(&["-F", "expect"]);
    std::thread::sleep(Duration::from_millis(700));
    std::mem::forget(guard);
    let mut d = Diffs::default();
    let mut theirs_all = String::new();
    for (c, t, o) in kids {
        for pid in t.iter().map(|t| t.id()).chain([o.id()]) {
            // SAFETY: plain kill(2) on a child we started.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
        }
        let norm = |l: &str| EVENTS.apply(&EXPECT_RUNS.apply(l));
        let ours = Run::of(&o.wait_with_output().expect("wait ctrack")).map(norm);
        match t {
            Some(t) => {
                let theirs = Run::of(&t.wait_with_output().expect("wait conntrack")).map(norm);
                if *c == "-E expect" {
                    theirs_all = theirs.out.clone();
                }
                d.add(diff::describe(&argv(c), &ours, &theirs));
                d.check(ours.out.lines().count() > 0, || {
                    format!("{c}: no events shown")
                });
            }
            None => {
                // checked against conntrack's unmasked -E expect below
                let lines = ours.out.lines().count();
                d.check(
                    ours.code == 0
                        && ours
                            .err
                            .ends_with(&format!("{lines} expectation events have been shown.\n")),
                    || format!("{c}: {ours:?}"),
                );
                let pick = |tag: &str| -> Vec<String> {
                    theirs_all
                        .lines()
                        .filter(|l| l.trim_start().starts_with(tag))
                        .map(str::to_string)
                        .collect()
                };
                let want: Vec<String> = match *c {
                    "-E expect -e NEW" => pick("[NEW]"),
                    "-E expect -e DESTROY" => pick("[DESTROY]"),
                    "-E expect -e NEW,DESTROY" => theirs_all
                        .lines()
                        .filter(|l| !l.contains("[UPDATE]"))
                        .map(str::to_string)
                        .collect(),
                    _ => {
                        let n = ours
                            .out
                            .lines()
                            .filter(|l| {
                                serde_json::from_str::<serde_json::Value>(l)
                                    .is_ok_and(|j| j.get("event").is_some())
                            })
                            .count();
                        d.check(n == theirs_all.lines().count() && n == lines, || {
                            format!("json events {n} vs {}", theirs_all.lines().count())
                        });
                        continue;
                    }
                };
                let got: Vec<String> = ours.out.lines().map(str::to_string).collect();
                d.check(got == want && !got.is_empty(), || {
                    format!("{c}: ctrack {got:?}, conntrack's lines {want:?}")
                });
            }
        }
    }
    drop((idle, held));
    d.finish("expect events");
}
