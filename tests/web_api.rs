//! The JSON API against a live lab router: counts equal the kernel table,
//! every filter, sort and paging, bad parameters, hosts with names,
//! stats/metrics, DELETE with a token, the event stream, and the limits
//! (431, slowloris, CR/LF injection, 429, 413, 414, 503).
#![cfg(feature = "web")]

mod lab;
mod support;
mod webtest;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use ctrack::web::{Hub, Limits};
use lab::{RouterLab, addr, stdout};
use serde_json::Value;
use support::TempDir;
use webtest::{config, get, load_flows, raw, req, start, volume_lines};

fn conntrack_count(lab: &RouterLab, args: &[&str]) -> usize {
    let mut a = vec!["-L"];
    a.extend_from_slice(args);
    let o = lab.router.conntrack(&a);
    stdout(&o).lines().filter(|l| !l.trim().is_empty()).count()
}

fn ctrack_count(lab: &RouterLab, args: &[&str]) -> usize {
    let mut a = vec!["-L"];
    a.extend_from_slice(args);
    let o = lab.router.ctrack(&a);
    stdout(&o).lines().filter(|l| !l.trim().is_empty()).count()
}

/// `promtool check metrics` (Debian's prometheus package) finds nothing
/// to say about `text`: HELP and TYPE on every family, counters in
/// `_total`, units in the names.
fn promtool_accepts(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is missing: apt-get install prometheus (make test does)"
        );
        eprintln!("skipping the promtool check: promtool is not installed");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().expect("items")
}

/// Lab with real traffic (v4, v6, TCP via SNAT, UDP, ICMP, a DNAT port
/// forward) plus `n` inserted TCP flows with mark 77.
fn busy_lab(tag: &str, n: u32) -> RouterLab {
    let lab = RouterLab::new(tag);
    lab.ping(addr::SERVER);
    lab.ping(addr::SERVER6);
    lab.tcp(addr::SERVER, 8080);
    lab.udp(addr::SERVER, 5353);
    // port forward: server -> router wan:2222 -> client:22
    lab::dnat_flow(&lab);
    load_flows(&lab.router, &volume_lines(n));
    lab
}

