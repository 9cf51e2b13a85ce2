//! tiny_http 0.12 ends its accept loop on the first accept() error; the
//! web server must notice and serve again. Here the process runs out of
//! file descriptors (EMFILE) while a client in another process holds
//! connections; once they close, requests are answered again and the
//! restart is counted. Alone in its binary: it lowers this process's fd
//! limit.
#![cfg(feature = "web")]

mod lab;
mod webtest;

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

#[test]
fn server_comes_back_after_its_accept_loop_dies() {
    if !lab::can_run() {
        return;
    }
    let ns = lab::Netns::new("wrst");
    let web = webtest::start(&ns.name, webtest::config(), Hub::default());
    let a = web.local_addr();
    assert_eq!(webtest::get(&ns.name, a, "/api/v1/stats").status, 200);
    std::thread::sleep(Duration::from_millis(300));
    // leave room for a handful of accepted sockets only
    let old = set_nofile(open_fds() + 6);
    // another process opens 40 connections and holds them
    let script = format!(
        "import socket,time\ns=[]\nfor i in range(40):\n    s.append(socket.create_connection(('127.0.0.1',{})))\nprint('held',flush=True)\ntime.sleep(4)\n",
        a.port()
    );
    let mut holder = ns.spawn(&["python3", "-c", &script]);
    let restarted = lab::wait_until(Duration::from_secs(10), || {
        web.stats()["restarts"].as_u64().unwrap_or(0) >= 1
    });
    assert!(restarted, "the accept loop never ended: {}", web.stats());
    let _ = holder.wait();
    set_nofile(old);
    // the holder is gone, fds come back: requests are served again
    let back = lab::wait_until(Duration::from_secs(20), || {
        let r = std::panic::catch_unwind(|| webtest::get(&ns.name, a, "/api/v1/stats"));
        matches!(r, Ok(r) if r.status == 200)
    });
    assert!(back, "server did not come back: {}", web.stats());
    web.stop();
}
