//! The web server against hostile LAN clients (issue 11), each scenario on
//! a live namespace: the page answers while slow readers hold the largest
//! replies; HTTP/1.0 full lists stream without a length; a `Host` that is
//! not ours gets 421 and a cross-site request 403; an event stream's place
//! is free within a second of its client closing; a connection flood from
//! one address leaves another address its 200s; the read token; one
//! shared dump for concurrent requests, lists kept current by events;
//! killing exactly one flow. No speed goals: the availability checks give
//! generous bounds ("answers while ...").
#![cfg(feature = "web")]

mod lab;
mod support;
mod webtest;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ctrack::web::{Hub, Limits, WebConfig};
use lab::{Netns, stdout, wait_until};
use support::TempDir;
use webtest::{get, get_from, load_flows, raw, req, start, volume_lines};

/// The default limits (per-client caps on), with room in the rate limit
/// for the tests' own requests.
fn hostile_config() -> WebConfig {
    WebConfig {
        limits: Limits {
            rate_per_sec: 1000,
            rate_burst: 1000,
            ..Limits::default()
        },
        ..WebConfig::default()
    }
}

fn other() -> IpAddr {
    "127.0.0.2".parse().unwrap()
}

/// A client that asks for `target` and reads its reply at about
/// `per_sec` bytes a second until `stop`; returns the bytes it got and
/// whether the server ended the reply.
fn slow_reader(
    ns: &Netns,
    a: SocketAddr,
    target: &str,
    per_sec: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, bool)> {
    let mut s = webtest::connect(ns, a);
    small_receive_buffer(&s);
    let r = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", a.ip());
    s.write_all(r.as_bytes()).unwrap();
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; per_sec / 10];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return (got, true),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (got, false)
    })
}

/// A receive buffer of a few KiB, as a slow phone's would be: the
/// loopback's autotuning would otherwise take megabytes of the reply
/// into the kernel at once.
fn small_receive_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let n: i32 = 8 * 1024;
    // SAFETY: setsockopt reads the int we pass, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&n as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn the_page_answers_while_slow_readers_hold_the_largest_replies() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("whslow");
    load_flows(&ns, &volume_lines(20000));
    let web = start(&ns, hostile_config(), Hub::default());
    let a = web.local_addr();
    // the table is seeded by the first request
    assert_eq!(get(&ns, a, "/api/v1/connections?limit=1").status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    // three slow readers of the whole sorted list (about 9 MB each) from
    // one address, two more from another
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(slow_reader(
            &ns,
            a,
            "/api/v1/connections?sort=id",
            16 * 1024,
            stop.clone(),
        ));
    }
    let far = {
        let mut s = webtest::connect_from(&ns, other(), a);
        s.write_all(
            format!(
                "GET /api/v1/connections?sort=-bytes HTTP/1.1\r\nHost: {}\r\n\r\n",
                a.ip()
            )
            .as_bytes(),
        )
        .unwrap();
        s
    };
    std::thread::sleep(Duration::from_millis(1500));
    let st = web.stats();
    assert!(st["heavy"].as_u64().unwrap() >= 2, "{st}");
    // the page, its script and a page of flows answer meanwhile, from
    // either address, every time
    for round in 0..5 {
        for (who, path) in [
            (None, "/"),
            (Some(other()), "/app.js"),
            (None, "/api/v1/connections?limit=100&sort=-bytes"),
            (Some(other()), "/api/v1/connections?limit=100&sort=src"),
            (None, "/api/v1/stats"),
        ] {
            let t0 = Instant::now();
            let r = match who {
                Some(src) => get_from(&ns, src, a, path),
                None => get(&ns, a, path),
            };
            assert_eq!(r.status, 200, "round {round} {path}: {}", r.text());
            let took = t0.elapsed();
            assert!(
                took < Duration::from_secs(5),
                "round {round} {path} answered only after {took:?} while slow readers held replies"
            );
        }
    }
    // the third reader of the first address had no large-reply place
    // left: it got 503 with Retry-After, not a hung request
    let st = web.stats();
    assert!(st["busy"].as_u64().unwrap() >= 1, "{st}");
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(usize, bool)> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(results.iter().any(|&(_, ended)| ended), "{results:?}");
    drop(far);
    web.stop();
}

