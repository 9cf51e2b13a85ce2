//! The web server's front (src/web/front.rs) against hostile clients:
//! thousands of idle connections cost no thread, a 1 MiB header line
//! costs no memory, a client trickling its head is cut at the deadline,
//! past the connection cap with every connection busy a client gets 503,
//! and each connection carries one request. The first two run
//! `ctrack web` as a process of its own, to count its threads and read
//! its RSS.
#![cfg(feature = "web")]

mod lab;
mod support;
mod webtest;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ctrack::netlink::socket::in_netns;
use ctrack::web::{Hub, Limits};
use lab::Netns;
use webtest::{config, get, raw, start};

/// `ctrack web` in a namespace, stopped with SIGTERM on drop (so it
/// removes its private socket directory).
struct WebProc {
    child: Child,
    addr: SocketAddr,
}

impl WebProc {
    fn start(ns: &Netns) -> WebProc {
        let addr: SocketAddr = "127.0.0.1:8077".parse().unwrap();
        let child = Command::new(lab::ctrack_bin())
            .args(["web", "--netns", &ns.name, "--listen", "127.0.0.1:8077"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let p = WebProc { child, addr };
        let up = lab::wait_until(Duration::from_secs(10), || {
            in_netns(&ns.name, || TcpStream::connect(addr)).is_ok()
        });
        assert!(up, "ctrack web did not start");
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .count()
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for WebProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[allow(clippy::useless_conversion)]
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = r.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
}

#[test]
fn idle_connections_cost_no_thread_and_huge_headers_no_memory() {
    if !lab::can_run() {
        return;
    }
    raise_nofile();
    let ns = Netns::new("wlth");
    let web = WebProc::start(&ns);
    let a = web.addr;
    for _ in 0..3 {
        assert_eq!(get(&ns, a, "/api/v1/stats").status, 200);
    }
    let base = web.threads();

    // 2000 connections that send nothing
    let mut idle = Vec::new();
    let mut most = base;
    in_netns(&ns.name, || {
        for i in 0..2000 {
            idle.push(TcpStream::connect(a)?);
            if i % 100 == 99 {
                most = most.max(web.threads());
            }
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    most = most.max(web.threads());
    // and a normal request still gets through
    let r = get(&ns, a, "/api/v1/stats");
    assert_eq!(r.status, 200);
    let w = &r.json()["web"];
    assert!(w["connections"].as_u64().unwrap() <= 32, "{w}");
    assert!(w["evicted"].as_u64().unwrap() >= 1900, "{w}");
    most = most.max(web.threads());
    eprintln!("threads: {base} before, at most {most} with 2000 idle connections");
    assert!(
        most <= base + 2,
        "threads grew from {base} to {most} with 2000 idle connections"
    );
    drop(idle);

    // a 1 MiB header line is cut with 431, and memory stays where it was
    let mut huge = b"GET /api/v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend(b"\r\n\r\n");
    assert_eq!(raw(&ns, a, &huge).status, 431);
    std::thread::sleep(Duration::from_millis(200));
    let before = web.rss_kib();
    for _ in 0..8 {
        let r = raw(&ns, a, &huge);
        assert_eq!(r.status, 431);
        assert!(r.json()["error"].as_str().unwrap().contains("too large"));
    }
    let after = web.rss_kib();
    eprintln!("RSS: {before} KiB before, {after} KiB after eight 1 MiB headers");
    assert!(
        after <= before + 300,
        "RSS grew from {before} KiB to {after} KiB on 1 MiB headers"
    );
    assert_eq!(get(&ns, a, "/api/v1/stats").status, 200);
}

#[test]
fn a_trickling_head_is_cut_at_the_deadline() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("wslo");
    let mut cfg = config();
    cfg.limits.head_timeout = Duration::from_secs(3);
    let web = start(&ns, cfg, Hub::default());
    let a = web.local_addr();
    // one byte a second: each read is quick, the head never completes
    let mut s = webtest::connect(&ns, a);
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let head = b"GET /api/v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0;
    let closed = loop {
        if sent < head.len() {
            let _ = s.write_all(&head[sent..sent + 1]);
            sent += 1;
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break true,
        }
        if t0.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    let took = t0.elapsed();
    assert!(closed, "a trickling client was never cut");
    assert!(took >= Duration::from_millis(2500), "cut early: {took:?}");
    assert!(took < Duration::from_secs(10), "cut late: {took:?}");
    assert!(sent < head.len(), "the whole head was sent: {sent}");
    assert_eq!(webtest::parse(&got).status, 408);
    assert!(web.stats()["head_timeouts"].as_u64().unwrap() >= 1);
    web.stop();
}

#[test]
fn past_the_cap_with_every_connection_busy_is_503() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("wcap");
    let mut cfg = config();
    cfg.limits = Limits {
        max_conns: 4,
        ..cfg.limits
    };
    let web = start(&ns, cfg, Hub::default());
    let a = web.local_addr();
    // four event streams hold every connection with a request in progress
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut s = webtest::connect(&ns, a);
        s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        assert_eq!(head.matches("Connection: close").count(), 1, "{head}");
        streams.push(s);
    }
    let r = get(&ns, a, "/api/v1/stats");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.json()["error"].as_str().unwrap().contains("connections"));
    // closed streams free their places at once
    drop(streams);
    let ok = lab::wait_until(Duration::from_secs(5), || {
        get(&ns, a, "/api/v1/stats").status == 200
    });
    assert!(ok, "{}", web.stats());
    assert!(web.stats()["refused"].as_u64().unwrap() >= 1);
    web.stop();
}

#[test]
fn one_request_per_connection_and_the_reply_says_so() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("wone");
    let web = start(&ns, config(), Hub::default());
    let a = web.local_addr();
    // two pipelined requests, keep-alive asked: one reply, then the end
    let r = raw(
        &ns,
        a,
        b"GET /api/v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n\
          GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.json()["web"].is_object());
    assert_eq!(
        r.headers.iter().filter(|(k, _)| k == "connection").count(),
        1
    );
    // the page and an error reply, same header
    let r = get(&ns, a, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("content-security-policy").is_some());
    let r = raw(&ns, a, b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    // a small body is fine on DELETE (it reaches the token check)
    let r = raw(
        &ns,
        a,
        b"DELETE /api/v1/connections?all=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(r.status, 403);
    web.stop();
}

#[test]
fn an_event_stream_that_stops_reading_is_dropped() {
    if !lab::can_run() {
        return;
    }
    let ns = Netns::new("wsnd");
    // a queue so long that the hub is not the one to drop the client
    let hub = Hub::new(1 << 20);
    let mut cfg = config();
    cfg.limits.send_timeout = Duration::from_secs(1);
    let web = start(&ns, cfg, hub);
    let a = web.local_addr();
    // read the head, then never read again
    let mut s = webtest::connect(&ns, a);
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(web.stats()["streams"], 1);
    // events by the thousand fill the socket buffers and the front's
    webtest::load_flows(&ns, &webtest::volume_lines(20000));
    let dropped = lab::wait_until(Duration::from_secs(20), || {
        let st = web.stats();
        st["send_timeouts"].as_u64().unwrap() >= 1 && st["streams"] == 0
    });
    assert!(dropped, "{}", web.stats());
    assert_eq!(
        web.stats()["streams_dropped"],
        0,
        "the hub dropped it, not the front"
    );
    drop(s);
    web.stop();
}
