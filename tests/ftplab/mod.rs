//! An FTP lab: the router lab of `tests/lab` (masquerade on the WAN) with
//! the kernel's `ftp` helper assigned by an nftables `ct helper` rule on
//! the router (and `tftp` for UDP port 69), a real FTP server in the
//! server namespace (Debian's python3-pyftpdlib, IPv4 and IPv6 on port
//! 21), and clients that make the kernel expect data connections:
//!
//! - [`FtpLab::hold`] keeps an FTP control session open after PASV/EPSV,
//!   PORT/EPRT (the server's connect back is dropped on the server, so
//!   the expectation stays), after a RETR whose data connection stays
//!   open (a RELATED flow with its master), or just logged in (a master
//!   with a helper and no expectation, for `-I expect`);
//! - [`FtpLab::transfer`] downloads a file with curl, passive or active.
//!
//! Everything runs inside the lab's namespaces and ends with them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::lab::{self, RouterLab, addr};
use crate::support::TempDir;

/// The Debian interpreter that has pyftpdlib (not a pyenv one on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// The port the held PORT/EPRT sessions announce; the server's connects
/// to it are dropped in the server namespace.
pub const HELD_PORT: u16 = 45000;

/// The FTP client of [`FtpLab::hold`]: connect, log in, do `mode`, print
/// `ready <control source port>` and wait for stdin to close.
const CLIENT: &str = r#"
import ftplib, sys
host, mode = sys.argv[1], sys.argv[2]
f = ftplib.FTP(timeout=10)
f.connect(host, 21)
f.login()
data = None
try:
    if mode == 'pasv':
        f.sendcmd('EPSV' if ':' in host else 'PASV')
    elif mode == 'port':
        if ':' in host:
            f.sendeprt(sys.argv[3], int(sys.argv[4]))
        else:
            f.sendport(sys.argv[3], int(sys.argv[4]))
    elif mode == 'retr':
        f.voidcmd('TYPE I')
        data = f.transfercmd('RETR big')
except ftplib.Error:
    pass
print('ready', f.sock.getsockname()[1], flush=True)
sys.stdin.read()
"#;

/// The FTP server: pyftpdlib, anonymous and read-only on port 21 of every
/// address (IPv4 and IPv6). Data connections to the router's address are
/// allowed: the router's FTP NAT helper rewrites an EPRT to its WAN
/// address, written out in full, which pyftpdlib's textual check would
/// take for a foreign address.
const SERVER: &str = r#"
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
auth = DummyAuthorizer()
auth.add_anonymous(sys.argv[1])
FTPHandler.authorizer = auth
FTPHandler.permit_foreign_addresses = True
FTPServer(('::', 21), FTPHandler).serve_forever()
"#;

/// How a held session leaves the control connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// PASV (EPSV on IPv6): the kernel expects client -> server.
    Passive,
    /// PORT (EPRT on IPv6) through the router's NAT: the kernel expects
    /// server -> router, mapped back to the client.
    Active,
    /// RETR of a large file with the data connection held open: a RELATED
    /// flow whose master is the control connection.
    Transfer,
    /// Logged in, nothing else: a master with the helper and no
    /// expectation.
    Idle,
}

/// A held FTP control session: closed (and its expectation left to the
/// kernel) when dropped.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The client's source port of the control connection (the master's
    /// `sport`).
    pub sport: u16,
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lab: a [`RouterLab`] with the FTP server running.
pub struct FtpLab {
    /// Client, router (the table under test) and server.
    pub lab: RouterLab,
    server: Child,
    _root: TempDir,
}

