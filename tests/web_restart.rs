//! Running out of file descriptors (EMFILE) must neither end the web
//! server's accept loop nor reach tiny_http, whose accept loop ends on
//! its first error and whose accept thread panics when it cannot clone
//! an accepted socket. Alone in its binary: it lowers this process's fd
//! limit.
#![cfg(feature = "web")]

mod lab;
mod support;
mod webtest;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use ctrack::web::Hub;

// rlim_t is u32 on 32-bit targets: the conversions are not useless there
#[allow(clippy::useless_conversion)]
fn set_nofile(soft: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        let old = r.rlim_cur;
        r.rlim_cur = soft.try_into().unwrap();
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        u64::from(old)
    }
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

fn counter(web: &webtest::Web, name: &str) -> u64 {
    web.stats()[name].as_u64().unwrap_or(0)
}

#[test]
fn accept_loops_survive_running_out_of_descriptors() {
    if !lab::can_run() {
        return;
    }
    let ns = lab::Netns::new("wrst");
    let web = webtest::start(&ns, webtest::config(), Hub::default());
    let a = web.local_addr();
    assert_eq!(webtest::get(&ns, a, "/api/v1/stats").status, 200);
    std::thread::sleep(Duration::from_millis(300));

    // 1. the front's accept() fails with EMFILE while another process
    // holds 40 connections: it pauses, goes on, and serves again
    let old = set_nofile(open_fds() + 6);
    let script = format!(
        "import socket,time,resource\nh=resource.getrlimit(resource.RLIMIT_NOFILE)[1]\nresource.setrlimit(resource.RLIMIT_NOFILE,(h,h))\ns=[]\nfor i in range(40):\n    s.append(socket.create_connection(('127.0.0.1',{})))\nprint('held',flush=True)\ntime.sleep(4)\n",
        a.port()
    );
    let mut holder = ns.spawn(&["python3", "-c", &script]);
    let failed = lab::wait_until(Duration::from_secs(10), || {
        counter(&web, "accept_errors") >= 1
    });
    assert!(failed, "accept never failed: {}", web.stats());
    let _ = holder.wait();
    set_nofile(old);
    let back = lab::wait_until(Duration::from_secs(20), || {
        let r = std::panic::catch_unwind(|| webtest::get(&ns, a, "/api/v1/stats"));
        matches!(r, Ok(r) if r.status == 200)
    });
    assert!(back, "front did not serve again: {}", web.stats());
    assert_eq!(counter(&web, "restarts"), 0, "{}", web.stats());

    // 2. two descriptors are left: one for the front's accept and one
    // for a connection to tiny_http, none for tiny_http's accept and the
    // clone it makes of each accepted socket (an unwrap() in tiny_http
    // 0.12: this panicked its accept thread, an abort in ctrackd). The
    // front sees the lack of headroom and answers 503; once descriptors
    // are back, 200, and tiny_http never stopped.
    let client = format!(
        "import socket,sys\nsys.stdin.readline()\nc=socket.create_connection(('127.0.0.1',{}))\n\
         c.sendall(b'GET /api/v1/stats HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n')\nd=b''\n\
         while True:\n    x=c.recv(65536)\n    if not x: break\n    d+=x\n\
         print(d.split(b' ')[1].decode() if d else 'closed',flush=True)\n",
        a.port()
    );
    let mut child = ns
        .cmd(&["python3", "-c", &client])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let old = set_nofile(open_fds() + 32);
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    hog.truncate(hog.len() - 2);
    to_child.write_all(b"go\n").unwrap();
    to_child.flush().unwrap();
    let mut line = String::new();
    from_child.read_line(&mut line).unwrap();
    drop(hog);
    set_nofile(old);
    assert_eq!(line.trim(), "503", "{}", web.stats());
    let _ = child.wait();
    assert_eq!(webtest::get(&ns, a, "/api/v1/stats").status, 200);
    assert_eq!(counter(&web, "restarts"), 0, "{}", web.stats());
    web.stop();
}
