//! The ctnetlink client: requests, dumps, batched modifications, counts
//! and statistics over one netlink socket.

use std::io;

use super::attr::{Attrs, WireError};
use super::ct::{self, CtRequest, cta, msg};
use super::message::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    NlMsg, NlMsgs,
};
use super::socket::{NETLINK_NETFILTER, NlSocket};
use crate::flow::{Flow, ProtoInfo, Tuple};

/// What went wrong talking to the kernel.
#[derive(Debug)]
pub enum Error {
    /// A socket call failed.
    Io(io::Error),
    /// The kernel refused the request with this errno.
    Kernel(i32),
    /// The kernel's reply could not be decoded.
    Wire(WireError),
}

impl Error {
    /// The errno behind the error, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            Error::Kernel(e) => Some(*e),
            Error::Wire(_) => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => match e.raw_os_error() {
                Some(n) => f.write_str(errno_text(n)),
                None => write!(f, "{e}"),
            },
            Error::Kernel(n) => f.write_str(errno_text(*n)),
            Error::Wire(w) => write!(f, "{w}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Wire(e)
    }
}

/// The C library's text for an errno, as conntrack prints it (glibc's
/// wording for the errors ctnetlink returns).
pub fn errno_text(e: i32) -> &'static str {
    match e {
        libc::EPERM => "Operation not permitted",
        libc::ENOENT => "No such file or directory",
        libc::EINTR => "Interrupted system call",
        libc::EIO => "Input/output error",
        libc::ENOMEM => "Cannot allocate memory",
        libc::EACCES => "Permission denied",
        libc::EBUSY => "Device or resource busy",
        libc::EEXIST => "File exists",
        libc::EINVAL => "Invalid argument",
        libc::ENOSPC => "No space left on device",
        libc::ERANGE => "Numerical result out of range",
        libc::ENOBUFS => "No buffer space available",
        libc::EOPNOTSUPP => "Operation not supported",
        libc::EAFNOSUPPORT => "Address family not supported by protocol",
        libc::EPROTONOSUPPORT => "Protocol not supported",
        libc::ETIME => "Timer expired",
        libc::EAGAIN => "Resource temporarily unavailable",
        libc::EALREADY => "Operation already in progress",
        libc::ECONNREFUSED => "Connection refused",
        libc::EBADF => "Bad file descriptor",
        524 => "Unknown error 524",
        _ => "Unknown error",
    }
}

/// Counts of a dump: entries delivered and entries skipped as malformed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Entries decoded and passed on.
    pub entries: u64,
    /// Entries whose attributes could not be decoded.
    pub malformed: u64,
}

/// Statistics of one CPU: its number and (attribute type, value) pairs.
pub type CpuStats = (u16, Vec<(u16, u32)>);

/// Outcome of one request of a batch.
pub type BatchResult = Result<(), i32>;

/// A ctnetlink client socket.
#[derive(Debug)]
pub struct Conntrack {
    sock: NlSocket,
    seq: u32,
    out: Vec<u8>,
    /// Whether [`Conntrack::batch`] has raised the receive buffer.
    batch_buffer_set: bool,
}

/// Bytes of requests per datagram in [`Conntrack::batch`].
const BATCH_CHUNK_BYTES: usize = 32 * 1024;

/// Receive buffer for [`Conntrack::batch`]: the error replies to a whole
/// datagram of failing requests fit.
const BATCH_RECV_BUFFER: usize = 4 << 20;

impl Conntrack {
    /// Opens ctnetlink in this or the named network namespace.
    pub fn open(netns: Option<&str>) -> Result<Conntrack, Error> {
        let sock = NlSocket::open(NETLINK_NETFILTER, 0, netns)?;
        // errors come back without the original request (smaller acks)
        let _ = sock.set_netlink_opt(libc::NETLINK_CAP_ACK, true);
        let seq = crate::flow::now_secs() as u32;
        Ok(Conntrack {
            sock,
            seq,
            out: Vec::with_capacity(4096),
            batch_buffer_set: false,
        })
    }

    /// Our netlink port id: events this socket causes carry it.
    pub fn portid(&self) -> u32 {
        self.sock.portid()
    }