#[test]
fn api_lists_filters_sorts_and_pages_the_kernel_table() {
    if !lab::can_run() {
        return;
    }
    let lab = busy_lab("wapi", 3000);
    let dir = TempDir::new("leases");
    let leases = dir.join("dhcp.leases");
    std::fs::write(
        &leases,
        format!(
            "1999999999 02:00:00:00:00:02 {} laptop 01:02:00:00:00:00:02\n",
            addr::CLIENT
        ),
    )
    .unwrap();
    let mut cfg = config();
    cfg.dhcp_leases = Some(leases);
    let web = start(&lab.router, cfg, Hub::default());
    let (ns, a) = (&lab.router, web.local_addr());

    // the whole table, unsorted (streamed, chunked): total == conntrack -C
    let mut ok = false;
    let mut all = Value::Null;
    for _ in 0..3 {
        let before = stdout(&lab.router.conntrack(&["-C"]))
            .trim()
            .parse::<u64>()
            .unwrap();
        let r = get(ns, a, "/api/v1/connections");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        all = r.json();
        let after = stdout(&lab.router.conntrack(&["-C"]))
            .trim()
            .parse::<u64>()
            .unwrap();
        let total = all["total"].as_u64().unwrap();
        // our own request is a flow in this table (loopback is tracked):
        // it is in the dump and in the count after, not in the one before
        if total == before + 1 && total == after {
            ok = true;
            break;
        }
    }
    assert!(ok, "total never equalled conntrack -C: {}", all["total"]);
    let total = all["total"].as_u64().unwrap() as usize;
    assert!(total >= 3005, "{total}");
    assert_eq!(all["matched"].as_u64().unwrap() as usize, total);
    assert_eq!(items(&all).len(), total);
    assert_eq!(all["acct"], true);
    assert_eq!(all["source"], "table");
    assert_eq!(all["counters_age"], 0);

    // hosts: the LAN client with its name and both directions
    let h = get(ns, a, "/api/v1/hosts").json();
    assert_eq!(h["acct"], true);
    let hosts = h["hosts"].as_array().unwrap();
    let c = hosts
        .iter()
        .find(|x| x["addr"] == addr::CLIENT)
        .expect("client host");
    assert_eq!(c["name"], "laptop");
    assert!(c["flows"].as_u64().unwrap() >= 3, "{c}");
    // its IPv4 and IPv6 addresses are one host (one MAC)
    let addrs = c["addrs"].as_array().unwrap();
    assert!(addrs.iter().any(|x| x == addr::CLIENT6), "{c}");
    assert!(c["mac"].as_str().unwrap().len() == 17, "{c}");
    assert!(
        !hosts.iter().any(|x| x["addr"] == addr::CLIENT6),
        "the IPv6 address is not a host of its own"
    );
    assert!(c["up"]["bytes"].as_u64().unwrap() > 0 && c["down"]["bytes"].as_u64().unwrap() > 0);
    assert!(hosts.iter().any(|x| x["addr"] == "10.77.0.5"));
    assert!(
        !hosts.iter().any(|x| x["addr"] == addr::SERVER),
        "WAN peers are no LAN hosts"
    );
    let h = get(ns, a, "/api/v1/hosts?mark=77").json();
    assert_eq!(h["hosts"].as_array().unwrap().len(), 3000);

    // filters, each compared with conntrack's own selection
    let count = |qs: &str| -> usize {
        let r = get(ns, a, &format!("/api/v1/connections?{qs}"));
        assert_eq!(r.status, 200, "{qs}: {}", r.text());
        let v = r.json();
        assert_eq!(
            items(&v).len() as u64,
            v["matched"].as_u64().unwrap(),
            "{qs}"
        );
        v["matched"].as_u64().unwrap() as usize
    };
    assert_eq!(count("mark=77"), 3000);
    assert_eq!(count("mark=77"), conntrack_count(&lab, &["-m", "77"]));
    assert_eq!(count("proto=tcp"), conntrack_count(&lab, &["-p", "tcp"]));
    assert_eq!(count("proto=udp"), conntrack_count(&lab, &["-p", "udp"]));
    assert_eq!(count("family=ipv6"), conntrack_count(&lab, &["-f", "ipv6"]));
    // NAT: ctrack -n/-g/-j (conntrack 1.4.7 also lists plain ICMP flows
    // as port-NATed; README "Where ctrack deliberately differs")
    assert_eq!(count("nat=snat"), ctrack_count(&lab, &["-n"]));
    assert_eq!(count("nat=dnat"), ctrack_count(&lab, &["-g"]));
    assert_eq!(count("nat=any"), ctrack_count(&lab, &["-j"]));
    assert_eq!(count("nat=dnat"), 1);
    assert_eq!(count("src=10.77.0.0/16"), 3000);
    assert_eq!(count("src=10.77.1.0/24"), 256);
    assert_eq!(
        count(&format!("src={}", addr::CLIENT)),
        conntrack_count(&lab, &["-s", addr::CLIENT])
    );
    assert_eq!(count("dst=10.78.0.1"), 3000);
    assert_eq!(count("status=ASSURED&mark=77"), 3000);
    // inserted flows never saw a reply
    assert_eq!(count("status=UNREPLIED&mark=77"), 3000);
    assert_eq!(count("status=SEEN_REPLY&mark=77"), 0);
    assert_eq!(count("status=!SEEN_REPLY,ASSURED&mark=77"), 3000);
    assert_eq!(
        count("status=SEEN_REPLY"),
        conntrack_count(&lab, &["-u", "SEEN_REPLY"])
    );
    assert_eq!(count("state=ESTABLISHED&mark=77"), 3000);
    assert_eq!(count("zone=0&mark=77"), 3000);
    assert_eq!(count("zone=3"), 0);
    assert_eq!(count("port=1030"), 1);
    assert_eq!(count("port=2222&nat=dnat"), 1);
    assert!(count("port=8080") >= 1);
    assert_eq!(count("host=10.77.0.5"), 1);
    assert_eq!(count("q=10.77.0.5%3A"), 1);
    // names: the lease resolves, host= by name, q by name
    assert_eq!(
        count("host=laptop"),
        count(&format!("host={}", addr::CLIENT))
    );
    // its two TCP flows stay (TIME_WAIT, 120 s) on a slow machine where
    // the ping and UDP flows (30 s) may be gone by now
    assert!(count("host=laptop") >= 2);
    assert_eq!(count("q=LAPTOP"), count("host=laptop"));
    let v = get(
        ns,
        a,
        &format!("/api/v1/connections?src={}&limit=1", addr::CLIENT),
    )
    .json();
    assert_eq!(v["items"][0]["names"][addr::CLIENT], "laptop");

    // sort by bytes, descending: the first page is ordered and is the top
    let v = get(ns, a, "/api/v1/connections?sort=-bytes&limit=10").json();
    let b: Vec<u64> = items(&v)
        .iter()
        .map(|i| i["bytes"].as_u64().unwrap_or(0))
        .collect();
    assert!(b.windows(2).all(|w| w[0] >= w[1]), "{b:?}");
    let max = items(&all)
        .iter()
        .map(|i| i["bytes"].as_u64().unwrap_or(0))
        .max()
        .unwrap();
    // counters only grow (our own earlier requests are flows here too)
    assert!(b[0] >= max, "{} < {max}", b[0]);
    assert_eq!(v["matched"], v["total"]);
    // ascending addresses, then a two-field order
    let v = get(ns, a, "/api/v1/connections?mark=77&sort=src&limit=300").json();
    let src: Vec<std::net::Ipv4Addr> = items(&v)
        .iter()
        .map(|i| i["orig"]["src"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(src.windows(2).all(|w| w[0] <= w[1]));
    let v = get(
        ns,
        a,
        "/api/v1/connections?mark=77&sort=-dport,-sport&limit=5",
    )
    .json();
    let sp: Vec<u64> = items(&v)
        .iter()
        .map(|i| i["orig"]["sport"].as_u64().unwrap())
        .collect();
    assert!(sp.windows(2).all(|w| w[0] > w[1]), "{sp:?}");
    // every sort field is accepted
    for f in [
        "family",
        "proto",
        "src",
        "dst",
        "sport",
        "dport",
        "state",
        "bytes",
        "packets",
        "bytes_orig",
        "bytes_reply",
        "packets_orig",
        "packets_reply",
        "timeout",
        "age",
        "mark",
        "zone",
        "id",
        "nat",
    ] {
        let r = get(ns, a, &format!("/api/v1/connections?sort=-{f}&limit=3"));
        assert_eq!(r.status, 200, "{f}");
        assert_eq!(items(&r.json()).len(), 3);
    }

    // paging: pages of 700 concatenate to the whole sorted selection
    let whole = get(ns, a, "/api/v1/connections?mark=77&sort=sport,src").json();
    let ids =
        |v: &Value| -> Vec<u64> { items(v).iter().map(|i| i["id"].as_u64().unwrap()).collect() };
    let mut paged = Vec::new();
    for off in (0..3000).step_by(700) {
        let p = get(
            ns,
            a,
            &format!("/api/v1/connections?mark=77&sort=sport,src&limit=700&offset={off}"),
        )
        .json();
        assert_eq!(p["matched"], 3000);
        assert_eq!(p["offset"], off);
        paged.extend(ids(&p));
    }
    assert_eq!(paged, ids(&whole));
    // unsorted paging works too, and limit=0 gives counts only
    let p = get(ns, a, "/api/v1/connections?mark=77&limit=10&offset=2995").json();
    assert_eq!(items(&p).len(), 5);
    let p = get(ns, a, "/api/v1/connections?limit=0").json();
    assert!(items(&p).is_empty());
    assert_eq!(p["matched"], p["total"]);

    // bad parameters: 400 naming the parameter
    for (qs, param) in [
        ("port=http", "port"),
        ("proto=xyz", "proto"),
        ("src=300.1.1.1", "src"),
        ("dst=10.0.0.0/40", "dst"),
        ("state=OPENISH", "state"),
        ("status=GREEN", "status"),
        ("mark=x", "mark"),
        ("zone=-1", "zone"),
        ("nat=sometimes", "nat"),
        ("family=ipx", "family"),
        ("sort=-colour", "sort"),
        ("limit=many", "limit"),
        ("offset=-5", "offset"),
        ("color=blue", "color"),
    ] {
        let r = get(ns, a, &format!("/api/v1/connections?{qs}"));
        assert_eq!(r.status, 400, "{qs}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(&format!("'{param}'")), "{qs}: {e}");
    }
    assert_eq!(get(ns, a, "/api/v1/nothing").status, 404);
    assert_eq!(get(ns, a, "/etc/passwd").status, 404);
    assert_eq!(get(ns, a, "/../../etc/passwd").status, 404);
    assert_eq!(get(ns, a, "/%2e%2e/Cargo.toml").status, 404);
    let r = req(
        ns,
        a,
        "POST",
        "/api/v1/connections",
        "Content-Length: 0\r\n",
    );
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("GET"));
    assert_eq!(req(ns, a, "PUT", "/api/v1/stats", "").status, 405);

    // stats and metrics: the daemon's numbers, the web's, the table's
    let s = get(ns, a, "/api/v1/stats").json();
    assert_eq!(s["cache"]["entries"], 7);
    assert!(s["web"]["requests"].as_u64().unwrap() > 10);
    assert!(s["table"]["count"].as_u64().unwrap() as usize >= 3000);
    let m = get(ns, a, "/metrics");
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    let flows: u64 = text
        .lines()
        .filter(|l| l.starts_with("ctrack_flows{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let kernel = stdout(&lab.router.conntrack(&["-C"]))
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!(flows.abs_diff(kernel) <= 2, "{flows} vs {kernel}");
    assert!(text.contains("ctrack_flows{family=\"ipv4\",proto=\"tcp\",state=\"ESTABLISHED\"}"));
    assert!(text.contains("ctrack_table_max "));
    assert!(text.contains("ctrack_cache_entries 7\n"));
    assert!(text.contains("ctrack_sync_up 1\n"));
    assert!(text.contains("\nctrack_web_requests_total "));
    promtool_accepts(&text);

    // the OpenAPI file served is the one in the repository
    let spec = get(ns, a, "/api/v1/openapi.json");
    assert_eq!(spec.body, std::fs::read("web/openapi.json").unwrap());

    // security headers; no CORS
    let page = get(ns, a, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    for r in [&page, &spec, &m] {
        assert!(
            r.headers
                .iter()
                .all(|(k, _)| !k.starts_with("access-control-"))
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let cors = req(
        ns,
        a,
        "GET",
        "/api/v1/stats",
        "Origin: http://evil.example\r\n",
    );
    assert!(
        cors.headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-"))
    );
    web.stop();
}

#[test]
fn delete_needs_a_token_and_really_deletes() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wdel");
    load_flows(&lab.router, &volume_lines(500));
    let ns = &lab.router;
    // no TokenFile: 403 whatever the request says
    let web = start(ns, config(), Hub::default());
    let r = req(
        ns,
        web.local_addr(),
        "DELETE",
        "/api/v1/connections?mark=77",
        "Authorization: Bearer whatever-token-123\r\n",
    );
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("TokenFile"));
    web.stop();

    let dir = TempDir::new("token");
    // a token file others may read is refused
    let open_file = dir.join("open");
    std::fs::write(&open_file, "s3cret-token-0123456789\n").unwrap();
    let mut cfg = config();
    cfg.token_file = Some(open_file);
    cfg.address = "127.0.0.1".parse().unwrap();
    cfg.port = 0;
    let e = ctrack::web::Server::start(cfg, ctrack::web::WebContext::default()).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    let tf = webtest::token_file(&dir, "token", "s3cret-token-0123456789\n");
    let mut cfg = config();
    cfg.token_file = Some(tf);
    let web = start(ns, cfg, Hub::default());
    let a = web.local_addr();
    for auth in [
        "",
        "Authorization: Bearer wrong-token-0123456789\r\n",
        "Authorization: Bearer s3cret-token-012345678\r\n",
        "Authorization: Basic czNjcmV0\r\n",
    ] {
        let r = req(ns, a, "DELETE", "/api/v1/connections?mark=77", auth);
        assert_eq!(r.status, 401, "{auth}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"ctrack\"")
        );
    }
    assert_eq!(conntrack_count(&lab, &["-m", "77"]), 500);
    // the scheme is case-insensitive
    let good = "Authorization: bearer s3cret-token-0123456789\r\n";
    // no filter: refused unless all=1
    let r = req(ns, a, "DELETE", "/api/v1/connections", good);
    assert_eq!(r.status, 400);
    let r = req(ns, a, "DELETE", "/api/v1/connections?port=banana", good);
    assert_eq!(r.status, 400);
    // a filtered delete: exactly those flows go
    let r = req(
        ns,
        a,
        "DELETE",
        "/api/v1/connections?mark=77&src=10.77.0.0/24",
        good,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], 256);
    assert_eq!(r.json()["matched"], 256);
    assert_eq!(conntrack_count(&lab, &["-m", "77"]), 244);
    let r = req(ns, a, "DELETE", "/api/v1/connections?all=1", good);
    assert_eq!(r.status, 200);
    assert_eq!(conntrack_count(&lab, &["-m", "77"]), 0);
    web.stop();
}

#[test]
fn event_stream_gets_a_new_flow_within_a_second() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wsse");
    let ns = &lab.router;
    let hub = Hub::default();
    let mut cfg = config();
    cfg.limits.max_streams = 2;
    let web = start(ns, cfg, hub.clone());
    let a = web.local_addr();
    let mut s = webtest::connect(ns, a);
    s.write_all(b"GET /api/v1/events?proto=udp&dst=10.9.2.2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut ctype = String::new();
    loop {
        line.clear();
        rd.read_line(&mut line).unwrap();
        if line.to_ascii_lowercase().starts_with("content-type") {
            ctype = line.clone();
        }
        if line == "\r\n" {
            break;
        }
    }
    assert!(ctype.contains("text/event-stream"));
    // a second and third stream: the cap is 2
    let mut s2 = webtest::connect(ns, a);
    s2.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    lab::wait_until(Duration::from_secs(3), || hub.clients() == 2);
    let r = get(ns, a, "/api/v1/events");
    assert_eq!(r.status, 503);
    drop(s2);
    // a TCP flow (filtered out) and then a UDP one: the first data line
    // must be the UDP flow's NEW, within a second of its creation
    lab.router.conntrack(&[
        "-I",
        "-p",
        "tcp",
        "-s",
        "10.9.1.2",
        "-d",
        "10.9.2.2",
        "--sport",
        "1",
        "--dport",
        "2",
        "--state",
        "ESTABLISHED",
        "-t",
        "60",
    ]);
    let t0 = Instant::now();
    lab.router.conntrack(&[
        "-I", "-p", "udp", "-s", "10.9.1.2", "-d", "10.9.2.2", "--sport", "4000", "--dport", "53",
        "-t", "60",
    ]);
    let data = loop {
        line.clear();
        rd.read_line(&mut line).unwrap();
        if let Some(d) = line.strip_prefix("data: ") {
            break d.to_string();
        }
    };
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "NEW arrived after {elapsed:?}"
    );
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["event"], "new");
    assert_eq!(v["layer4"], "udp");
    assert_eq!(v["orig"]["dport"], 53);
    // DESTROY comes too; UPDATE only with update=1
    lab.router.conntrack(&["-D", "-p", "udp", "--dport", "53"]);
    let data = loop {
        line.clear();
        rd.read_line(&mut line).unwrap();
        if let Some(d) = line.strip_prefix("data: ") {
            break d.to_string();
        }
    };
    assert!(data.contains("\"event\":\"destroy\""), "{data}");
    assert_eq!(get(ns, a, "/api/v1/events?update=maybe").status, 400);
    drop(rd);
    drop(s);
    web.stop();
}

#[test]
fn limits_hold_against_big_slow_and_malicious_clients() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wlim");
    let ns = &lab.router;
    let web = start(ns, config(), Hub::default());
    let a = web.local_addr();

    // a 64 KiB header: 431 or a closed connection, never a 200
    let big = format!(
        "GET /api/v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = raw(ns, a, big.as_bytes());
    assert!(r.status == 431 || r.status == 0, "got {}", r.status);
    // many small headers too
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = req(ns, a, "GET", "/api/v1/stats", &many);
    assert_eq!(r.status, 431);
    // a long URL: 414
    let r = get(
        ns,
        a,
        &format!("/api/v1/connections?q={}", "x".repeat(5000)),
    );
    assert_eq!(r.status, 414);
    // a body: 413
    let r = req(
        ns,
        a,
        "DELETE",
        "/api/v1/connections?all=1",
        "Content-Length: 5000\r\n",
    );
    assert_eq!(r.status, 413);

    // CR/LF in the query cannot add a response header
    for target in [
        "/api/v1/connections?port=1%0d%0aSet-Cookie:%20pwned=1",
        "/api/v1/connections?q=%0d%0aSet-Cookie:%20pwned=1",
        "/nothing%0d%0aSet-Cookie:%20pwned=1",
        "/api/v1/connections?x%0d%0aSet-Cookie:%20pwned=1=1",
    ] {
        let r = get(ns, a, target);
        assert!(
            r.status == 400 || r.status == 404 || r.status == 200,
            "{target}: {}",
            r.status
        );
        assert!(
            r.header("set-cookie").is_none(),
            "{target}: {:?}",
            r.headers
        );
        assert!(
            r.headers
                .iter()
                .all(|(k, v)| !k.contains("pwned") && !v.contains("pwned"))
        );
    }

    // slowloris: 150 connections each holding half a request line; a
    // normal request still gets through
    let mut slow = Vec::new();
    for _ in 0..150 {
        let mut s = webtest::connect(ns, a);
        s.write_all(b"GET /api/v1/stats HTTP/1.1\r\nX-Slow: ")
            .unwrap();
        slow.push(s);
    }
    let t0 = Instant::now();
    let r = get(ns, a, "/api/v1/stats");
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(slow);
    web.stop();

    // the rate limit: a burst of 5 then 429 with Retry-After
    let mut cfg = config();
    cfg.limits = Limits {
        rate_per_sec: 1,
        rate_burst: 5,
        ..cfg.limits
    };
    let web = start(ns, cfg, Hub::default());
    let codes: Vec<u16> = (0..8)
        .map(|_| get(ns, web.local_addr(), "/api/v1/stats").status)
        .collect();
    assert_eq!(&codes[..5], &[200; 5], "{codes:?}");
    assert!(codes[5..].iter().all(|&c| c == 429), "{codes:?}");
    let r = get(ns, web.local_addr(), "/api/v1/stats");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.json()["error"].as_str().unwrap().contains("too many"));
    web.stop();
}