#[test]
fn http10_full_lists_stream_without_a_length_and_large_replies_are_capped() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("wh10");
    load_flows(&ns, &volume_lines(5000));
    let web = start(&ns, hostile_config(), Hub::default());
    let a = web.local_addr();
    for target in ["/api/v1/connections", "/api/v1/connections?sort=-bytes,src"] {
        let r = raw(
            &ns,
            a,
            format!("GET {target} HTTP/1.0\r\nHost: {}\r\n\r\n", a.ip()).as_bytes(),
        );
        assert_eq!(r.status, 200, "{target}");
        assert!(
            r.header("content-length").is_none(),
            "{target}: {:?}",
            r.headers
        );
        assert!(r.header("transfer-encoding").is_none(), "{target}");
        assert_eq!(r.header("connection"), Some("close"));
        let v = r.json();
        assert!(v["items"].as_array().unwrap().len() >= 5000, "{target}");
        assert_eq!(v["matched"], v["total"]);
    }
    // HTTP/1.1 gets the same list chunked; HEAD only the head
    let r = get(&ns, a, "/api/v1/connections");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.json()["items"].as_array().unwrap().len() >= 5000);
    let r = req(&ns, a, "HEAD", "/api/v1/connections", "");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // HTTP/1.0 without Host is fine (no browser sends that)
    let r = raw(&ns, a, b"GET /api/v1/stats HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    // a client that half-closes after its request (as netcat does) still
    // gets the whole reply
    let mut s = webtest::connect(&ns, a);
    s.write_all(
        format!(
            "GET /api/v1/connections HTTP/1.0\r\nHost: {}\r\n\r\n",
            a.ip()
        )
        .as_bytes(),
    )
    .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let r = webtest::parse(&out);
    assert_eq!(r.status, 200);
    assert!(r.json()["items"].as_array().unwrap().len() >= 5000);
    // a CSV of the whole table streams too
    let r = get(&ns, a, "/api/v1/connections?format=csv&sort=src");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    let text = r.text();
    assert!(text.starts_with("proto,state,src,sport,dst,dport,"));
    assert!(text.lines().count() > 5000);
    // large replies to one client: two at a time; the third is 503
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..2)
        .map(|_| slow_reader(&ns, a, "/api/v1/connections", 4096, stop.clone()))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || web.stats()["heavy"] == 2));
    let r = get(&ns, a, "/api/v1/connections");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("large replies")
    );
    // another client still gets its own
    let r = get_from(&ns, other(), a, "/api/v1/connections");
    assert_eq!(r.status, 200);
    // and a small page needs no such place
    assert_eq!(get(&ns, a, "/api/v1/connections?limit=100").status, 200);
    stop.store(true, Ordering::Relaxed);
    for s in slow {
        s.join().unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || web.stats()["heavy"] == 0));
    web.stop();
}

#[test]
fn a_reader_below_the_minimum_rate_is_cut() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("whrate");
    load_flows(&ns, &volume_lines(5000));
    let mut cfg = hostile_config();
    cfg.limits.min_rate = 256 * 1024;
    cfg.limits.min_rate_after = Duration::from_secs(2);
    let web = start(&ns, cfg, Hub::default());
    let a = web.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let r = slow_reader(
        &ns,
        a,
        "/api/v1/connections?sort=id",
        8 * 1024,
        stop.clone(),
    );
    // the server lets go of it: the reply is cut, its thread and place
    // are free (what the kernel still holds drains at the reader's pace)
    let cut = wait_until(Duration::from_secs(60), || {
        let st = web.stats();
        st["slow_replies"].as_u64().unwrap() >= 1 && st["heavy"] == 0
    });
    assert!(cut, "{}", web.stats());
    stop.store(true, Ordering::Relaxed);
    r.join().unwrap();
    web.stop();
}

#[test]
fn foreign_hosts_and_cross_site_requests_are_refused() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("whhost");
    let mut cfg = hostile_config();
    cfg.server_names = vec!["router.lan".into()];
    let web = start(&ns, cfg, Hub::default());
    let a = web.local_addr();
    let ask = |host: &str, extra: &str| {
        raw(
            &ns,
            a,
            format!("GET /api/v1/stats HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes(),
        )
    };
    // DNS rebinding: a page of attacker.example resolving to us
    for host in [
        "attacker.example",
        "attacker.example:8077",
        "127.0.0.2",
        "router.lan.evil",
    ] {
        let r = ask(host, "");
        assert_eq!(r.status, 421, "{host}");
        assert!(r.json()["error"].as_str().unwrap().contains("host"));
        assert!(r.header("access-control-allow-origin").is_none());
    }
    for host in [
        format!("{}", a),
        "127.0.0.1".into(),
        "localhost:1".into(),
        "ROUTER.lan".into(),
    ] {
        assert_eq!(ask(&host, "").status, 200, "{host}");
    }
    // a page elsewhere making the browser call us
    let r = ask("127.0.0.1", "Sec-Fetch-Site: cross-site\r\n");
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("cross-site"));
    for site in ["same-origin", "same-site", "none"] {
        assert_eq!(
            ask("127.0.0.1", &format!("Sec-Fetch-Site: {site}\r\n")).status,
            200
        );
    }
    // HTTP/1.1 without Host
    assert_eq!(
        raw(&ns, a, b"GET /api/v1/stats HTTP/1.1\r\n\r\n").status,
        400
    );
    let st = web.stats();
    assert!(st["misdirected"].as_u64().unwrap() >= 4, "{st}");
    assert!(st["cross_site"].as_u64().unwrap() >= 1, "{st}");
    web.stop();
}