    /// The underlying socket.
    pub fn socket(&self) -> &NlSocket {
        &self.sock
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a request and calls `on_msg` for every data message of the
    /// reply until the reply ends: NLMSG_DONE for dumps, the ack or error
    /// for requests with NLM_F_ACK, else after one datagram.
    pub fn talk(
        &mut self,
        req: &CtRequest,
        flags: u16,
        on_msg: &mut dyn FnMut(&NlMsg) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let seq = self.next_seq();
        self.out.clear();
        req.serialize_into(&mut self.out, NLM_F_REQUEST | flags, seq);
        self.sock.send(&self.out)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let ack = flags & NLM_F_ACK != 0;
        let portid = self.sock.portid();
        let mut result = Ok(());
        loop {
            let data = self.sock.recv()?;
            let mut finished = !dump && !ack;
            for m in NlMsgs::new(data) {
                let m = m?;
                if m.seq != seq || (m.pid != 0 && m.pid != portid) {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => finished = true,
                    NLMSG_ERROR => {
                        let code = m.error_code()?;
                        if code != 0 && result.is_ok() {
                            result = Err(Error::Kernel(code));
                        }
                        finished = true;
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => {
                        if result.is_ok()
                            && let Err(e) = on_msg(&m)
                        {
                            result = Err(e);
                        }
                    }
                }
            }
            if finished {
                return result;
            }
        }
    }

    /// Dumps the table (or what `req` filters) and calls `each` with every
    /// entry; the flow is reused between calls, so nothing is allocated per
    /// entry. Entries that fail to decode are counted, not fatal.
    pub fn dump(
        &mut self,
        req: &CtRequest,
        each: &mut dyn FnMut(&Flow) -> Result<(), Error>,
    ) -> Result<DumpStats, Error> {
        let mut stats = DumpStats::default();
        let mut flow = Flow::default();
        self.talk(req, NLM_F_DUMP, &mut |m| {
            let Ok((family, _, attrs)) = ct::split_nfgenmsg(m.payload) else {
                stats.malformed += 1;
                return Ok(());
            };
            reset(&mut flow);
            match ct::decode_flow_into(family, attrs, &mut flow) {
                Ok(()) => {
                    stats.entries += 1;
                    each(&flow)
                }
                Err(_) => {
                    stats.malformed += 1;
                    Ok(())
                }
            }
        })?;
        Ok(stats)
    }

    /// Sends a request that expects only an acknowledgement.
    pub fn request(&mut self, req: &CtRequest, flags: u16) -> Result<(), Error> {
        self.talk(req, flags | NLM_F_ACK, &mut |_| Ok(()))
    }

    /// Gets one entry by tuple (`req` is a GET with the tuple attributes).
    pub fn get(&mut self, req: &CtRequest) -> Result<Option<Flow>, Error> {
        let mut found = None;
        self.talk(req, NLM_F_ACK, &mut |m| {
            found = Some(ct::decode_flow(m.payload)?);
            Ok(())
        })?;
        Ok(found)
    }

    /// Sends many requests with as few syscalls as possible (many messages
    /// per datagram) and returns each one's outcome, in order. Only the
    /// last request of a datagram asks for an ack: the kernel answers the
    /// failures and that one, in order, so its answer ends the datagram.
    pub fn batch(&mut self, reqs: &[CtRequest], flags: u16) -> Result<Vec<BatchResult>, Error> {
        if !self.batch_buffer_set {
            // a datagram whose requests all fail answers with one error
            // per request: room for all of them
            let _ = self.sock.set_recv_buffer(BATCH_RECV_BUFFER);
            self.batch_buffer_set = true;
        }
        let mut results = vec![Ok(()); reqs.len()];
        let portid = self.sock.portid();
        let mut start = 0;
        while start < reqs.len() {
            self.out.clear();
            let first_seq = self.seq.wrapping_add(1);
            let mut end = start;
            let mut last_at = 0;
            while end < reqs.len() && (end == start || self.out.len() < BATCH_CHUNK_BYTES) {
                let seq = self.next_seq();
                last_at = self.out.len();
                reqs[end].serialize_into(&mut self.out, NLM_F_REQUEST | flags, seq);
                end += 1;
            }
            // nlmsg_flags: bytes 6..8 of the header, host order
            if let Some(b) = self.out.get_mut(last_at + 6..last_at + 8) {
                let f = u16::from_ne_bytes([b[0], b[1]]) | NLM_F_ACK;
                b.copy_from_slice(&f.to_ne_bytes());
            }
            let last_seq = self.seq;
            self.sock.send(&self.out)?;
            'datagram: loop {
                let data = self.sock.recv()?;
                for m in NlMsgs::new(data) {
                    let m = m?;
                    if m.ty != NLMSG_ERROR || (m.pid != 0 && m.pid != portid) {
                        continue;
                    }
                    let idx = m.seq.wrapping_sub(first_seq) as usize;
                    if idx >= end - start {
                        continue;
                    }
                    let code = m.error_code()?;
                    if code != 0 {
                        results[start + idx] = Err(code);
                    }
                    if m.seq == last_seq {
                        break 'datagram;
                    }
                }
            }
            start = end;
        }
        Ok(results)
    }

    /// The number of entries in the table (CTA_STATS_GLOBAL_ENTRIES) and
    /// the table's maximum, when the kernel reports it.
    pub fn count(&mut self) -> Result<(u32, Option<u32>), Error> {
        let req = CtRequest::new(msg::GET_STATS, 0);
        let (mut entries, mut max) = (None, None);
        self.talk(&req, 0, &mut |m| {
            let (_, _, attrs) = ct::split_nfgenmsg(m.payload)?;
            for a in Attrs::new(attrs) {
                let a = a?;
                match a.kind {
                    cta::STATS_GLOBAL_ENTRIES => entries = Some(a.be32()?),
                    cta::STATS_GLOBAL_MAX_ENTRIES => max = Some(a.be32()?),
                    _ => {}
                }
            }
            Ok(())
        })?;
        match entries {
            Some(n) => Ok((n, max)),
            None => Err(Error::Wire(WireError("stats reply without entry count"))),
        }
    }

    /// Per-CPU statistics: for each CPU its number and the (attribute
    /// type, value) pairs in the order the kernel sent them.
    pub fn stats_cpu(&mut self) -> Result<Vec<CpuStats>, Error> {
        self.stats_cpu_of(&CtRequest::new(msg::GET_STATS_CPU, 0))
    }

    /// Per-CPU statistics of the table `req` asks for (conntrack or
    /// expectations): one (CPU, attribute pairs) per CPU.
    pub fn stats_cpu_of(&mut self, req: &CtRequest) -> Result<Vec<CpuStats>, Error> {
        let mut cpus = Vec::new();
        self.talk(req, NLM_F_DUMP, &mut |m| {
            let (_, cpu, attrs) = ct::split_nfgenmsg(m.payload)?;
            let mut vals = Vec::new();
            for a in Attrs::new(attrs) {
                let a = a?;
                vals.push((a.kind, a.be32()?));
            }
            cpus.push((cpu, vals));
            Ok(())
        })?;
        Ok(cpus)
    }
}

/// Clears a flow for reuse, field by field: `*f = Flow::default()` builds
/// the default apart and copies all of it (a `memcpy` call per entry at
/// opt-level "z"); here each field gets its empty value in place. The
/// tuples are overwritten by the decoder only where the kernel sent them,
/// so they are cleared too.
pub fn reset(f: &mut Flow) {
    let Flow {
        family,
        orig,
        reply,
        has_orig,
        has_reply,
        orig_zone,
        reply_zone,
        master,
        status,
        timeout,
        mark,
        secmark,
        secctx,
        use_count,
        id,
        zone,
        protoinfo,
        counters,
        timestamp_start,
        timestamp_stop,
        timestamp_event,
        helper,
        labels,
        seq_adj,
        synproxy,
    } = f;
    *family = 0;
    *orig = Tuple::default();
    *reply = Tuple::default();
    *has_orig = false;
    *has_reply = false;
    *orig_zone = None;
    *reply_zone = None;
    *master = None;
    *status = None;
    *timeout = None;
    *mark = None;
    *secmark = None;
    *secctx = None;
    *use_count = None;
    *id = None;
    *zone = None;
    *protoinfo = ProtoInfo::None;
    *counters = [None; 2];
    *timestamp_start = None;
    *timestamp_stop = None;
    *timestamp_event = None;
    *helper = None;
    *labels = None;
    *seq_adj = [None; 2];
    *synproxy = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;

    #[test]
    fn reset_empties_every_field() {
        let mut f = tcp4();
        f.secctx = Some("ctx".into());
        f.helper = Some(crate::flow::HelperName::from_bytes(b"ftp"));
        f.master = Some(f.orig);
        f.counters = [Some(crate::flow::Counters::default()); 2];
        f.timestamp_event = Some(1);
        reset(&mut f);
        assert_eq!(f, Flow::default());
    }
}
