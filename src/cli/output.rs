//! Writing flows to stdout in the format `-o` picked, through one large
//! buffer (no allocation and no syscall per flow): the formats write into
//! it through [`Out`], and it is written out once it holds
//! [`FLUSH_AT`] bytes.

use std::io::{self, Write};

use super::args::Output;
use crate::flow::buf::Out;
use crate::flow::json::{self, JsonOptions};
use crate::flow::labels::LabelMap;
use crate::flow::text::{self, TextOptions};
use crate::flow::xml::{self, XmlOptions};
use crate::flow::{EventKind, Flow, save};

/// Where a flow line comes from: conntrack formats them slightly
/// differently per command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// `-L`, `-G`: XML header, kernel timestamps, labels.
    Dump,
    /// `-D`: no XML header, no kernel timestamps, no labels.
    Delete,
    /// `-U`: no XML header, no kernel timestamps.
    Update,
    /// `-E`: XML header, wall-clock timestamps.
    Event,
}

/// The `[USERSPACE] portid=N progname=P` suffix of an event a program
/// caused (`-E`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Userspace<'a> {
    /// The netlink port id of the program's socket.
    pub portid: u32,
    /// The program's name, when found.
    pub progname: Option<&'a str>,
}

/// Buffered flow printer.
pub struct Printer<'a> {
    /// The buffer: `out[..len]` is waiting to be written, the rest is
    /// scratch the formats write into (kept, so it is never cleared again).
    out: Vec<u8>,
    len: usize,
    output: Output,
    labels: Option<&'a LabelMap>,
    xml_open: bool,
    now: i64,
    /// Flush after every line (events are shown as they come).
    pub line_buffered: bool,
}

/// Writes `v` with at least `digits` digits (C's `%.Nld`).
fn zero_padded(w: &mut Out, v: i64, digits: usize) {
    if v < 0 {
        w.byte(b'-');
    }
    let mut d = 1;
    let mut rest = v.unsigned_abs() / 10;
    while rest > 0 {
        d += 1;
        rest /= 10;
    }
    for _ in d..digits {
        w.byte(b'0');
    }
    w.u64(v.unsigned_abs());
}

/// Bytes collected before they are written out.
pub const FLUSH_AT: usize = 256 * 1024;

impl<'a> Printer<'a> {
    /// A printer for the `-o` settings.
    pub fn new(output: Output, labels: Option<&'a LabelMap>) -> Printer<'a> {
        Printer {
            out: vec![0; FLUSH_AT + 4096],
            len: 0,
            output,
            // conntrack prints labels whenever it loaded the label map:
            // for `-o labels`, and also for `-l`/`--label-add`/`--label-del`
            labels,
            xml_open: false,
            now: crate::flow::now_secs(),
            line_buffered: false,
        }
    }

    /// Writes one flow line.
    pub fn flow(
        &mut self,
        f: &Flow,
        ctx: Context,
        event: Option<EventKind>,
        userspace: Option<Userspace>,
    ) -> io::Result<()> {
        let o = self.output;
        let mut w = Out::resume(&mut self.out, self.len);
        if o.save {
            let ev = match ctx {
                Context::Delete => Some(EventKind::Destroy),
                _ => event,
            };
            save::write_line_to(&mut w, f, ev);
        } else if o.json {
            json::write_flow_to(
                &mut w,
                f,
                &JsonOptions {
                    event,
                    labels: self.labels,
                    now: self.now,
                    hide_timeout: false,
                },
            );
        } else if o.xml {
            if !self.xml_open && matches!(ctx, Context::Dump | Context::Event) {
                w.bytes(xml::HEADER.as_bytes());
                self.xml_open = true;
            }
            xml::write_flow_to(
                &mut w,
                f,
                &XmlOptions {
                    event,
                    when: ctx == Context::Event && o.timestamp,
                    ktimestamp: o.ktimestamp && matches!(ctx, Context::Dump | Context::Event),
                    labels: if ctx == Context::Delete {
                        None
                    } else {
                        self.labels
                    },
                    now: self.now,
                },
            );
        } else {
            text::write_line_to(
                &mut w,
                f,
                &TextOptions {
                    extended: o.extended,
                    id: o.id,
                    ktimestamp: o.ktimestamp && matches!(ctx, Context::Dump | Context::Event),
                    labels: if ctx == Context::Delete {
                        None
                    } else {
                        self.labels
                    },
                    event,
                    show_timeout: true,
                    now: self.now,
                },
            );
        }
        if let Some(u) = userspace {
            w.lit(b" [USERSPACE] portid=");
            w.u32(u.portid);
            if let Some(p) = u.progname {
                w.lit(b" progname=");
                w.bytes(p.as_bytes());
            }
        }
        w.byte(b'\n');
        self.len = w.pos();
        if self.line_buffered || self.len >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Sets the time `delta-time` and `age` are counted to (events: once
    /// per batch of events read together).
    pub fn set_now(&mut self, now: i64) {
        self.now = now;
    }

    /// Appends the `-o timestamp` prefix of an event line:
    /// `[SECONDS.MICROS]` and a tab, as conntrack's `%-.8ld.%-.6ld`.
    pub fn event_time(&mut self, secs: i64, micros: i64) {
        let mut w = Out::resume(&mut self.out, self.len);
        w.byte(b'[');
        zero_padded(&mut w, secs, 8);
        w.byte(b'.');
        zero_padded(&mut w, micros, 6);
        w.lit(b"]\t");
        self.len = w.pos();
    }

    /// Appends raw bytes (event timestamp prefixes).
    pub fn raw(&mut self, b: &[u8]) {
        let mut w = Out::resume(&mut self.out, self.len);
        w.bytes(b);
        self.len = w.pos();
    }

    /// Closes the XML document if one was opened.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.xml_open {
            self.raw(xml::FOOTER.as_bytes());
            self.xml_open = false;
        }
        self.flush()
    }

    /// Writes out what is buffered without closing the XML document
    /// (conntrack's `-G -o xml` prints the header but no footer).
    pub fn finish_unclosed(&mut self) -> io::Result<()> {
        self.xml_open = false;
        self.flush()
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.len > 0 {
            let mut so = io::stdout().lock();
            so.write_all(&self.out[..self.len])?;
            so.flush()?;
            self.len = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_padded_as_c_precision() {
        let mut v = Vec::new();
        let mut w = Out::append(&mut v);
        zero_padded(&mut w, 42, 6);
        w.byte(b' ');
        zero_padded(&mut w, 1_795_571_902, 8);
        w.byte(b' ');
        zero_padded(&mut w, 0, 6);
        w.finish();
        assert_eq!(v, b"000042 1795571902 000000");
    }
}