#[test]
fn an_event_stream_place_is_free_within_a_second_of_its_close() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("whsse");
    let web = start(&ns, hostile_config(), Hub::default());
    let a = web.local_addr();
    let open = || {
        let mut s = webtest::connect(&ns, a);
        s.write_all(format!("GET /api/v1/events HTTP/1.1\r\nHost: {}\r\n\r\n", a.ip()).as_bytes())
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        (s, String::from_utf8_lossy(&buf[..n]).to_string())
    };
    // one client: two streams, the third is refused
    let (s1, h1) = open();
    let (_s2, h2) = open();
    assert!(h1.starts_with("HTTP/1.1 200") && h2.starts_with("HTTP/1.1 200"));
    let (_s3, h3) = open();
    assert!(h3.starts_with("HTTP/1.1 503"), "{h3}");
    assert!(h3.contains("Retry-After: 5"), "{h3}");
    // another client has places of its own
    let mut far = webtest::connect_from(&ns, other(), a);
    far.write_all(format!("GET /api/v1/events HTTP/1.1\r\nHost: {}\r\n\r\n", a.ip()).as_bytes())
        .unwrap();
    let mut buf = [0u8; 64];
    let n = far.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(web.stats()["streams"], 3);
    // the first client closes a stream: its place is free at once (no
    // waiting for the 15 s keep-alive)
    let t0 = Instant::now();
    drop(s1);
    assert!(
        wait_until(Duration::from_secs(1), || web.stats()["streams"] == 2),
        "the stream's place was still taken after {:?}: {}",
        t0.elapsed(),
        web.stats()
    );
    let (_s4, h4) = open();
    assert!(h4.starts_with("HTTP/1.1 200"), "{h4}");
    web.stop();
}

#[test]
fn a_connection_flood_from_one_address_leaves_another_its_200s() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("whflood");
    let web = start(&ns, hostile_config(), Hub::default());
    let a = web.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    // the flood: connections from 127.0.0.1 that never send a head, as
    // fast as they can be opened
    let flood = {
        let stop = stop.clone();
        let name = ns.name.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = ctrack::netlink::socket::in_netns(&name, || TcpStream::connect(a)) {
                    held.push(s);
                    n += 1;
                }
                if held.len() > 500 {
                    held.drain(..250);
                }
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // another address: every request answers, all the while
    for i in 0..40 {
        let r = get_from(&ns, other(), a, "/api/v1/stats");
        assert_eq!(
            r.status,
            200,
            "request {i} from the other address: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    stop.store(true, Ordering::Relaxed);
    let opened = flood.join().unwrap();
    let st = web.stats();
    assert!(opened > 100, "the flood opened only {opened}");
    assert!(st["evicted"].as_u64().unwrap() > 50, "{st}");
    assert!(st["connections"].as_u64().unwrap() <= 32, "{st}");
    web.stop();
}

#[test]
fn a_read_token_guards_the_data_not_the_page() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("whread");
    let dir = TempDir::new("readtoken");
    let mut cfg = hostile_config();
    cfg.read_token_file = Some(webtest::token_file(&dir, "read", "read-token-0123456789"));
    cfg.token_file = Some(webtest::token_file(&dir, "admin", "admin-token-0123456789"));
    let web = start(&ns, cfg, Hub::default());
    let a = web.local_addr();
    for path in ["/", "/app.js", "/style.css", "/api/v1/openapi.json"] {
        assert_eq!(get(&ns, a, path).status, 200, "{path}");
    }
    for path in [
        "/api/v1/connections",
        "/api/v1/hosts",
        "/api/v1/stats",
        "/metrics",
        "/api/v1/events",
    ] {
        let r = get(&ns, a, path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"ctrack\"")
        );
        let r = req(
            &ns,
            a,
            "GET",
            path,
            "Authorization: Bearer wrong-token-000000000\r\n",
        );
        assert_eq!(r.status, 401, "{path}");
    }
    for token in ["read-token-0123456789", "admin-token-0123456789"] {
        let auth = format!("Authorization: BEARER {token}\r\n");
        assert_eq!(
            req(&ns, a, "GET", "/api/v1/stats", &auth).status,
            200,
            "{token}"
        );
    }
    // the read token does not delete
    let r = req(
        &ns,
        a,
        "DELETE",
        "/api/v1/connections?mark=1",
        "Authorization: Bearer read-token-0123456789\r\n",
    );
    assert_eq!(r.status, 401);
    assert!(web.stats()["unauthorized"].as_u64().unwrap() >= 10);
    web.stop();
}