#[test]
fn host_names_from_leases_are_escaped_in_json() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("wxss");
    let ns = &lab.router;
    let dir = TempDir::new("xss");
    let leases = dir.join("dhcp.leases");
    let evil = "<img src=x onerror=alert(1)>";
    std::fs::write(
        &leases,
        format!("1999999999 02:00:00:00:00:09 10.77.0.9 {evil} *\n"),
    )
    .unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "10.77.0.10 \"quoted\"&amp;\n").unwrap();
    load_flows(ns, &volume_lines(12));
    let mut cfg = config();
    cfg.dhcp_leases = Some(leases);
    cfg.hosts = Some(hosts);
    let web = start(ns, cfg, Hub::default());
    for path in [
        "/api/v1/connections?host=10.77.0.9",
        "/api/v1/connections?sort=src",
        "/api/v1/hosts",
    ] {
        let r = get(ns, web.local_addr(), path);
        assert!(
            !r.text().contains('<') && !r.text().contains('>'),
            "{path}: raw angle brackets"
        );
        assert!(
            r.text()
                .contains("\\u003cimg src=x onerror=alert(1)\\u003e"),
            "{path}"
        );
    }
    let v = get(ns, web.local_addr(), "/api/v1/connections?host=10.77.0.9").json();
    assert_eq!(v["items"][0]["names"]["10.77.0.9"], evil);
    let v = get(ns, web.local_addr(), "/api/v1/connections?host=10.77.0.10").json();
    assert_eq!(v["items"][0]["names"]["10.77.0.10"], "\"quoted\"&amp;");
    web.stop();
}

/// Why a receive timeout on the listener is no way to bound a client's
/// head (README "Web page and JSON API"): Linux copies SO_RCVTIMEO to
/// accepted sockets, but accept() itself then times out with EAGAIN, an
/// error that ends tiny_http 0.12's accept loop; and a per-read timeout
/// never cuts a client sending one byte at a time. The front keeps its own
/// deadline per connection instead (web_limits: a trickling head is cut).
#[test]
fn listener_receive_timeout_also_times_out_accept() {
    if !lab::can_run() {
        return;
    }
    use std::os::fd::AsRawFd;
    let ns = lab::Netns::new("wrcv");
    let l =
        ctrack::netlink::socket::in_netns(&ns.name, || std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: setsockopt reads the timeval we pass, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let t0 = Instant::now();
    let e = l.accept().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(150));
    // and an accepted socket inherits it
    let _c = webtest::connect(&ns, l.local_addr().unwrap());
    let (s, _) = l.accept().unwrap();
    assert_eq!(s.read_timeout().unwrap(), Some(Duration::from_millis(200)));
}