/// True when the FTP server can run here; without it, fails the test when
/// `CI=true`, else prints why and returns false so the caller can skip.
pub fn can_run() -> bool {
    if !lab::can_run() {
        return false;
    }
    let ok = Command::new(PYTHON)
        .args(["-c", "import pyftpdlib"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let why = "the FTP tests need Debian's python3-pyftpdlib (make deps installs it)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

impl FtpLab {
    /// Builds the lab, assigns the helpers and starts the FTP server.
    pub fn new(tag: &str) -> FtpLab {
        let lab = RouterLab::new(tag);
        // the helpers are built in or a module; either way the rule needs them
        let _ = lab::run(Command::new("modprobe").arg("nf_conntrack_ftp"));
        let _ = lab::run(Command::new("modprobe").arg("nf_conntrack_tftp"));
        lab.router.nft(
            "table inet helpers {\n\
             ct helper ftp-std { type \"ftp\" protocol tcp; l3proto inet; }\n\
             ct helper tftp-std { type \"tftp\" protocol udp; l3proto inet; }\n\
             chain pre { type filter hook prerouting priority 0;\n\
               tcp dport 21 ct helper set \"ftp-std\";\n\
               udp dport 69 ct helper set \"tftp-std\"; }\n\
             }\n",
        );
        // the server's active-mode connects to the held port never leave it
        // (refused at once, so the PORT command is answered)
        lab.server.nft(&format!(
            "table inet hold {{\n chain out {{ type filter hook output priority 0; tcp dport {HELD_PORT} reject with tcp reset; }}\n}}\n"
        ));
        let root = TempDir::new(&format!("ftp-{tag}"));
        std::fs::write(root.join("f.txt"), "hello\n").expect("ftp file");
        let big = std::fs::File::create(root.join("big")).expect("big file");
        big.set_len(256 << 20).expect("sparse file");
        let server = lab
            .server
            .cmd(&[PYTHON, "-c", SERVER, root.to_str().expect("path")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pyftpdlib");
        let up = lab::wait_until(Duration::from_secs(10), || {
            !lab.server
                .run(&["ss", "-Htln", "sport = :21"])
                .stdout
                .is_empty()
        });
        assert!(up, "the FTP server did not start");
        FtpLab {
            lab,
            server,
            _root: root,
        }
    }

    /// Opens a control session to `server` (an address) and leaves it as
    /// `how` says; returns when the kernel has what it makes.
    pub fn hold(&self, server: &str, how: Hold) -> Session {
        let mode = match how {
            Hold::Passive => "pasv",
            Hold::Active => "port",
            Hold::Transfer => "retr",
            Hold::Idle => "idle",
        };
        let me = if server.contains(':') {
            addr::CLIENT6
        } else {
            addr::CLIENT
        };
        let port = HELD_PORT.to_string();
        let mut child = self
            .lab
            .client
            .cmd(&[PYTHON, "-c", CLIENT, server, mode, me, &port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ftp client");
        let stdin = child.stdin.take();
        let mut line = String::new();
        let out = child.stdout.take().expect("client stdout");
        BufReader::new(out)
            .read_line(&mut line)
            .expect("client line");
        let sport = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("ftp client to {server} ({mode}) said {line:?}"));
        Session {
            child,
            stdin,
            sport,
        }
    }

    /// Downloads `f.txt` from `server` with curl (passive, or active with
    /// `-P -`) and returns what arrived.
    pub fn transfer(&self, server: &str, active: bool) -> String {
        let host = if server.contains(':') {
            format!("[{server}]")
        } else {
            server.to_string()
        };
        let url = format!("ftp://{host}/f.txt");
        let mut argv = vec!["curl", "-s", "--max-time", "10"];
        if active {
            argv.extend(["-P", "-"]);
        }
        argv.push(&url);
        lab::stdout(&self.lab.client.run(&argv))
    }

    /// One UDP datagram from the client to the server's TFTP port that is
    /// not a TFTP request: a master with the `tftp` helper and no
    /// expectation. Returns the client's source port.
    pub fn tftp_master(&self, sport: u16) -> u16 {
        let mut c = self
            .lab
            .client
            .cmd(&[
                "nc",
                "-u",
                "-w",
                "1",
                "-q",
                "0",
                "-p",
                &sport.to_string(),
                addr::SERVER,
                "69",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nc");
        if let Some(mut i) = c.stdin.take() {
            let _ = i.write_all(b"xx\n");
        }
        let _ = c.wait();
        sport
    }
}

impl Drop for FtpLab {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
