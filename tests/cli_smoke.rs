//! A first differential check: `ctrack -L` equals `conntrack -L` on a lab
//! router with TCP, UDP, ICMP and IPv6 flows through NAT.

mod lab;

use lab::{RouterLab, addr, stderr, stdout};

#[test]
fn list_equals_conntrack_on_a_live_router() {
    if !lab::can_run() {
        return;
    }
    let lab = RouterLab::new("smoke");
    lab.ping(addr::SERVER);
    lab.ping(addr::SERVER6);
    lab.tcp(addr::SERVER, 8080);
    lab.udp(addr::SERVER, 5353);
    // a second may tick between the two runs (timeouts, delta-time):
    // compare again a moment later before calling it a difference
    let (mut ours, mut theirs) = (lab.router.ctrack(&["-L"]), lab.router.conntrack(&["-L"]));
    for _ in 0..3 {
        if stdout(&ours) == stdout(&theirs) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        ours = lab.router.ctrack(&["-L"]);
        theirs = lab.router.conntrack(&["-L"]);
    }
    assert_eq!(stdout(&ours), stdout(&theirs));
    assert_eq!(stderr(&ours), stderr(&theirs));
    assert_eq!(ours.status.code(), theirs.status.code());
    assert!(stdout(&ours).lines().count() >= 4, "{}", stdout(&ours));
}
