//! Netlink sockets: netlink-sys for the socket itself, plus what it lacks
//! (SO_RCVBUFFORCE, a receive into one reusable buffer that reports
//! truncation, opening inside a named network namespace).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{Socket, SocketAddr};

/// `NETLINK_NETFILTER` protocol number.
pub const NETLINK_NETFILTER: isize = 12;
/// `NETLINK_ROUTE` protocol number.
pub const NETLINK_ROUTE: isize = 0;

/// Size of the reusable receive buffer: large enough for the biggest
/// datagram the kernel builds for dumps and event bursts.
pub const RECV_BUF_LEN: usize = 1 << 20;

/// Runs `f` with the calling thread inside the network namespace
/// `/var/run/netns/NAME`, then returns the thread to its own namespace.
/// Sockets created inside stay bound to that namespace.
pub fn in_netns<T>(name: &str, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name '{name}'"),
        ));
    }
    let target = File::open(format!("/var/run/netns/{name}")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open network namespace '{name}': {e}"),
        )
    })?;
    let own =
        File::open("/proc/thread-self/ns/net").or_else(|_| File::open("/proc/self/ns/net"))?;
    setns_net(&target)?;
    let result = f();
    // Going back can only fail if our own namespace fd is bad, which would
    // leave the thread in the wrong namespace: treat that as an error.
    setns_net(&own)?;
    result
}

fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: setns only reads the fd, which `ns` keeps open for the call;
    // CLONE_NEWNET restricts it to the network namespace of this thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A netlink socket with a reusable receive buffer.
#[derive(Debug)]
pub struct NlSocket {
    sock: Socket,
    portid: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    /// Opens a socket of `protocol`, bound to the multicast `groups`
    /// (legacy bitmask), in the current or the named network namespace.
    pub fn open(protocol: isize, groups: u32, netns: Option<&str>) -> io::Result<NlSocket> {
        let make = || {
            let mut sock = Socket::new(protocol)?;
            sock.bind(&SocketAddr::new(0, groups))?;
            let mut local = SocketAddr::new(0, 0);
            sock.get_address(&mut local)?;
            Ok((sock, local.port_number()))
        };
        let (sock, portid) = match netns {
            Some(name) => in_netns(name, make)?,
            None => make()?,
        };
        Ok(NlSocket {
            sock,
            portid,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// The port id the kernel assigned to this socket.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// The raw file descriptor (for poll).
    pub fn fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// Joins a multicast group by number (NETLINK_ADD_MEMBERSHIP).
    pub fn add_membership(&self, group: u32) -> io::Result<()> {
        self.sock.add_membership(group)
    }

    /// Sets the receive buffer, past `rmem_max` when we have CAP_NET_ADMIN
    /// (SO_RCVBUFFORCE), else as far as SO_RCVBUF allows. Returns the size
    /// the kernel reports (it doubles the request).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<usize> {
        let v: libc::c_int = bytes.min(i32::MAX as usize / 2) as libc::c_int;
        let fd = self.fd();
        let set = |opt| {
            // SAFETY: `v` is a live c_int and we pass its exact size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    &v as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
            return Err(io::Error::last_os_error());
        }
        self.recv_buffer()
    }

    /// The current receive buffer size.
    pub fn recv_buffer(&self) -> io::Result<usize> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live locals of the sizes getsockopt expects.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &mut v as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v.max(0) as usize)
    }

    /// Sets an int-valued SOL_NETLINK option (NETLINK_NO_ENOBUFS, ...).
    pub fn set_netlink_opt(&self, opt: libc::c_int, on: bool) -> io::Result<()> {
        let v: libc::c_int = on as libc::c_int;
        // SAFETY: `v` is a live c_int and we pass its exact size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_NETLINK,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one datagram (one or more netlink messages) to the kernel.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let kernel = SocketAddr::new(0, 0);
        let n = self.sock.send_to(bytes, &kernel, 0)?;
        if n != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink send",
            ));
        }
        Ok(())
    }

    /// Puts the socket in non-blocking mode (or back).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.sock.set_non_blocking(on)
    }

    /// Receives one datagram into the internal buffer and returns it.
    /// ENOBUFS (events lost) comes back as an error of that errno; a
    /// datagram larger than the buffer is an error, never silently cut.
    pub fn recv(&mut self) -> io::Result<&[u8]> {
        loop {
            // SAFETY: the pointer and length describe our own buffer, which
            // lives for the call; MSG_TRUNC makes the kernel report the real
            // size without writing past `len`.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink datagram of {n} bytes truncated"),
                ));
            }
            return Ok(&self.buf[..n]);
        }
    }
}