#[test]
fn concurrent_requests_share_one_dump_and_events_keep_lists_current() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("whshare");
    load_flows(&ns, &volume_lines(3000));
    let mut cfg = hostile_config();
    cfg.counter_interval = Duration::from_secs(3600);
    let web = start(&ns, cfg, Hub::default());
    let a = web.local_addr();
    // ten requests at once before any table exists: one seeding dump
    let replies: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|i| {
                let ns = &ns;
                s.spawn(move || {
                    let path = if i % 2 == 0 {
                        "/api/v1/connections?limit=10&sort=-bytes"
                    } else {
                        "/api/v1/hosts?mark=999"
                    };
                    get(ns, a, path)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let dumps = |web: &webtest::Web| web.stats()["snapshot"]["dumps"].as_u64().unwrap();
    assert_eq!(dumps(&web), 1, "{}", web.stats());
    // more requests within the interval: still that one dump
    for _ in 0..10 {
        assert_eq!(get(&ns, a, "/api/v1/connections?limit=5").status, 200);
    }
    assert_eq!(dumps(&web), 1);
    // a new flow shows without a dump (its NEW event), a destroyed one
    // goes (its DESTROY event)
    ns.conntrack(&[
        "-I",
        "-p",
        "udp",
        "-s",
        "10.55.0.1",
        "-d",
        "10.55.0.2",
        "--sport",
        "5",
        "--dport",
        "6",
        "-t",
        "300",
    ]);
    ns.conntrack(&["-D", "-s", "10.77.0.7"]);
    let seen = wait_until(Duration::from_secs(5), || {
        let v = get(&ns, a, "/api/v1/connections?host=10.55.0.1").json();
        let gone = get(&ns, a, "/api/v1/connections?host=10.77.0.7").json();
        v["matched"] == 1 && gone["matched"] == 0
    });
    assert!(seen, "events did not reach the table");
    assert_eq!(dumps(&web), 1, "no dump was needed for that");
    // the reply says how old the counters are
    let v = get(&ns, a, "/api/v1/connections?limit=1").json();
    assert!(v["counters_age"].as_u64().is_some());
    assert_eq!(v["counter_interval"], 3600);
    web.stop();
}

#[test]
fn kill_exactly_one_flow_by_id_and_tuple() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("whkill");
    load_flows(&ns, &volume_lines(50));
    let dir = TempDir::new("killtoken");
    let mut cfg = webtest::config();
    cfg.token_file = Some(webtest::token_file(&dir, "admin", "admin-token-0123456789"));
    let web = start(&ns, cfg, Hub::default());
    let a = web.local_addr();
    let auth = "Authorization: Bearer admin-token-0123456789\r\n";
    let v = get(&ns, a, "/api/v1/connections?host=10.77.0.9").json();
    let f = &v["items"][0];
    let id = f["id"].as_u64().unwrap();
    let sport = f["orig"]["sport"].as_u64().unwrap();
    // the tuple must match too: another flow's tuple with this id kills nothing
    let r = req(
        &ns,
        a,
        "DELETE",
        &format!("/api/v1/connections?id={id}&proto=tcp&src=10.77.0.8&sport={sport}"),
        auth,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = req(
        &ns,
        a,
        "DELETE",
        &format!(
            "/api/v1/connections?id={id}&proto=tcp&src=10.77.0.9&dst=10.78.0.1&sport={sport}&dport=80"
        ),
        auth,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], 1);
    let left = stdout(&ns.conntrack(&["-L", "-m", "77"])).lines().count();
    assert_eq!(left, 49);
    assert_eq!(
        stdout(&ns.conntrack(&["-L", "-s", "10.77.0.9"]))
            .lines()
            .count(),
        0
    );
    // gone now: 404
    let r = req(
        &ns,
        a,
        "DELETE",
        &format!("/api/v1/connections?id={id}"),
        auth,
    );
    assert_eq!(r.status, 404);
    web.stop();
}
